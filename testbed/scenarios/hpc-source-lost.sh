# about: two hosts (testbed/run pair): each guest of the ping-pong job writes a checksummed log to ext4 on a disk local to its host (XFS, reflink snapshots); a group checkpoint through Slurm with the disks; both destroyed; restore through Slurm with the hosts swapped, so each disk follows its domain over NBD (qemu-nbd on the holder, a qcow2 overlay on the new host, QMP block-stream); once every copy is complete the holders stop serving and their snapshots are deleted (the source lost): both guests keep writing and ping-ponging, and each overlay alone is a clean ext4 whose log runs on from the snapshot
#
# Runs on host 1's dom0; host 2 is reached through Slurm. hping's disk is on host 1's XFS
# (under /shared, but xckpt reaches it only through qemu-nbd), hpong's on host 2's own disk.
. /testbed/xckpt.sh
. /testbed/group.sh
. /testbed/hpc.sh
HPC_DISK1=/shared/h1/hping.img
HPC_DISK2=/mnt/xfs/hpong.img
HPC_CKPT_DISK=""
hpc_start_pair
sleep 3
[ -n "$(dlog_last hping 0)" ] || fail "hping writes no log records: $(after hping 0 | grep -a 'DLOG\|DOMU' | tail -n 3 | tr '\n' ' ')"

hpc_ckpt G1_S || fail "the group checkpoint with disks failed: $OUT_LAST"
SNAP1=$(ls /shared/h1/hping.img.xckpt-hping-* 2>/dev/null | head -n 1)
SNAP2=$(on2 "ls /mnt/xfs/hpong.img.xckpt-hpong-*" 2>/dev/null | head -n 1)
[ -n "$SNAP1" ] && [ -n "$SNAP2" ] ||
  fail "no reflink snapshot next to each disk (host 1: '$SNAP1', host 2: '$SNAP2'): $OUT_LAST"
sleep 2

destroy_guest hping
on2 "cp /var/log/xen/console/guest-hpong.log /shared/hpong-before.log; xl destroy hpong" ||
  fail "cannot destroy hpong on host 2: $OUT_LAST"
cp "$(clog hping)" /shared/hping-before.log
# Each snapshot's log, checked before its host lets it go: where the restored guest must go on.
mkdir -p /mnt/xfs
check_ext4_log "$SNAP1"; SNAP1_LAST=$LOG_LAST
[ "$LOG_BAD" = 0 ] || fail "the snapshot of hping's disk has $LOG_BAD damaged records"
SNAP2_LAST=$(on2lib "check_ext4_log $SNAP2 && [ \$LOG_BAD = 0 ] && echo SNAPLAST \$LOG_LAST" | sed -n 's/^SNAPLAST //p')
nums SNAP1_LAST SNAP2_LAST

# Task 0 on host 2, task 1 on host 1: each member goes to the other host, its disk with it.
printf 'xhost2\nxhost1\n' > /shared/hostfile
step "restore through srun, hosts swapped, disks over NBD"
m1=$(mark hpong)
out RS_S env SLURM_HOSTFILE=/shared/hostfile timeout "$SRUN_TIMEOUT" srun -N2 -n2 -m arbitrary \
  xckpt restore --store "$HPC_STORE" --group hjob --slurm --disk-dir /mnt/xfs/disks < /dev/null ||
  fail "restore --group hjob --slurm failed: $OUT_LAST"
grep -a 'disk xvda of \|local after\|running after' "$TBW/.out" | while read -r l; do note "$l"; done
for d in hping hpong; do
  grep -aq "^disk xvda of $d: .*: local after " "$TBW/.out" ||
    fail "the restore did not report $d's disk local: $OUT_LAST"
done
LOCAL_S=$(grep -a '^every disk of group hjob@1 local after ' "$TBW/.out" | head -n 1 | sed 's/.* after \([0-9.]*\) s$/\1/')
RUN_S=$(grep -a 'unpaused together; running after ' "$TBW/.out" | head -n 1 | sed 's/.* running after \([0-9.]*\) s$/\1/')
TB_GUESTS="hpong"

