# about: live xl migrate to localhost (pv guest; uses log-dirty, needs the shadow variant for pv)
[ "$TB_VARIANT" = shadow ] ||
  fail "needs the shadow variant (Debian's Xen has no PV log-dirty): testbed/run test -v shadow xl-migrate-pv"
start_guest pv migpv "$DOMU_MEM" || fail "guest migpv did not start"
wait_ticks migpv 3 60 || fail "workload in migpv stopped ticking"
printf '#!/bin/sh\nshift\nexec "$@"\n' > "$TBW/fakessh" && chmod +x "$TBW/fakessh"
m=$(mark migpv)
timed MIGRATE_S xl migrate -s "$TBW/fakessh" migpv localhost || fail "xl migrate of migpv failed (variant $TB_VARIANT)"
wait_ticks migpv 3 60 "$m" || fail "workload not running after migrate"
check_bad migpv "$m" || fail "workload saw corrupted pages after migrate"
pass "migrate_s=$MIGRATE_S guest_gap_ms=$(guest_gap migpv "$m") variant=$TB_VARIANT"
