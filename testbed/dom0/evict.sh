# Helpers for the eviction scenarios (sourced after xckpt.sh).

# cache_disk MIB: a loop device over MIB+8 MiB of non-zero data, attached to the next guest
# as xvda (CFG_EXTRA); the guest's CACHE_MIB=N reads it into its page cache.
cache_disk() {
  local mib=$1 f=$TBW/evict-disk.img m i=0
  for m in loop xen-blkback; do
    insmod "$(find /lib/modules -name "$m.ko" | head -1)" 2>/dev/null
  done
  [ -d /sys/module/loop ] && [ -d /sys/module/xen_blkback ] || fail "cannot load loop/xen-blkback in dom0"
  head -c 1048576 /dev/urandom > "$TBW/evict-1m"
  while [ $i -lt $((mib + 8)) ]; do cat "$TBW/evict-1m"; i=$((i + 1)); done > "$f"
  EV_LOOP=$(losetup -f) && losetup "$EV_LOOP" "$f" || fail "losetup $f failed"
  chmod +x /testbed/blk-loop.sh
  CFG_EXTRA="disk=['vdev=xvda,access=r,backendtype=phy,script=/testbed/blk-loop.sh,target=$EV_LOOP']"
  CLEANUP="${CLEANUP:+$CLEANUP; }for g in \$TB_GUESTS; do xl destroy \$g >/dev/null 2>&1; done; losetup -d $EV_LOOP; rm -f $f"
}

# evict_guest NAME MEM [KEY=VAL...]: a fresh store and a guest with the agent and a filled page
# cache (waits for the guest's DOMU-CACHE line when CACHE_MIB is given).
evict_guest() {
  local g=$1 mem=$2; shift 2
  clear_store
  start_guest pvh "$g" "$mem" "$@" || fail "guest $g did not start"
  wait_ticks "$g" 3 120 || fail "workload of $g not ticking"
  case " $* " in
    *" CACHE_MIB="*)
      after "$g" | grep -aq '^DOMU-CACHE filled' || fail "guest $g did not fill its page cache"
      note "$(after "$g" | grep -a '^DOMU-CACHE')" ;;
  esac
}

# ck_note TEXT: the first of the last checkpoint's notes that contains TEXT.
ck_note() { grep -a "note: .*$1" "$TBW/.out" | head -n 1; }
# ck_used_kib: the guest's used memory (MemTotal - MemFree) at the agent's report.
ck_used_kib() { ck_note "guest used" | sed -n 's/.*guest used \([0-9]*\) KiB.*/\1/p'; }
# ck_used_after_kib: the same after the agent dropped the page cache.
ck_used_after_kib() { ck_note "after dropping" | sed -n 's/.*, \([0-9]*\) KiB after dropping cache.*/\1/p'; }
# ck_evicted POLICY: pages the last checkpoint evicted under POLICY (0 if none).
ck_evicted() { ck_json ".layer.stats.evicted.$1 // 0"; }

# The guest kernel's System.map (testbed/profiles/, copied by testbed/host/images.sh), for
# xckpt --guest-profile.
GUEST_PROFILE=/testbed/guest.System.map
# ratio BYTES KIB: BYTES / (KIB * 1024), three decimals.
ratio() { awk -v a="$1" -v u="$2" 'BEGIN{printf "%.3f", a / (u * 1024)}'; }