# The source is lost: no qemu-nbd serves on either host, and the snapshots go.
[ -z "$(pidof qemu-nbd)" ] || fail "qemu-nbd still runs on host 1 after the restore ended"
[ -z "$(on2 'pidof qemu-nbd')" ] || fail "qemu-nbd still runs on host 2 after the restore ended"
rm -f "$SNAP1"; on2 "rm -f $SNAP2"
a1=$(mark hpong)
sleep 5
# Both guests keep writing their logs, without an error, and keep ping-ponging.
FIRST2=$(dlog_first hpong "$m1"); LAST2=$(dlog_last hpong "$a1")
set -- $(on2lib "echo H2 \$(dlog_first hping 0) \$(dlog_last hping 0) \$(after hping 0 | grep -ac '^DLOGERR')" | grep '^H2 ')
FIRST1=${2:-}; LAST1=${3:-}; ERR1=${4:-}
nums FIRST1 LAST1 ERR1 FIRST2 LAST2 RS_S LOCAL_S RUN_S
[ "$ERR1" = 0 ] && [ "$(after hpong "$m1" | grep -ac '^DLOGERR')" = 0 ] ||
  fail "a restored guest's log writes fail: $(after hpong "$m1" | grep -a DLOGERR | head -n 1) (hping: $ERR1 errors)"
[ "$LAST2" -gt "$FIRST2" ] && [ "$LAST1" -gt "$FIRST1" ] ||
  fail "a guest stopped writing once its source was lost (hping $FIRST1..$LAST1, hpong $FIRST2..$LAST2)"
# The restored guest's first new record follows the snapshot's last (or repeats it, if its
# write was in flight at the stop).
[ "$FIRST1" = $((SNAP1_LAST + 1)) ] || [ "$FIRST1" = "$SNAP1_LAST" ] ||
  fail "hping's log went on at $FIRST1, but its snapshot ends at $SNAP1_LAST"
[ "$FIRST2" = $((SNAP2_LAST + 1)) ] || [ "$FIRST2" = "$SNAP2_LAST" ] ||
  fail "hpong's log went on at $FIRST2, but its snapshot ends at $SNAP2_LAST"
wait_pp hpong 1 60 "$a1" || fail "ping-pong stopped after the source was lost"
T=$(on2lib "after hping 0 | grep -aE '^(PPUP|PPERR|PPBAD)|bad=[1-9]'"; after hpong 0 | grep -aE '^(PPUP|PPERR|PPBAD)|bad=[1-9]')
[ -z "$T" ] || fail "ping-pong reconnected or failed after the restore: $(echo "$T" | head -n 2 | tr '\n' ' ')"

# Each overlay alone (no backing file left) is a clean ext4 with the whole log.
O2=$(ls /mnt/xfs/disks/hpong-xvda-*.qcow2 2>/dev/null | head -n 1)
destroy_guest hpong; on2 "xl destroy hping" || true
[ -n "$O2" ] || fail "no overlay of hpong's disk in /mnt/xfs/disks"
qemu-img info "$O2" | grep -q '^backing file' && fail "hpong's overlay still has a backing file"
qemu-img convert -f qcow2 -O raw "$O2" /mnt/xfs/hpong-final.raw || fail "cannot read hpong's overlay"
check_ext4_log /mnt/xfs/hpong-final.raw
[ "$LOG_BAD" = 0 ] && [ "$LOG_LAST" -ge "$LAST2" ] ||
  fail "hpong's overlay: $LOG_BAD damaged records, last $LOG_LAST (the guest wrote up to $LAST2)"
O1_LAST=$(on2lib "o=\$(ls /mnt/xfs/disks/hping-xvda-*.qcow2 | head -n 1); qemu-img info \$o | grep -q '^backing file' && fail 'backing file left'; qemu-img convert -f qcow2 -O raw \$o /mnt/xfs/hping-final.raw && check_ext4_log /mnt/xfs/hping-final.raw && [ \$LOG_BAD = 0 ] && echo O1LAST \$LOG_LAST" | sed -n 's/^O1LAST //p')
nums O1_LAST
[ "$O1_LAST" -ge "$LAST1" ] || fail "hping's overlay ends at record $O1_LAST, but the guest wrote up to $LAST1"
pass "group_ckpt_s=$G1_S restore_s=$RS_S running_after_s=$RUN_S disks_local_after_s=$LOCAL_S snapshot_last_hping=$SNAP1_LAST first_after_hping=$FIRST1 snapshot_last_hpong=$SNAP2_LAST first_after_hpong=$FIRST2 log_hping=$LAST1 log_hpong=$LAST2 overlay_last_hping=$O1_LAST overlay_last_hpong=$LOG_LAST hosts_swapped=1 source_lost=1 fsck=clean"
