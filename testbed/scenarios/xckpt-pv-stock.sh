# about: PV guest on Xen without shadow paging: a live checkpoint fails in one line naming --no-live; --no-live checkpoints (base + resync) restore bad=0
. /testbed/xckpt.sh
[ "$TB_VARIANT" = shadow ] &&
  fail "needs the stock variant (no shadow paging, so no PV log-dirty): testbed/run test xckpt-pv-stock"
G=xpvs
fresh_guest pv "$G"
m=$(mark "$G")
if xckpt checkpoint --store "$STORE" "$G" > "$TBW/live.out" 2>&1; then
  fail "a live checkpoint of a PV guest succeeded without shadow paging"
fi
LIVE_MSG=$(cat "$TBW/live.out")
note "live: $LIVE_MSG"
[ "$(wc -l < "$TBW/live.out")" -eq 1 ] || fail "the refusal is not one line: $LIVE_MSG"
case "$LIVE_MSG" in *"log-dirty is not supported"*--no-live*) ;; *) fail "the refusal does not explain: $LIVE_MSG" ;; esac
wait_ticks "$G" 2 60 "$m" || fail "workload of $G stopped after the refused checkpoint"
check_running "$G" || fail "$G left paused after the refused checkpoint"
ck "$G" --no-live; note "$CK_LINE"; BASE_GAP=$CK_GAP_MS; BASE_BYTES=$(ck_bytes)
sleep 3
ck "$G" --no-live; note "$CK_LINE"; SECOND_GAP=$CK_GAP_MS; SECOND_BYTES=$(ck_bytes)
rs "$G" "$G"; GEN_LATEST=$RS_GEN
rs "$G" "$G@1"; GEN_AT1=$RS_GEN
xckpt verify --store "$STORE" "$G" || fail "xckpt verify $G failed"
destroy_guest "$G"
pass "live_refused=1 nolive_base_gap_ms=$BASE_GAP nolive_base_bytes=$BASE_BYTES nolive_second_gap_ms=$SECOND_GAP nolive_second_bytes=$SECOND_BYTES gen_latest=$GEN_LATEST gen_at1=$GEN_AT1 full_sweeps=$(sweep_cost) bad=0"
