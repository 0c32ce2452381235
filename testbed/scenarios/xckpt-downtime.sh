# about: guest-observed gap during xckpt checkpoint vs during xl save -c on the same guest (goal <= 0.2x); a --no-live layer for comparison, restored bad=0
. /testbed/xckpt.sh
G=xdt
fresh_guest pvh "$G"
m=$(mark "$G")
timed SAVEC_S xl save -c "$G" "$TBW/dt.save" || fail "xl save -c failed"
rm -f "$TBW/dt.save"
wait_ticks "$G" 3 60 "$m" || fail "workload stopped after xl save -c"
XL_GAP=$(guest_gap "$G" "$m")
ck "$G"; BASE_GAP=$CK_GAP_MS
sleep 3
ck "$G"; INC_GAP=$CK_GAP_MS
# The non-live mode pauses for the whole capture, as xl save -c does, and still restores.
sleep 3
ck "$G" --no-live; NOLIVE_GAP=$CK_GAP_MS
rs "$G" "$G"
destroy_guest "$G"
nums INC_GAP XL_GAP BASE_GAP NOLIVE_GAP
ratio=$(awk -v a="$INC_GAP" -v b="$XL_GAP" 'BEGIN{printf "%.3f", a/b}')
awk -v r="$ratio" 'BEGIN{exit !(r <= 0.2)}' ||
  fail "incremental gap ${INC_GAP} ms is ${ratio}x of xl save -c's ${XL_GAP} ms (limit 0.2)"
pass "xl_savec_gap_ms=$XL_GAP xckpt_base_gap_ms=$BASE_GAP xckpt_incr_gap_ms=$INC_GAP ratio=$ratio xckpt_nolive_incr_gap_ms=$NOLIVE_GAP nolive_restore_bad=0 full_sweeps=$(sweep_cost)"
