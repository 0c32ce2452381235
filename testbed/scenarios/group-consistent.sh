# about: group checkpoint of two PVH guests playing TCP ping-pong over a dom0 bridge, destroy both, restore --group: both resume, counters agree, bad=0
. /testbed/xckpt.sh
. /testbed/group.sh
clear_store
setup_bridge
PP_MODS=WL_MODS=xen-netfront
CFG_EXTRA="vif=['mac=00:16:3e:00:00:02,bridge=xenbr0,script=$VIF_SCRIPT']"
start_guest pvh gpong "$DOMU_MEM" $PP_MODS WL_IP=10.9.0.2 WL_PP_ROLE=pong || fail "guest gpong did not start"
CFG_EXTRA="vif=['mac=00:16:3e:00:00:03,bridge=xenbr0,script=$VIF_SCRIPT']"
start_guest pvh gping "$DOMU_MEM" $PP_MODS WL_IP=10.9.0.3 WL_PP_ROLE=ping WL_PP_PEER=10.9.0.2 ||
  fail "guest gping did not start"
CFG_EXTRA=""
wait_pp gping 3 120 0 || fail "ping-pong did not start (gping: $(after gping 0 | grep -a '^PP' | tail -n 2 | tr '\n' ' '))"

# A base group checkpoint, then an incremental one under load; restore the second.
out G1_S xckpt checkpoint --store "$STORE" --group job gpong gping || fail "group checkpoint 1 failed: $OUT_LAST"
sleep 3
m1=$(mark gping); m2=$(mark gpong)
out G2_S xckpt checkpoint --store "$STORE" --group job gpong gping || fail "group checkpoint 2 failed: $OUT_LAST"
GLINE=$(grep -a '^group job@2' "$TBW/.out")
[ -n "$GLINE" ] || fail "no group summary line: $OUT_LAST"
note "$GLINE"
SKEW=$(echo "$GLINE" | sed -n 's/.*pause skew \([0-9.]*\) ms.*/\1/p')
DOWN=$(echo "$GLINE" | sed -n 's/.*downtime ms \(.*\)$/\1/p' | tr ' ' ',')
wait_pp gping 2 60 "$m1" || fail "ping-pong stopped after the group checkpoint"
check_bad gping "$m1" && check_bad gpong "$m2" || fail "bad pages after the group checkpoint"
[ "$(pp_bad gping 0)$(pp_bad gpong 0)" = 00 ] || fail "ping-pong saw a bad message before the restore"
N_BEFORE=$(pp_ns gping 0 | tail -n 1)
xckpt verify --store "$STORE" gping > /dev/null && xckpt verify --store "$STORE" gpong > /dev/null ||
  fail "xckpt verify of a member failed"

destroy_guest gping; destroy_guest gpong
[ "$(vifs_on_bridge)" = 0 ] || note "vifs still on the bridge after destroy: $(ls /sys/class/net/xenbr0/brif)"
r1=$(mark gping); r2=$(mark gpong)
out RS_S xckpt restore --store "$STORE" --group job@2 || fail "xckpt restore --group job@2 failed: $OUT_LAST"
VIFS=$(vifs_on_bridge)
[ "$VIFS" = 2 ] || fail "after the restore xenbr0 has $VIFS vifs, not 2"
wait_ticks gping 3 120 "$r1" && wait_ticks gpong 3 120 "$r2" || fail "a member is not running after the group restore"
wait_pp gping 4 120 "$r1" || fail "ping-pong did not resume after the restore (gping: $(after gping "$r1" | grep -a '^PP' | tail -n 2 | tr '\n' ' '))"
wait_pp gpong 4 60 "$r2" || fail "pong did not resume after the restore"
check_bad gping "$r1" && check_bad gpong "$r2" || fail "bad pages after the group restore"
[ "$(pp_bad gping "$r1")$(pp_bad gpong "$r2")" = 00 ] || fail "ping-pong saw a message the other side had not sent"
# Both sides print every 50th message: after the restore they must print the same numbers
# (ping's first one may have been printed by pong before the instant, so compare the second).
P1=$(pp_ns gping "$r1" | head -n 3 | tr '\n' ' '); P2=$(pp_ns gpong "$r2" | head -n 3 | tr '\n' ' ')
FIRST=$(pp_ns gping "$r1" | head -n 1); SECOND=$(pp_ns gping "$r1" | sed -n 2p)
pp_ns gpong "$r2" | grep -qx "$SECOND" || fail "counters disagree after the restore: ping printed $P1, pong $P2"
[ "$FIRST" -le $((N_BEFORE + 50)) ] || note "first message number after the restore: $FIRST (last before: $N_BEFORE)"
destroy_guest gping; destroy_guest gpong
pass "skew_ms=$SKEW downtime_ms=$DOWN group_ckpt_s=$G2_S restore_s=$RS_S pp_first_after_restore=$FIRST vifs=$VIFS pp_bad=0 bad=0"
