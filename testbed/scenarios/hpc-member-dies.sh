# about: two hosts (testbed/run pair): host 2's xckpt is killed in the middle of a group checkpoint through Slurm (failpoint group.paused: its member paused, before the Stopped barrier): both guests run again within a second (xentop sampling each host while it runs: what it saw paused, and a bound from the samples around each host's xckpt exit), neither is left paused, no chain or group manifest changed (checksums, jq), and the next group checkpoint succeeds
. /testbed/xckpt.sh
. /testbed/group.sh
. /testbed/hpc.sh
hpc_start_pair
# xentop watches each host during the checkpoints (hpc-task.sh).
export HPC_WATCH=1

# A first group checkpoint, so that there is a chain to keep unchanged.
hpc_ckpt G1_S || fail "group checkpoint 1 failed: $OUT_LAST"
# What the store holds: each layer file's checksum, each chain's list of layers, the group
# manifest's checksum (read with md5sum and jq, not with xckpt).
store_state() {
  (cd "$HPC_STORE" && find . -type f -name 'layer-*.xcl' | sort | xargs md5sum &&
    for c in hping hpong; do echo "$c $(jq -c .layers "$c/manifest.json")"; done &&
    md5sum .groups/hjob/manifest.json)
}
BEFORE=$(store_state)
m1=$(mark hping)
set -- $(on2lib 'echo "H2 $(mark hpong)"' | grep '^H2 ')
m2=${2:-}
nums m1 m2

# Host 2's xckpt aborts (as kill -9) right after pausing hpong.
hpc_ckpt KILL_S XCKPT_FAILPOINT=group.paused && fail "the group checkpoint with a killed member succeeded: $OUT_LAST"
grep -a 'slot 1) is gone' "$TBW/.out" > "$TBW/.why" ||
  fail "the hub did not say host 2's member is gone: $OUT_LAST"
note "hub: $(head -n 1 "$TBW/.why")"
# Both guests run again: each prints TICKs, and xl on each host shows it running.
wait_ticks hping 2 60 "$m1" || fail "hping did not run again after host 2's xckpt died"
check_running hping || fail_verdict "hping is left $(guest_state hping) after host 2's xckpt died"
R2=$(on2lib "wait_ticks hpong 2 60 $m2 && check_running hpong && echo RUNNING")
echo "$R2" | grep -q '^RUNNING' || {
  set_cause verdict
  fail "hpong on host 2 is not running after its xckpt died: $(on2 'xl list hpong' | tail -n 1)"
}
# How long each guest stayed paused, as xentop on its host saw it. (The guests' own longest gap
# is printed too, but not checked: on the test bed's loaded TCG hosts a guest also misses
# its ticks for over a second while pre-copy runs, paused or not.)
P1=$(paused_ms hping); P2=$(paused_ms hpong); SAMPLE_MS=$(sample_ms)
# A pause shorter than xentop's sampling may fall between two samples: bound it by the span
# between the samples around it (pause_bound_ms, near each host's xckpt exit).
B1=$(pause_bound_ms hping xhost1); B2=$(pause_bound_ms hpong xhost2)
GAP1=$(guest_gap hping "$m1"); GAP2=$(on2lib "guest_gap hpong $m2" | tail -n 1)
[ "$P1" != still-paused ] && [ "$P2" != still-paused ] || fail_verdict "xentop still saw a guest paused 2 s after xckpt ended: hping $P1, hpong $P2"
nums KILL_S P1 P2 B1 B2 SAMPLE_MS GAP1 GAP2
[ "$B1" -ge 0 ] && [ "$B2" -ge 0 ] || fail "xentop left no samples around the kill (hping $B1, hpong $B2; its samples: $(tail -c 300 /shared/pw-xhost1.txt | tr '\n' ' '); its errors: $(head -c 300 /shared/pw-xhost1.err /shared/pw-xhost2.err | tr '\n' ' '))"
[ "$P1" -le 1000 ] && [ "$P2" -le 1000 ] && [ "$B1" -le 1000 ] && [ "$B2" -le 1000 ] ||
  fail_verdict "a guest may have stayed paused longer than a second after host 2's xckpt died: seen paused hping $P1 ms, hpong $P2 ms; bound hping $B1 ms, hpong $B2 ms (xentop, a sample every $SAMPLE_MS ms)"
check_bad hping "$m1" || fail_verdict "bad pages in hping after the aborted group checkpoint"
AFTER=$(store_state)
[ "$BEFORE" = "$AFTER" ] ||
  fail "the store changed in the aborted group checkpoint: $(echo "$BEFORE" > "$TBW/b"; echo "$AFTER" | diff "$TBW/b" - | grep '^[-+][^-+]' | head -n 3 | tr '\n' ' ')"
FILES=$(echo "$AFTER" | grep -c .)
hpc_no_trouble "after the aborted group checkpoint"

# The next group checkpoint succeeds.
hpc_ckpt G2_S || fail "the group checkpoint after the aborted one failed: $OUT_LAST"
GLINE=$(grep -a '^group hjob@2: 2 members on 2 hosts' "$TBW/.out")
[ -n "$GLINE" ] || fail "no summary line of the hub for group hjob@2: $OUT_LAST"
SKEW=$(echo "$GLINE" | sed -n 's/.*pause skew \([0-9.]*\) ms.*/\1/p')
nums SKEW G1_S G2_S
destroy_guest hping; on2 "xl destroy hpong" || true
pass "paused_ms_hping=$P1 paused_ms_hpong=$P2 pause_bound_ms_hping=$B1 pause_bound_ms_hpong=$B2 sample_ms=$SAMPLE_MS gap_ms_hping=$GAP1 gap_ms_hpong=$GAP2 killed_ckpt_s=$KILL_S store_entries_unchanged=$FILES next_ckpt_s=$G2_S next_skew_ms=$SKEW paused=0 bad=0"
