# about: group checkpoint of two PVH guests playing TCP ping-pong over a dom0 bridge, destroy both, restore --group: both resume on the same connection (no reconnect or error line) where the checkpoint left them (ping's first number after the restore lies between the ones printed around the checkpoint), counters agree, a full sweep with bad=0 in both
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

# pp_trouble NAME MARK: NAME's ping-pong error, reconnect or bad-message lines after MARK.
pp_trouble() { after "$1" "$2" | grep -aE '^(PPERR|PPBAD)|bad=[1-9]'; }

# group_failed N: a failed group checkpoint must leave both members running.
group_failed() {
  check_running gpong && check_running gping ||
    fail "group checkpoint $1 failed and left the members gpong=$(guest_state gpong) gping=$(guest_state gping): $OUT_LAST"
  fail "group checkpoint $1 failed: $OUT_LAST"
}

# A base group checkpoint, then an incremental one under load; restore the second.
out G1_S xckpt checkpoint --store "$STORE" --group job gpong gping || group_failed 1

sleep 3
m1=$(mark gping); m2=$(mark gpong)
LO1=$(last_gen gping); LO2=$(last_gen gpong)
N_LO=$(pp_ns gping 0 | tail -n 1)
out G2_S xckpt checkpoint --store "$STORE" --group job gpong gping || group_failed 2
a1=$(mark gping)
GLINE=$(grep -a '^group job@2' "$TBW/.out")
[ -n "$GLINE" ] || fail "no group summary line: $OUT_LAST"
note "$GLINE"
SKEW=$(echo "$GLINE" | sed -n 's/.*pause skew \([0-9.]*\) ms.*/\1/p')
DOWN=$(echo "$GLINE" | sed -n 's/.*downtime ms \(.*\)$/\1/p' | tr ' ' ',')
wait_pp gping 1 60 "$a1" || fail "ping-pong stopped after the group checkpoint"
wait_ticks gping 1 60 "$a1" && wait_ticks gpong 1 60 "$(mark gpong)" || fail "a member stopped after the group checkpoint"
check_bad gping "$m1" && check_bad gpong "$m2" || fail "bad pages after the group checkpoint"
HI1=$(last_gen gping); HI2=$(last_gen gpong)
# The first number ping printed after the checkpoint returned: the checkpoint's instant lies
# between N_LO and it.
N_HI=$(pp_ns gping "$a1" | head -n 1)
nums N_LO N_HI SKEW
# One connection all along: each side connected once, and no error or bad message.
[ "$(after gping 0 | grep -ac '^PPUP')$(after gpong 0 | grep -ac '^PPUP')" = 11 ] ||
  fail "ping-pong reconnected before the restore (PPUP lines: $(after gping 0 | grep -a '^PPUP' | tr '\n' ' '))"
# (ping may fail to connect before pong listens: count errors from the connection on.)
UP1=$(after gping 0 | grep -an -m 1 '^PPUP' | cut -d: -f1); UP2=$(after gpong 0 | grep -an -m 1 '^PPUP' | cut -d: -f1)
T=$(pp_trouble gping "$UP1"; pp_trouble gpong "$UP2")
[ -z "$T" ] || fail "ping-pong saw errors before the restore: $(echo "$T" | head -n 2 | tr '\n' ' ')"
xckpt verify --store "$STORE" gping > /dev/null && xckpt verify --store "$STORE" gpong > /dev/null ||
  fail "xckpt verify of a member failed"

destroy_guest gping; destroy_guest gpong
[ "$(vifs_on_bridge)" = 0 ] || note "vifs still on the bridge after destroy: $(ls /sys/class/net/xenbr0/brif)"
r1=$(mark gping); r2=$(mark gpong)
out RS_S xckpt restore --store "$STORE" --group job@2 || fail "xckpt restore --group job@2 failed: $OUT_LAST"
VIFS=$(vifs_on_bridge)
[ "$VIFS" = 2 ] || fail "after the restore xenbr0 has $VIFS vifs, not 2"
# Both members: a full sweep with bad=0, resumed within the group checkpoint's window.
verify_resumed gping "$r1" "$LO1" "$HI1" "xckpt restore --group job@2 (gping)"
verify_resumed gpong "$r2" "$LO2" "$HI2" "xckpt restore --group job@2 (gpong)"
wait_pp gping 3 120 "$r1" || fail "ping-pong did not resume after the restore (gping: $(after gping "$r1" | grep -a '^PP' | tail -n 2 | tr '\n' ' '))"
wait_pp gpong 3 60 "$r2" || fail "pong did not resume after the restore"
# The same connection goes on: no reconnect (PPUP), no error, no message the other side had
# not sent, and ping's first number continues the ones seen before the checkpoint.
T=$(after gping "$r1" | grep -a '^PPUP'; after gpong "$r2" | grep -a '^PPUP'; pp_trouble gping "$r1"; pp_trouble gpong "$r2")
[ -z "$T" ] || fail "ping-pong reconnected or failed after the restore: $(echo "$T" | head -n 2 | tr '\n' ' ')"
FIRST=$(pp_ns gping "$r1" | head -n 1); SECOND=$(pp_ns gping "$r1" | sed -n 2p)
nums FIRST SECOND
[ "$FIRST" -gt "$N_LO" ] && [ "$FIRST" -le "$N_HI" ] ||
  fail "ping's first number after the restore is $FIRST, not in $((N_LO + 1))..$N_HI (the checkpoint's instant)"
# Both sides print every 50th message: after the restore they must print the same numbers
# (ping's first one may have been printed by pong before the instant, so compare the second).
P1=$(pp_ns gping "$r1" | head -n 3 | tr '\n' ' '); P2=$(pp_ns gpong "$r2" | head -n 3 | tr '\n' ' ')
pp_ns gpong "$r2" | grep -qx "$SECOND" || fail "counters disagree after the restore: ping printed $P1, pong $P2"
destroy_guest gping; destroy_guest gpong
pass "skew_ms=$SKEW downtime_ms=$DOWN group_ckpt_s=$G2_S restore_s=$RS_S pp_before=$N_LO pp_first_after_restore=$FIRST pp_after_ckpt=$N_HI reconnects=0 vifs=$VIFS full_sweeps=$(sweep_cost) pp_bad=0 bad=0"
