# about: two boots (testbed/run cross A B): a PVH chain taken on A, restored on B from a disk both boots share, bad=0
# needs: shared-disk
#
# The shared disk (/dev/vdb, kept by the host between the boots of one run) stands for storage
# two Xen hosts share. It holds the store as a tar archive (no filesystem, so neither kernel has
# to read the other's): boot 1 finds it empty, takes a base and two incrementals of a PVH guest
# and writes the store there; boot 2 finds the archive and restores the latest point with
# `xckpt restore`, checking the resumed generation and the workload's full sweep (bad=0).
# A restore onto an older Xen passes too if it is refused with one line before any domain
# exists. Boot 2 clears the disk once its restore has passed (not before: a retry must find the
# archive again, not take a new chain), so a third boot takes a chain again (`testbed/run
# full`: 4.17 -> 4.20, then 4.20 -> 4.17).
. /testbed/xckpt.sh
DISK=/dev/vdb
G=xcross
xen_here=$(xl info 2>/dev/null | awk '$1 == "xen_major" {M=$3} $1 == "xen_minor" {m=$3} END {print M "." m}')

for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  [ -f "/lib/mods/$m.ko" ] && insmod "/lib/mods/$m.ko" 2>/dev/null
done
i=0
while [ ! -b "$DISK" ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
[ -b "$DISK" ] || fail "no shared disk $DISK (run it with: testbed/run cross A B)"

if ! tar -tf "$DISK" ./cross.env >/dev/null 2>&1; then
  # ---- boot 1: take the chain
  fresh_guest pvh "$G"
  ck "$G"; note "$CK_LINE"
  sleep 3; ck "$G"; note "$CK_LINE"
  sleep 3; ck "$G"; note "$CK_LINE"
  gen_last=$CK_GEN
  gen_end=$(last_gen "$G")
  destroy_guest "$G"
  printf 'xen_from=%s\ngen_last=%s\ngen_end=%s\n' "$xen_here" "$gen_last" "$gen_end" > "$STORE/cross.env"
  tar -C "$STORE" -cf "$DISK" . || fail "cannot write the store to $DISK"
  sync
  pass "phase=take layers=3 gen_last=$gen_last gen_end=$gen_end store_bytes=$(du -sk "$STORE" | cut -f1)KiB"
  exit 0
fi

# ---- boot 2: restore it here
# consumed: clear the disk, so that the next boot of the run on it takes a chain again.
consumed() { { dd if=/dev/zero of="$DISK" bs=1M count=1 2>/dev/null && sync; } || fail "cannot clear $DISK"; }
clear_store
tar -C "$STORE" -xf "$DISK" || fail "cannot read the store from $DISK"
. "$STORE/cross.env"
rm -f "$STORE/cross.env"
note "chain taken on Xen $xen_from (gen $gen_last..$gen_end), restoring on Xen $xen_here"
xckpt verify --store "$STORE" "$G" || fail "xckpt verify $G failed on Xen $xen_here"
TB_GUESTS="$TB_GUESTS $G"
m=$(mark "$G")
if ! out RS_S xckpt restore --store "$STORE" "$G"; then
  lines=$(grep -avc '^ *$' "$TBW/.out")
  older=$(awk -v a="$xen_here" -v b="$xen_from" 'BEGIN {split(a, x, "."); split(b, y, ".");
            print (x[1] * 100 + x[2] < y[1] * 100 + y[2]) ? 1 : 0}')
  if [ "$older" = 1 ] && [ "$lines" = 1 ] && [ -z "$(domid "$G")" ]; then
    consumed
    pass "phase=restore xen_from=$xen_from refused=1 domains_created=0 reason=\"$OUT_LAST\""
    exit 0
  fi
  fail "xckpt restore of a Xen $xen_from chain on Xen $xen_here failed ($lines lines, domain ${G}: $(domid "$G" || echo none)): $OUT_LAST"
fi
wait_ticks "$G" 3 120 "$m" || fail "workload of $G not running after the restore on Xen $xen_here"
check_bad "$G" "$m" || fail "workload of $G saw bad pages after the restore on Xen $xen_here"
gen=$(ticks "$G" "$m" | head -n 1 | tr ' ' '\n' | sed -n 's/^gen=//p')
[ "$gen" -ge "$gen_last" ] && [ "$gen" -le "$gen_end" ] ||
  fail "restored workload resumed at gen $gen, not between $gen_last and $gen_end"
destroy_guest "$G"
consumed
pass "phase=restore xen_from=$xen_from restore_s=$RS_S gen=$gen gen_last=$gen_last gen_end=$gen_end bad=0"
