# about: xckpt base + 3 incrementals of a PV guest (shadow paging), restore latest and @1 and an export via xl restore, bad=0; guest gaps beside xl save -c
. /testbed/xckpt.sh
[ "$TB_VARIANT" = shadow ] ||
  fail "needs the shadow variant (Debian's Xen has no PV log-dirty): testbed/run test -v shadow xckpt-pv-chain"
G=xpv
fresh_guest pv "$G"
# The same guest under xl save -c first (its downtime is the yardstick).
m=$(mark "$G")
timed SAVEC_S xl save -c "$G" "$TBW/pv.save" || fail "xl save -c failed"
rm -f "$TBW/pv.save"
wait_ticks "$G" 3 60 "$m" || fail "workload stopped after xl save -c"
XL_GAP=$(guest_gap "$G" "$m")
ck "$G"; note "$CK_LINE"; BASE_S=$CK_S; BASE_GAP=$CK_GAP_MS; BASE_BYTES=$(ck_bytes)
INCR_GAPS=""; INCR_BYTES=""
for n in 2 3 4; do
  sleep 3
  ck "$G"; note "$CK_LINE"
  [ "$(ck_json .layer.kind)" = incremental ] || fail "checkpoint $n of $G was not an incremental: $CK_LINE"
  INCR_GAPS="$INCR_GAPS${INCR_GAPS:+,}$CK_GAP_MS"; INCR_BYTES="$INCR_BYTES${INCR_BYTES:+,}$(ck_bytes)"
done
# Each restore: a full sweep with bad=0 at a generation within its layer's window (rs).
rs "$G" "$G"; RS_LATEST=$RS_S; GEN_LATEST=$RS_GEN
rs "$G" "$G@2"; GEN_AT2=$RS_GEN
xckpt verify --store "$STORE" "$G" || fail "xckpt verify $G failed"
# Export of layer 3, restored by plain xl restore.
timed EXPORT_S xckpt export --store "$STORE" "$G@3" -o "$TBW/pv-x.save" || fail "xckpt export failed"
destroy_guest "$G"
m=$(mark "$G")
timed XLR_S xl restore "$TBW/pv-x.save" || fail "xl restore of the exported PV stream failed"
rm -f "$TBW/pv-x.save"
# shellcheck disable=SC2046
verify_resumed "$G" "$m" $(gen_window "$G" "$G@3") "xl restore of the export of $G@3"
destroy_guest "$G"
pass "xl_savec_gap_ms=$XL_GAP xckpt_base_gap_ms=$BASE_GAP xckpt_incr_gaps_ms=$INCR_GAPS base_s=$BASE_S base_bytes=$BASE_BYTES incr_bytes=$INCR_BYTES restore_s=$RS_LATEST gen_latest=$GEN_LATEST gen_at2=$GEN_AT2 window_at2=$(gen_window "$G" "$G@2" | tr ' ' -) export_xl_restore_s=$XLR_S full_sweeps=$(sweep_cost) bad=0"
