# about: two hosts (testbed/run pair): a job of two PVH guests, one per host, playing TCP ping-pong across the hosts, each writing a checksummed log to ext4 on a disk local to its host; two group checkpoints through Slurm (srun -N2 xckpt checkpoint --group --slurm) with the disks onto the NFS store, destroy both, restore through Slurm with the hosts swapped (srun -m arbitrary), each disk following its domain over NBD: the same connection goes on (no reconnect, counters continue from the instant), each log goes on from its snapshot, a full sweep with bad=0 on both, each resumed at a generation in its window, each overlay alone a clean ext4 once its copy completed
#
# Runs on host 1's dom0; host 2 is reached through Slurm. What happens once the holders stop
# serving (the source lost) is hpc-source-lost's.
. /testbed/xckpt.sh
. /testbed/group.sh
. /testbed/hpc.sh
hpc_with_disks
hpc_start_pair

# A base group checkpoint, then an incremental one under load.
hpc_ckpt G1_S || fail "group checkpoint 1 failed: $OUT_LAST"
sleep 3
m1=$(mark hping); LO1=$(last_gen hping)
set -- $(on2lib 'echo "H2 $(mark hpong) $(last_gen hpong)"' | grep '^H2 ')
m2=${2:-}; LO2=${3:-}
N_LO=$(pp_ns hping 0 | tail -n 1)
hpc_ckpt G2_S || fail "group checkpoint 2 failed: $OUT_LAST"
a1=$(mark hping)
GLINE=$(grep -a '^group hjob@2: 2 members on 2 hosts' "$TBW/.out")
[ -n "$GLINE" ] || fail "no summary line of the hub for group hjob@2: $OUT_LAST"
note "$GLINE"
SKEW=$(echo "$GLINE" | sed -n 's/.*pause skew \([0-9.]*\) ms.*/\1/p')
wait_pp hping 1 60 "$a1" || fail "ping-pong stopped after the group checkpoint"
HI1=$(last_gen hping); HI2=$(on2lib 'last_gen hpong' | tail -n 1)
N_HI=$(pp_ns hping "$a1" | head -n 1)
# The guests' own view of the stop (longest gap after the mark, ms).
nums m2
GAP1=$(guest_gap hping "$m1"); GAP2=$(on2lib "guest_gap hpong $m2" | tail -n 1)
nums SKEW LO1 LO2 HI1 HI2 N_LO N_HI GAP1 GAP2
check_bad hping "$m1" || fail_verdict "bad pages in hping after the group checkpoints"
hpc_no_trouble "before the restore"

# Destroy both, keep hpong's console log for its window, restore with the hosts swapped.
destroy_guest hping
on2 "cp /var/log/xen/console/guest-hpong.log /shared/hpong-before.log; xl destroy hpong" ||
  fail "cannot destroy hpong on host 2: $OUT_LAST"
cp /shared/hpong-before.log "$(clog hpong-h2)"
cp "$(clog hping)" /shared/hping-before.log
hpc_snapshot_logs
hpc_restore_swapped hjob@2 --disk-dir /mnt/xfs/disks
on2 "xl list hping" > /dev/null || fail "hping was not restored on host 2: $(on2 'xl list' | tr '\n' ' ')"
xl list hpong > /dev/null 2>&1 || fail "hpong was not restored on host 1: $(xl list | tr '\n' ' ')"
TB_GUESTS="hpong"
# Both members: a full sweep with bad=0, resumed within the group checkpoint's window.
verify_resumed hpong 0 "$LO2" "$HI2" "restore --group hjob@2 on host 1 (hpong)" hpong-h2
R2=$RESUME_GEN
V1=$(on2lib "cp /shared/hping-before.log \$(clog hping-h1) 2>/dev/null; verify_resumed hping 0 $LO1 $HI1 'restore --group hjob@2 on host 2 (hping)' hping-h1 && echo RESUMED \$RESUME_GEN")
echo "$V1" | grep -q '^RESUMED ' || {
  echo "$V1" | grep -q 'cause verdict' && set_cause verdict
  fail "hping on host 2: $(echo "$V1" | grep -a 'verdict:' | tail -n 1)"
}
R1=$(echo "$V1" | sed -n 's/^RESUMED //p')
# The same connection goes on, across the swapped hosts.
FIRST=$(on2lib "wait_pp hping 2 120 0 && pp_ns hping 0 | head -n 1" | tail -n 1)
nums R1 R2 FIRST
[ "$FIRST" -gt "$N_LO" ] && [ "$FIRST" -le "$N_HI" ] ||
  fail "ping's first number after the restore is $FIRST, not in $((N_LO + 1))..$N_HI (the checkpoint's instant)"
T=$(on2lib "after hping 0 | grep -aE '^(PPUP|PPERR|PPBAD)|bad=[1-9]'"; after hpong 0 | grep -aE '^(PPUP|PPERR|PPBAD)|bad=[1-9]')
[ -z "$T" ] || fail "ping-pong reconnected or failed after the restore: $(echo "$T" | head -n 2 | tr '\n' ' ')"
# Each log goes on from its snapshot; once the copies completed, each overlay alone holds it.
hpc_logs_go_on 0
destroy_guest hpong; on2 "xl destroy hping" || true
hpc_overlays_clean
pass "skew_ms=$SKEW gap_ms_hping=$GAP1 gap_ms_hpong=$GAP2 group_ckpt_s=$G2_S restore_s=$RS_S running_after_s=$RUN_S disk_copy_s_hping=$COPY_HPING_S disk_copy_s_hpong=$COPY_HPONG_S disks_local_after_s=$LOCAL_S pp_before=$N_LO pp_first_after_restore=$FIRST pp_after_ckpt=$N_HI gen_hping=$R1 gen_hpong=$R2 snapshot_last_hping=$SNAP1_LAST first_after_hping=$FIRST1 snapshot_last_hpong=$SNAP2_LAST first_after_hpong=$FIRST2 overlay_last_hping=$O1_LAST overlay_last_hpong=$O2_LAST hosts_swapped=1 reconnects=0 pp_bad=0 fsck=clean bad=0"
