# about: a PVH base with --evict zero,unpopulated,free is <= 1.05x the guest's used memory; adding cache shrinks it and drops the guest's page cache; base sizes under every policy beside xl save
. /testbed/xckpt.sh
. /testbed/evict.sh
G=eur
WL_MIB=${EUR_WL_MIB:-100}
cache_disk 150
evict_guest "$G" 512 XCKPT_AGENT=1 CACHE_MIB=150 WL_DIRTY_FREE_MIB=64
sizes=""
for list in unpopulated zero,unpopulated zero,unpopulated,free; do
  clear_store
  ck "$G" --full --evict "$list" --agent-timeout-ms 20000; note "$CK_LINE"
  sizes="$sizes $list=$(ck_bytes)"
done
FREE_BYTES=$(ck_bytes)
ZERO_BYTES=$(echo "$sizes" | sed -n 's/.* zero,unpopulated=\([0-9]*\).*/\1/p')
USED_KIB=$(ck_used_kib)
[ -n "$USED_KIB" ] || fail "no guest figures in the free checkpoint's notes (agent not answering?): $(ck_note free)"
[ "$(ck_evicted free)" -gt 0 ] || fail "the free policy evicted nothing: $CK_LINE"
timed SAVE_S xl save -c "$G" "$TBW/eur.save" || fail "xl save -c failed"
XL=$(file_bytes "$TBW/eur.save"); rm -f "$TBW/eur.save"
clear_store
ck "$G" --full --evict zero,unpopulated,free,cache --agent-timeout-ms 20000; note "$CK_LINE"
CACHE_BYTES=$(ck_bytes)
sizes="$sizes zero,unpopulated,free,cache=$CACHE_BYTES xl_save=$XL"
USED_BEFORE=$(ck_used_kib) USED_AFTER=$(ck_used_after_kib)
[ -n "$USED_AFTER" ] || fail "no after-drop figures in the cache checkpoint's notes: $(ck_note cache)"
DROPPED_KIB=$((USED_BEFORE - USED_AFTER))
clear_store
destroy_guest "$G"
ratio=$(awk -v a="$FREE_BYTES" -v u="$USED_KIB" 'BEGIN{printf "%.3f", a / (u * 1024)}')
note "sizes:$sizes used_kib=$USED_KIB"
awk -v r="$ratio" 'BEGIN{exit !(r <= 1.05)}' ||
  fail "base with free is $FREE_BYTES B = ${ratio}x the guest's used $USED_KIB KiB (want <= 1.05)"
# 64 MiB of the guest's free memory holds old data: only the free policy leaves it out.
[ "$FREE_BYTES" -lt "$ZERO_BYTES" ] || fail "free did not shrink the base: $FREE_BYTES B >= $ZERO_BYTES B without it"
[ "$CACHE_BYTES" -lt "$FREE_BYTES" ] || fail "cache did not shrink the base: $CACHE_BYTES B >= $FREE_BYTES B"
[ "$DROPPED_KIB" -ge 65536 ] || fail "the guest's page cache was not measurably dropped: used $USED_BEFORE -> $USED_AFTER KiB"
pass "used_kib=$USED_KIB free_bytes=$FREE_BYTES ratio=$ratio cache_bytes=$CACHE_BYTES cache_dropped_kib=$DROPPED_KIB$(echo "$sizes" | sed 's/ \([a-z,_]*\)=/ size[\1]=/g')"
