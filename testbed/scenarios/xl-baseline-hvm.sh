# about: xl save / restore / save -c / restore of the checkpoint, hvm guest (the baseline)
. /testbed/xl-baseline.sh
xl_baseline hvm basehvm
pass "$(xl_baseline_figures)"
