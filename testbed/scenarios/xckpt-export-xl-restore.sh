# about: HVM guest (qemu-xen): base + incremental, the incremental exported restores with plain xl restore (bad=0); an xl save file imported and restored with xckpt (bad=0)
. /testbed/xckpt.sh
# HVM: the export carries qemu-xen's device state, the richest stream xl restore reads back
# (PVH takes the same stream path without it; PV exports are in xckpt-pv-chain).
G=xex
fresh_guest hvm "$G"
ck "$G"; sleep 2; ck "$G"
timed EXPORT_S xckpt export --store "$STORE" "$G@2" -o "$TBW/x.save" || fail "xckpt export failed"
EXPORT_BYTES=$(file_bytes "$TBW/x.save")
destroy_guest "$G"
m=$(mark "$G")
timed XLR_S xl restore "$TBW/x.save" || fail "xl restore of the exported file failed"
rm -f "$TBW/x.save"
# shellcheck disable=SC2046
verify_resumed "$G" "$m" $(gen_window "$G" "$G@2") "xl restore of the export of $G@2"
# Import: xl save the running guest, import it, restore it with xckpt.
LO=$(last_gen "$G")
timed SAVE_S xl save "$G" "$TBW/y.save" || fail "xl save failed"
HI=$(last_gen "$G")
timed IMPORT_S xckpt import --store "$STORE" "$TBW/y.save" --name imported || fail "xckpt import failed"
rm -f "$TBW/y.save"
m=$(mark "$G")
out RS_S xckpt restore --store "$STORE" --name "$G" imported || fail "xckpt restore of the import failed: $OUT_LAST"
verify_resumed "$G" "$m" "$LO" "$HI" "xckpt restore of the imported xl save file"
destroy_guest "$G"
nums EXPORT_BYTES
pass "export_s=$EXPORT_S export_bytes=$EXPORT_BYTES xl_restore_s=$XLR_S import_s=$IMPORT_S import_restore_s=$RS_S full_sweeps=$(sweep_cost) bad=0"
