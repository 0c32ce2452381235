# about: calibrates the workload's gap clock: xl pause; sleep 2; xl unpause must show ~2000 ms
start_guest pvh gapcal "$DOMU_MEM" || fail "guest gapcal did not start"
wait_ticks gapcal 2 60 || fail "workload in gapcal stopped ticking"
m=$(mark gapcal)
timed PAUSE_S sh -c 'xl pause gapcal && sleep 2 && xl unpause gapcal' || fail "xl pause/unpause failed"
wait_ticks gapcal 3 60 "$m" || fail "workload not running after unpause"
check_bad gapcal "$m" || fail "workload saw corrupted pages after a pause"
gap=$(guest_gap gapcal "$m")
mgap=$(guest_mgap gapcal "$m")
# CLOCK_BOOTTIME must see the pause (2 s, plus xl's own time, minus nothing).
[ "$gap" -ge 1900 ] && [ "$gap" -le 6000 ] ||
  fail "CLOCK_BOOTTIME gap ${gap} ms does not match the 2 s pause (mono ${mgap} ms)"
pass "pause_s=$PAUSE_S boottime_gap_ms=$gap monotonic_gap_ms=$mgap"
