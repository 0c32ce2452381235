# about: workload at 128 pages/s (a sixteenth of the default 2048): an incremental taken 10 s after the previous one is <= 10% of the xl save file of the same guest; the same ratio at the default 2048 pages/s is reported beside it (no bar)
. /testbed/xckpt.sh
G=xis

# incr_ratio RATE: a fresh guest writing RATE pages/s, base, 10 s, incremental, xl save -c.
# Sets INC (the incremental's bytes, from xckpt's JSON report), XL (the xl save file's bytes,
# stat) and RATIO.
incr_ratio() {
  local rate=$WL_RATE
  WL_RATE=$1; fresh_guest pvh "$G"; WL_RATE=$rate
  ck "$G"
  sleep 10
  ck "$G"; INC=$(ck_bytes)
  [ "$(ck_json .layer.kind)" = incremental ] || fail "the second checkpoint is not an incremental: $CK_LINE"
  timed SAVEC_S xl save -c "$G" "$TBW/is.save" || fail "xl save -c failed"
  XL=$(file_bytes "$TBW/is.save"); rm -f "$TBW/is.save"
  destroy_guest "$G"
  nums INC XL
  [ "$XL" -gt 0 ] || fail "xl save -c wrote an empty file"
  RATIO=$(awk -v a="$INC" -v b="$XL" 'BEGIN{printf "%.3f", a/b}')
}

RATE=${XIS_RATE:-128} DEFAULT=$WL_RATE
incr_ratio "$RATE"
INC_LOW=$INC XL_LOW=$XL RATIO_LOW=$RATIO
incr_ratio "$DEFAULT"
note "at $DEFAULT pages/s (no bar): incremental $INC B, xl save $XL B, ratio $RATIO"
awk -v r="$RATIO_LOW" 'BEGIN{exit !(r <= 0.1)}' ||
  fail "at $RATE pages/s the incremental ${INC_LOW} B is ${RATIO_LOW}x of xl save's ${XL_LOW} B (limit 0.1; at $DEFAULT pages/s: ratio $RATIO)"
pass "incremental_bytes=$INC_LOW xl_save_bytes=$XL_LOW ratio=$RATIO_LOW workload_rate_pages_s=$RATE default_rate_pages_s=$DEFAULT default_rate_incremental_bytes=$INC default_rate_xl_save_bytes=$XL default_rate_ratio=$RATIO"
