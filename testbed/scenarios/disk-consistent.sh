# about: PVH guest logs checksummed records to ext4 on a reflink-able file (XFS on dom0's QEMU disk); checkpoint, more writes, restore: fsck clean, log ends at the checkpoint, original untouched
. /testbed/xckpt.sh
. /testbed/group.sh
clear_store
setup_xfs
IMG=/mnt/xfs/gdisk.img
truncate -s 64M "$IMG" && /usr/sbin/mke2fs -q -t ext4 -F "$IMG" || fail "mke2fs $IMG failed"
CFG_EXTRA="disk=['format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=$IMG']"
start_guest pvh gdisk "$DOMU_MEM" WL_MODS=xen-blkfront,crc32c_generic,crc16,mbcache,jbd2,ext4 \
  WL_MOUNT=/dev/xvda WL_DLOG=/mnt/log WL_DLOG_MS=50 || fail "guest gdisk did not start"
CFG_EXTRA=""
sleep 3
[ -n "$(dlog_last gdisk 0)" ] || fail "the guest writes no log records: $(after gdisk 0 | grep -a 'DLOG\|DOMU' | tail -n 3 | tr '\n' ' ')"

ck gdisk
note "$CK_LINE"
SNAP=$(grep -a '^  disk xvda: reflink snapshot ' "$TBW/.out" | sed 's/.* snapshot //')
[ -n "$SNAP" ] && [ -f "$SNAP" ] || fail "no reflink snapshot of xvda reported: $(cat "$TBW/.out" | tr '\n' ' ')"
DOWN=$(ck_json '.layer.stats.downtime_us / 1000')
sleep 3   # more records after the checkpoint
AT_DESTROY=$(dlog_last gdisk 0)
# The original guest writes its disk until it is destroyed: take the disk's sum after that.
destroy_guest gdisk
ORIG=$(md5sum "$IMG" | cut -d' ' -f1)
m=$(mark gdisk)
rs gdisk gdisk
CLONE=$(grep -a '^gdisk: disk xvda restored from its snapshot as ' "$TBW/.out" | sed 's/.* as //')
[ -n "$CLONE" ] && [ -f "$CLONE" ] || fail "the restore reported no disk clone: $OUT_LAST"
sleep 3
FIRST=$(dlog_first gdisk "$m")
[ -n "$FIRST" ] || fail "the restored guest writes no log records: $(after gdisk "$m" | grep -a DLOG | tail -n 3 | tr '\n' ' ')"
[ "$(after gdisk "$m" | grep -ac '^DLOGERR')" = 0 ] || fail "the restored guest's log writes fail: $(after gdisk "$m" | grep -a DLOGERR | head -n 1)"
[ "$(md5sum "$IMG" | cut -d' ' -f1)" = "$ORIG" ] || fail "the restore changed the original disk $IMG"
AFTER_RESTORE=$(dlog_last gdisk "$m")
destroy_guest gdisk
[ "$(md5sum "$IMG" | cut -d' ' -f1)" = "$ORIG" ] || fail "the restored guest wrote to the original disk $IMG"

# The snapshot: a clean file system whose log ends exactly where the guest's memory was.
check_ext4_log "$SNAP"; SNAP_LAST=$LOG_LAST
[ "$LOG_BAD" = 0 ] || fail "the snapshot's log has $LOG_BAD damaged records"
# The restored guest's first new record is the one after the checkpoint's last durable one
# (or that one again if its write was in flight at the stop).
[ "$SNAP_LAST" = $((FIRST - 1)) ] || [ "$SNAP_LAST" = "$FIRST" ] ||
  fail "the snapshot's log ends at record $SNAP_LAST, but the restored guest went on with record $FIRST"
[ "$SNAP_LAST" -lt "$AT_DESTROY" ] || fail "the snapshot has records written after the checkpoint ($SNAP_LAST >= $AT_DESTROY)"
# The clone the restored guest wrote to: clean, and its log runs on without a gap.
check_ext4_log "$CLONE"
[ "$LOG_BAD" = 0 ] && [ "$LOG_LAST" -ge "$AFTER_RESTORE" ] ||
  fail "the restored disk's log has $LOG_BAD damaged records, last $LOG_LAST (guest wrote up to $AFTER_RESTORE)"
nums SNAP_LAST FIRST AT_DESTROY LOG_LAST AFTER_RESTORE DOWN
pass "full_sweeps=$(sweep_cost) snapshot_last=$SNAP_LAST restored_first=$FIRST written_before_destroy=$AT_DESTROY clone_last=$LOG_LAST downtime_ms=$DOWN fsck=clean original_unchanged=yes"
