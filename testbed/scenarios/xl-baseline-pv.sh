# about: xl save / restore / save -c / restore of the checkpoint, pv guest (the baseline)
. /testbed/xl-baseline.sh
xl_baseline pv basepv
pass "$(xl_baseline_figures)"
