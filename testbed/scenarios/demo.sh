# about: the main job: xckpt base + 3 incremental checkpoints of a PVH guest, restore latest and @1, beside the xl baseline
. /testbed/xl-baseline.sh
STORE=/var/lib/xckpt
G=demo
ROWS=$TBW/demo-rows

# row METHOD STEP SECONDS GUEST_GAP_MS BYTES RESULT: one line of the final table.
row() { printf '%-6s %-24s %9s %12s %12s  %s\n' "$@" >> "$ROWS"; }
store_bytes() { du -sb "$STORE" 2>/dev/null | cut -f1; }

# xl baseline on the same guest type (the guest stays running, restored from the -c image).
xl_baseline pvh "$G"
row xl "save" "$SAVE_S" "-" "$FILE_BYTES" "bad=0 after restore"
row xl "restore" "$RESTORE_S" "$RESTORE_GAP_MS" "-" "bad=0"
row xl "save -c (checkpoint)" "$SAVEC_S" "$SAVEC_GAP_MS" "$FILE_BYTES" "bad=0"
row xl "restore of -c image" "$RESTOREC_S" "-" "-" "bad=0"
wait_ticks "$G" 2 60 || fail "workload stopped before the xckpt steps"

# xckpt_checkpoint N: one checkpoint (N=0 base, then incremental), as its own process.
xckpt_checkpoint() {
  local m before lo; m=$(mark "$G"); before=$(store_bytes); lo=$(last_gen "$G")
  out CK_S xckpt checkpoint --store "$STORE" "$G" || return 1
  # A binary without the Xen back-end may exit 0 without writing anything: not a checkpoint.
  [ "$(store_bytes)" != "$before" ] || { OUT_LAST="exited 0 but wrote nothing to $STORE (output: ${OUT_LAST:-none})"; return 1; }
  wait_ticks "$G" 2 60 "$m" || fail "workload stopped after xckpt checkpoint $1"
  check_bad "$G" "$m" || fail "workload saw corrupted pages after xckpt checkpoint $1"
  eval "WIN_$1=\"$lo $(last_gen "$G")\""
  row xckpt "checkpoint $1$( [ "$1" = 0 ] && echo ' (base)' || echo ' (incr)')" "$CK_S" \
    "$(guest_gap "$G" "$m")" "$(( $(store_bytes) - before ))" "bad=0"
}

# xckpt_restore SPEC LO HI: destroy the guest, restore SPEC, verify_resumed (a full sweep with
# bad=0, resumed between generations LO and HI); sets GEN_AFTER.
xckpt_restore() {
  local m; destroy_guest "$G"; m=$(mark "$G")
  out RS_S xckpt restore --store "$STORE" "$1" || fail "xckpt restore $1 failed: $OUT_LAST"
  verify_resumed "$G" "$m" "$2" "$3" "xckpt restore $1"
  GEN_AFTER=$RESUME_GEN
  row xckpt "restore $1" "$RS_S" "-" "-" "full sweep bad=0, gen=$GEN_AFTER in $2..$3"
}

# The table, each line prefixed "TB-TABLE" so the host shows it while the run goes on.
print_table() {
  echo "TB-TABLE demo: xckpt beside the xl baseline (PVH guest, ${DOMU_MEM} MiB," \
       "workload ${WL_MIB} MiB at ${WL_RATE} pages/s)"
  printf 'TB-TABLE %-6s %-24s %9s %12s %12s  %s\n' method step seconds guest_gap_ms bytes check
  sed 's/^/TB-TABLE /' "$ROWS"
}

XCKPT=ok
if ! xckpt_checkpoint 0; then
  XCKPT="xckpt Xen steps not available yet: $OUT_LAST"
  echo "TB-TABLE $XCKPT"
  print_table
  [ "${DEMO_REQUIRE_XCKPT:-0}" = 1 ] && fail "$XCKPT"
  pass "xckpt=unavailable $(xl_baseline_figures)"
  exit 0
fi
for n in 1 2 3; do
  sleep 3
  xckpt_checkpoint "$n" || fail "xckpt checkpoint $n (incremental) failed: $OUT_LAST"
done
GEN_CK3=$(last_gen "$G")
# shellcheck disable=SC2086
xckpt_restore "$G" $WIN_3
GEN_LATEST=$GEN_AFTER
# shellcheck disable=SC2086
xckpt_restore "$G@1" $WIN_0
GEN_OLD=$GEN_AFTER
[ "$GEN_OLD" -lt "$GEN_LATEST" ] ||
  fail "restore of $G@1 resumed at gen $GEN_OLD, not older than the latest layer's $GEN_LATEST"
print_table
pass "xckpt=ok store_bytes=$(store_bytes) gen_latest=$GEN_LATEST gen_at1=$GEN_OLD gen_before_destroy=$GEN_CK3 $(xl_baseline_figures)"
