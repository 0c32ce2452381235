# about: live xl migrate to localhost (pvh guest; uses log-dirty through HAP)
start_guest pvh migpvh "$DOMU_MEM" || fail "guest migpvh did not start"
wait_ticks migpvh 3 60 || fail "workload in migpvh stopped ticking"
printf '#!/bin/sh\nshift\nexec "$@"\n' > "$TBW/fakessh" && chmod +x "$TBW/fakessh"
m=$(mark migpvh)
timed MIGRATE_S xl migrate -s "$TBW/fakessh" migpvh localhost || fail "xl migrate of migpvh failed (variant $TB_VARIANT)"
wait_ticks migpvh 3 60 "$m" || fail "workload not running after migrate"
check_bad migpvh "$m" || fail "workload saw corrupted pages after migrate"
pass "migrate_s=$MIGRATE_S guest_gap_ms=$(guest_gap migpvh "$m") variant=$TB_VARIANT"
