# about: an incremental taken 10 s after the previous one is <= 10% of the xl save file of the same guest
. /testbed/xckpt.sh
G=xis
WL_RATE=${XIS_RATE:-128}
fresh_guest pvh "$G"
ck "$G"
sleep 10
ck "$G"; INC=$(ck_bytes)
timed SAVEC_S xl save -c "$G" "$TBW/is.save" || fail "xl save -c failed"
XL=$(file_bytes "$TBW/is.save"); rm -f "$TBW/is.save"
destroy_guest "$G"
ratio=$(awk -v a="$INC" -v b="$XL" 'BEGIN{printf "%.3f", a/b}')
awk -v r="$ratio" 'BEGIN{exit !(r <= 0.1)}' || fail "incremental ${INC} B is ${ratio}x of xl save's ${XL} B"
pass "incremental_bytes=$INC xl_save_bytes=$XL ratio=$ratio workload_rate_pages_s=$WL_RATE"
