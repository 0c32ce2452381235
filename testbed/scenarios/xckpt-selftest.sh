# about: `xckpt selftest` (the hypervisor trait suite: pause, map, log-dirty, pre-copy) on a running guest of every type this variant gives log-dirty to (shadow: PV; other variants: PVH and HVM); each of the four checks reports ok, the guest is left running and its workload sees bad=0 over a full sweep
. /testbed/xckpt.sh
case $TB_VARIANT in
  shadow) TYPES=${SELFTEST_TYPES:-pv} ;;
  *) TYPES=${SELFTEST_TYPES:-pvh hvm} ;;
esac
figs="variant=$TB_VARIANT"
for t in $TYPES; do
  g=st$t
  [ "$t" = hvm ] && BOOT_TIMEOUT=300
  start_guest "$t" "$g" "$DOMU_MEM" || fail "guest $g did not start"
  wait_ticks "$g" 3 60 || fail "workload of $g not ticking"
  m=$(mark "$g")
  out ST_S xckpt selftest "$g" || fail "xckpt selftest on a $t guest failed: $OUT_LAST"
  # All four checks ran and said ok (the suite stops at the first failure).
  for c in pause map logdirty precopy; do
    grep -q "^$c: ok$" "$TBW/.out" || fail "xckpt selftest on a $t guest did not report '$c: ok'"
  done
  npass=$(grep -c '^  pass: ' "$TBW/.out"); nums npass
  check_running "$g" || fail "xckpt selftest left the $t guest stopped"
  # The suite only reads the guest: a full sweep after it, with bad=0.
  s0=$(tick_field "$g" "$m" sweeps); [ -n "$s0" ] || { wait_ticks "$g" 1 60 "$m"; s0=$(tick_field "$g" "$m" sweeps); }
  nums s0
  i=0
  until [ "$(tick_field "$g" "$m" sweeps)" -ge $((s0 + 2)) ] 2>/dev/null; do
    [ $i -ge 240 ] && fail "workload of $g made no full sweep within 120 s after selftest"
    sleep 0.5; i=$((i + 1))
  done
  check_bad "$g" "$m" || fail "workload of $g saw bad pages after xckpt selftest"
  figs="$figs ${t}_selftest_s=$ST_S ${t}_checks_passed=$npass ${t}_guest_gap_ms=$(guest_gap "$g" "$m")"
  destroy_guest "$g"
done
pass "$figs bad=0"
