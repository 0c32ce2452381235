# about: two hosts (testbed/run pair): each guest of the ping-pong job writes a checksummed log to ext4 on a disk local to its host (XFS, reflink snapshots); a group checkpoint through Slurm with the disks; both destroyed; restore through Slurm with the hosts swapped, so each disk follows its domain over NBD (qemu-nbd on the holder, a qcow2 overlay on the new host, QMP block-stream); once every copy is complete the holders stop serving and their snapshots are deleted (the source lost): both guests keep writing and ping-ponging, and each overlay alone is a clean ext4 whose log runs on from the snapshot
#
# Runs on host 1's dom0; host 2 is reached through Slurm. The disks: hpc_with_disks.
. /testbed/xckpt.sh
. /testbed/group.sh
. /testbed/hpc.sh
hpc_with_disks
hpc_start_pair
sleep 3
[ -n "$(dlog_last hping 0)" ] || fail "hping writes no log records: $(after hping 0 | grep -a 'DLOG\|DOMU' | tail -n 3 | tr '\n' ' ')"

hpc_ckpt G1_S || fail "the group checkpoint with disks failed: $OUT_LAST"
sleep 2

destroy_guest hping
on2 "cp /var/log/xen/console/guest-hpong.log /shared/hpong-before.log; xl destroy hpong" ||
  fail "cannot destroy hpong on host 2: $OUT_LAST"
cp "$(clog hping)" /shared/hping-before.log
hpc_snapshot_logs
m1=$(mark hpong)
hpc_restore_swapped hjob --disk-dir /mnt/xfs/disks
TB_GUESTS="hpong"

# The source is lost: no qemu-nbd serves on either host, and the snapshots go.
[ -z "$(pidof qemu-nbd)" ] || fail "qemu-nbd still runs on host 1 after the restore ended"
[ -z "$(on2 'pidof qemu-nbd')" ] || fail "qemu-nbd still runs on host 2 after the restore ended"
rm -f "$SNAP1"; on2 "rm -f $SNAP2"
# Both guests keep writing their logs, on from their snapshots, and keep ping-ponging.
hpc_logs_go_on "$m1"
a1=$(mark hpong)
wait_pp hpong 1 60 "$a1" || fail "ping-pong stopped after the source was lost"
T=$(on2lib "after hping 0 | grep -aE '^(PPUP|PPERR|PPBAD)|bad=[1-9]'"; after hpong 0 | grep -aE '^(PPUP|PPERR|PPBAD)|bad=[1-9]')
[ -z "$T" ] || fail "ping-pong reconnected or failed after the restore: $(echo "$T" | head -n 2 | tr '\n' ' ')"

destroy_guest hpong; on2 "xl destroy hping" || true
hpc_overlays_clean
pass "group_ckpt_s=$G1_S restore_s=$RS_S running_after_s=$RUN_S disk_copy_s_hping=$COPY_HPING_S disk_copy_s_hpong=$COPY_HPONG_S disks_local_after_s=$LOCAL_S snapshot_last_hping=$SNAP1_LAST first_after_hping=$FIRST1 snapshot_last_hpong=$SNAP2_LAST first_after_hpong=$FIRST2 log_hping=$LAST1 log_hpong=$LAST2 overlay_last_hping=$O1_LAST overlay_last_hpong=$O2_LAST hosts_swapped=1 source_lost=1 fsck=clean"
