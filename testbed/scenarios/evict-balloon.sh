# about: --evict zero,unpopulated,balloon: the guest balloons down to its used memory plus a margin for the capture and gets memory/target back after it; the base is smaller by what it gave up and restores bad=0
. /testbed/xckpt.sh
. /testbed/evict.sh
G=ebal
WL_MIB=${EBAL_WL_MIB:-100}
# 128 MiB written and freed: without the balloon, zero pages alone would not skip it.
evict_guest "$G" 512 XCKPT_AGENT=1 WL_DIRTY_FREE_MIB=128
TARGET="/local/domain/$(xl domid "$G")/memory/target"
T0=$(xenstore-read "$TARGET") || fail "cannot read $TARGET"

# Unpopulated pfns of a base (the summary counts the uncovered ones too; a PVH guest's pfn
# space has holes, so compare with the plain base of the same guest).
unpop() { ck_json .layer.stats.unpopulated_pages; }
ck "$G" --full --evict zero,unpopulated --agent-timeout-ms 20000; note "$CK_LINE"
PLAIN_BYTES=$(ck_bytes)
PLAIN_UNPOP=$(unpop); nums PLAIN_BYTES PLAIN_UNPOP
clear_store
ck "$G" --full --evict zero,unpopulated,balloon --agent-timeout-ms 20000 --balloon-timeout-s 120
note "$CK_LINE"
BAL_BYTES=$(ck_bytes)
BNOTE=$(ck_note "balloon:")
note "$BNOTE"
echo "$BNOTE" | grep -q "reached" || fail "the guest did not balloon down: ${BNOTE:-no balloon note}"
BAL_UNPOP=$(unpop); nums BAL_BYTES BAL_UNPOP
UNPOP=$((BAL_UNPOP - PLAIN_UNPOP))
[ "$UNPOP" -ge 16384 ] || fail "only $UNPOP more pages unpopulated under the balloon (want >= 64 MiB): $CK_LINE"
T1=$(xenstore-read "$TARGET"); nums T0 T1
[ "$T1" = "$T0" ] || fail "memory/target is $T1 KiB after the checkpoint, $T0 KiB before"
[ "$BAL_BYTES" -lt "$PLAIN_BYTES" ] || fail "the balloon did not shrink the base: $BAL_BYTES B >= $PLAIN_BYTES B"

# Waits up to 60 s until guest $1 is within 8 MiB of its target $T0 (xl list's MiB column),
# or fails with "$2 has … MiB after 60 s".
wait_target() {
  local i=0
  while :; do
    MEM_MIB=$(xl list "$1" | awk 'NR == 2 { print $3 }'); nums MEM_MIB
    [ "$((MEM_MIB * 1024 + 8192))" -ge "$T0" ] && return 0
    [ $i -ge 120 ] && fail "$2 has $MEM_MIB MiB after 60 s, its target is $T0 KiB"
    sleep 0.5; i=$((i + 1))
  done
}

# The guest takes its memory back (populated pages return to the target).
wait_target "$G" "the guest, after the checkpoint,"

# The ballooned base restores: the guest runs on, and balloons back up to its target.
rs "$G" "$G"
m=$(mark "$G")
wait_target "$G" "the restored guest"
wait_ticks "$G" 3 60 "$m" || fail "workload of $G stopped after ballooning back up"
check_bad "$G" "$m" || fail "workload of $G saw bad pages after ballooning back up"
destroy_guest "$G"
pass "target_kib=$T0 plain_bytes=$PLAIN_BYTES balloon_bytes=$BAL_BYTES ballooned_pages=$UNPOP restored_mib=$MEM_MIB full_sweeps=$(sweep_cost) bad=0"
