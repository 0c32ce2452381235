# about: a guest without xckpt-agent checkpoints with the default policies plus cache: free comes from the introspection (the guest's own kallsyms), cache is skipped with a note saying it needs the agent; restore bad=0
. /testbed/xckpt.sh
. /testbed/evict.sh
G=ena
fresh_guest pvh "$G"
ck "$G" --evict zero,unpopulated,free,cache; note "$CK_LINE"
how=$(ck_note "free: by introspection of .*(the guest's kallsyms")
[ -n "$how" ] || fail "free did not come from the introspection: $(grep -a 'note:' "$TBW/.out")"
echo "$how" | grep -q "cache: skipped, dropping the guest's page cache needs xckpt-agent" ||
  fail "the summary does not say why cache was skipped: $how"
CACHE=$(ck_evicted cache); FREE=$(ck_evicted free); nums CACHE FREE
[ "$CACHE" = 0 ] || fail "pages evicted as cache without an agent: $CK_LINE"
ZERO=$(ck_json .layer.stats.zero_pages); nums ZERO
rs "$G" "$G"
destroy_guest "$G"
pass "ck_s=$CK_S zero_pages=$ZERO evicted_free=$FREE full_sweeps=$(sweep_cost) bad=0 note=\"$(echo "$how" | sed 's/^ *note: //' | cut -c1-200)\""
