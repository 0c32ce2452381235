# about: pages QEMU wrote by emulated DMA between two checkpoints (an HVM guest's IDE read into its page cache) are in the incremental: the restored cache holds the disk's bytes, bad=0
. /testbed/xckpt.sh
BOOT_TIMEOUT=300
# The guest reads DMA_MIB MiB of its emulated IDE disk into its page cache DMA_AFTER_S seconds
# after its DOMU-DMA armed line (testbed/domu/init): after the base checkpoint, before the
# incremental. QEMU writes those pages by DMA; Xen's log-dirty sees them only because QEMU
# reports them (its global dirty log, which xckpt turns on and leaves on). init_on_alloc=0:
# Debian's kernel zeroes every page it allocates, a CPU write that log-dirty sees, and that
# would put the pages in the incremental even if QEMU's writes were lost.
g=xdma MIB=16
img=$TBW/dma-disk.img
dd if=/dev/urandom of="$img" bs=1M count=$((MIB + 1)) 2>/dev/null || fail "cannot write $img"
CLEANUP="rm -f $img"
want=$(dd if="$img" bs=1M count=$MIB 2>/dev/null | md5sum | cut -d' ' -f1)
# qdisk: QEMU opens the file itself, for the emulated disk (the guest's) and the PV one (unused).
CFG_EXTRA="disk=['vdev=hda,access=w,backendtype=qdisk,format=raw,target=$img']"
clear_store
start_guest hvm "$g" "$DOMU_MEM" xen_emul_unplug=never init_on_alloc=0 DMA_MIB=$MIB DMA_AFTER_S=40 ||
  fail "guest $g did not start"
after "$g" | grep -a '^DOMU-DMA armed' || fail "guest $g has no emulated disk (no DOMU-DMA armed line)"
wait_ticks "$g" 3 60 || fail "workload of $g not ticking"
# The disk is not snapshotted (the guest only reads it): memory only.
ck "$g" --no-disk; note "$CK_LINE"
m=$(mark "$g")
after "$g" | grep -aq '^DOMU-DMA start' &&
  fail "the guest began its read before the base checkpoint ended: raise DMA_AFTER_S"
i=0
while ! after "$g" "$m" | grep -aq '^DOMU-DMA read'; do
  [ $i -lt 180 ] || fail "guest $g did not read its disk within 180 s"
  sleep 1; i=$((i + 1))
done
read_line=$(after "$g" "$m" | grep -a '^DOMU-DMA read' | head -n 1)
note "$read_line"
case $read_line in *" md5=$want "*) ;; *) fail "guest $g read other bytes than the disk holds ($want)" ;; esac
sleep 3
ck "$g" --no-disk; note "$CK_LINE"
incr_pages=$(ck_json .layer.stats.data_pages); nums incr_pages
rs "$g" "$g"
# The restored guest's page cache, read back without DMA: two md5 lines after the restore.
m=$(mark "$g")
i=0
while [ "$(after "$g" "$m" | grep -ac '^DOMU-DMA cached')" -lt 2 ]; do
  [ $i -lt 60 ] || fail "no DOMU-DMA cached line from the restored $g within 60 s"
  sleep 1; i=$((i + 1))
done
bad=$(after "$g" "$m" | grep -a '^DOMU-DMA cached' | grep -avc " md5=$want\$")
nums bad
[ "$bad" = 0 ] || fail_verdict "the restored page cache of $g differs from the disk: pages QEMU wrote between the checkpoints are missing ($(after "$g" "$m" | grep -a '^DOMU-DMA cached' | head -n 1))"
destroy_guest "$g"
pass "dma_mib=$MIB md5=$want incr_data_pages=$incr_pages resume_gen=$RS_GEN full_sweeps=$(sweep_cost) bad=0"
