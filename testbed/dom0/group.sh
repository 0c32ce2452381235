# Helpers for the group and disk scenarios (sourced after xckpt.sh).

# load_mods NAME...: insmod modules from /lib/mods unless loaded.
load_mods() {
  local m
  for m in "$@"; do
    grep -q "^$(echo "$m" | tr - _) " /proc/modules && continue
    insmod "/lib/mods/$m.ko" || fail "insmod $m failed"
  done
}

# setup_bridge: bridge xenbr0 in dom0 and the vif script libxl runs for the guests' vifs
# (Debian's vif-bridge needs bash; this one is busybox sh). Sets VIF_SCRIPT.
setup_bridge() {
  load_mods llc stp bridge xen-netback
  [ -d /sys/class/net/xenbr0 ] || brctl addbr xenbr0 || fail "brctl addbr xenbr0 failed"
  ip link set xenbr0 up
  VIF_SCRIPT=$TBW/vif-tb
  cat > "$VIF_SCRIPT" <<'SCRIPT'
#!/bin/sh
# libxl: $1 = online | add | offline | remove; the interface is $vif.
case "$1" in
  online|add) brctl addif xenbr0 "$vif" && ip link set "$vif" up ;;
  offline|remove) brctl delif xenbr0 "$vif" 2>/dev/null; true ;;
esac
SCRIPT
  chmod +x "$VIF_SCRIPT"
}
# vifs_on_bridge: how many vif interfaces xenbr0 has.
vifs_on_bridge() { ls /sys/class/net/xenbr0/brif 2>/dev/null | grep -c '^vif'; }

# setup_xfs: format dom0's QEMU disk (/dev/vda) with XFS (reflink on) and mount it on /mnt/xfs.
setup_xfs() {
  load_mods virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
    crc32c_generic libcrc32c xfs
  local i=0
  while [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
  [ -b /dev/vda ] || fail "dom0 has no /dev/vda (the test bed's QEMU scratch disk)"
  mkdir -p /mnt/xfs
  grep -q ' /mnt/xfs ' /proc/mounts && umount /mnt/xfs
  mkfs.xfs -q -f -m reflink=1 /dev/vda || fail "mkfs.xfs /dev/vda failed"
  mount -t xfs /dev/vda /mnt/xfs || fail "mount /dev/vda failed"
  CLEANUP="${CLEANUP:+$CLEANUP; }umount /mnt/xfs 2>/dev/null"
}

# pp_lines NAME MARK: the n values of NAME's PP lines after MARK.
pp_ns() { after "$1" "$2" | grep -a '^PP ' | tr ' ' '\n' | sed -n 's/^n=//p'; }
pp_bad() { after "$1" "$2" | grep -a '^PP' | grep -acE '^PPBAD|bad=[1-9]'; }
# wait_pp NAME COUNT TIMEOUT MARK: until NAME printed COUNT PP lines after MARK.
wait_pp() {
  local t0; t0=$(now)
  while [ "$(pp_ns "$1" "$4" | wc -l)" -lt "$2" ]; do
    awk -v a="$t0" -v b="$(now)" -v l="$3" 'BEGIN{exit !(b-a > l)}' && return 1
    sleep 0.5
  done
}
# The guest modules of the write log on ext4 (WL_DLOG).
DLOG_MODS=xen-blkfront,crc32c_generic,crc16,mbcache,jbd2,ext4
# dlog_first NAME MARK / dlog_last NAME MARK: first / last record NAME wrote after MARK.
dlog_first() { after "$1" "$2" | sed -n 's/^DLOG wrote=//p' | head -n 1; }
dlog_last() { after "$1" "$2" | sed -n 's/^DLOG wrote=//p' | tail -n 1; }

# check_ext4_log IMAGE: copy an ext4 image, replay its journal, require a clean fsck, and check
# the workload's log in it. Sets LOG_LAST (last valid record) and LOG_BAD.
check_ext4_log() {
  local copy=/mnt/xfs/check.img rc
  cp "$1" "$copy" || fail "cannot copy $1"
  /usr/sbin/e2fsck -fy "$copy" > "$TBW/fsck1.txt" 2>&1; rc=$?
  [ "$rc" -le 1 ] || { cat "$TBW/fsck1.txt"; fail "e2fsck -fy of $1 found errors (rc=$rc)"; }
  /usr/sbin/e2fsck -fn "$copy" > "$TBW/fsck2.txt" 2>&1 || { cat "$TBW/fsck2.txt"; fail "e2fsck -fn of $1 not clean after journal replay"; }
  rm -f /mnt/xfs/log.out
  /usr/sbin/debugfs -R "dump /log /mnt/xfs/log.out" "$copy" > /dev/null 2>&1
  [ -f /mnt/xfs/log.out ] || fail "no /log in the file system of $1"
  local line; line=$(workload dlog-check /mnt/xfs/log.out)
  note "$1: $line"
  LOG_LAST=$(echo "$line" | tr ' ' '\n' | sed -n 's/^last=//p')
  LOG_BAD=$(echo "$line" | tr ' ' '\n' | sed -n 's/^bad=//p')
  rm -f "$copy" /mnt/xfs/log.out
}
