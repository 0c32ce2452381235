# about: a PVH base with --evict zero,unpopulated,free is <= 1.05x the guest's used memory as the guest's own workload reads it (/proc/meminfo, which must agree with the agent's figure within 16 MiB); adding cache shrinks it and drops the guest's page cache; per policy the base's size beside the raw bytes it evicted and the xl save file (layers compressed with --compress 1, so the figure is the eviction's, not the encoder's choice)
. /testbed/xckpt.sh
. /testbed/evict.sh
G=eur
WL_MIB=${EUR_WL_MIB:-100}
cache_disk 150
evict_guest "$G" 512 XCKPT_AGENT=1 CACHE_MIB=150 WL_DIRTY_FREE_MIB=64

# evicted_raw: the bytes the last checkpoint left out by eviction (evicted pages x 4 KiB, from
# its JSON report), beside ck_bytes, the compressed layer size.
evicted_raw() { ck_json '([.layer.stats.evicted[]] | add // 0) * 4096'; }

sizes=""
for list in unpopulated zero,unpopulated zero,unpopulated,free; do
  clear_store
  # The workload's used_kib on the TICK just before the checkpoint: /proc/meminfo read inside
  # the guest, not by xckpt or its agent.
  WL_USED_KIB=$(guest_used_kib "$G")
  ck "$G" --full --compress 1 --evict "$list" --agent-timeout-ms 20000; note "$CK_LINE"
  B=$(ck_bytes); R=$(evicted_raw); nums B R
  sizes="$sizes size[$list]=$B evicted_raw[$list]=$R"
done
FREE_BYTES=$B
ZERO_BYTES=$(echo "$sizes" | sed -n 's/.* size\[zero,unpopulated\]=\([0-9]*\).*/\1/p')
AGENT_USED_KIB=$(ck_used_kib)
EVICTED_FREE=$(ck_evicted free)
nums WL_USED_KIB AGENT_USED_KIB FREE_BYTES ZERO_BYTES EVICTED_FREE
[ "$EVICTED_FREE" -gt 0 ] || fail "the free policy evicted nothing: $CK_LINE"
# The agent's figure and the workload's agree (both are MemTotal - MemFree, read a moment apart).
DIFF=$((AGENT_USED_KIB - WL_USED_KIB)); [ "$DIFF" -lt 0 ] && DIFF=$((-DIFF))
[ "$DIFF" -le 16384 ] ||
  fail "the agent says the guest uses $AGENT_USED_KIB KiB, the guest's workload read $WL_USED_KIB KiB"
timed SAVE_S xl save -c "$G" "$TBW/eur.save" || fail "xl save -c failed"
XL=$(file_bytes "$TBW/eur.save"); rm -f "$TBW/eur.save"
clear_store
ck "$G" --full --compress 1 --evict zero,unpopulated,free,cache --agent-timeout-ms 20000; note "$CK_LINE"
CACHE_BYTES=$(ck_bytes); CACHE_RAW=$(evicted_raw)
sizes="$sizes size[zero,unpopulated,free,cache]=$CACHE_BYTES evicted_raw[zero,unpopulated,free,cache]=$CACHE_RAW size[xl_save]=$XL"
USED_BEFORE=$(ck_used_kib) USED_AFTER=$(ck_used_after_kib)
nums XL CACHE_BYTES CACHE_RAW USED_BEFORE USED_AFTER
DROPPED_KIB=$((USED_BEFORE - USED_AFTER))
clear_store
destroy_guest "$G"
ratio=$(awk -v a="$FREE_BYTES" -v u="$WL_USED_KIB" 'BEGIN{printf "%.3f", a / (u * 1024)}')
note "sizes:$sizes guest_used_kib=$WL_USED_KIB agent_used_kib=$AGENT_USED_KIB"
awk -v r="$ratio" 'BEGIN{exit !(r <= 1.05)}' ||
  fail "base with free is $FREE_BYTES B = ${ratio}x the guest's used $WL_USED_KIB KiB (want <= 1.05)"
# 64 MiB of the guest's free memory holds old data: only the free policy leaves it out.
[ "$FREE_BYTES" -lt "$ZERO_BYTES" ] || fail "free did not shrink the base: $FREE_BYTES B >= $ZERO_BYTES B without it"
[ "$CACHE_BYTES" -lt "$FREE_BYTES" ] || fail "cache did not shrink the base: $CACHE_BYTES B >= $FREE_BYTES B"
[ "$DROPPED_KIB" -ge 65536 ] || fail "the guest's page cache was not measurably dropped: used $USED_BEFORE -> $USED_AFTER KiB"
pass "used_kib=$WL_USED_KIB agent_used_kib=$AGENT_USED_KIB free_bytes=$FREE_BYTES ratio=$ratio cache_bytes=$CACHE_BYTES cache_dropped_kib=$DROPPED_KIB$sizes"
