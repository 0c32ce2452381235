# about: xl save / restore / save -c / restore of the checkpoint, pvh guest (the baseline)
. /testbed/xl-baseline.sh
xl_baseline pvh basepvh
pass "$(xl_baseline_figures)"
