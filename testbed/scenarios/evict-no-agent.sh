# about: a guest without xckpt-agent still checkpoints with zero,unpopulated only, and the summary says why free was skipped
. /testbed/xckpt.sh
. /testbed/evict.sh
G=ena
fresh_guest pvh "$G"
ck "$G"; note "$CK_LINE"
why=$(ck_note "free: skipped")
[ -n "$why" ] || fail "the summary does not say why free was skipped: $(grep -a 'note:' "$TBW/.out")"
FREE=$(ck_evicted free); nums FREE
[ "$FREE" = 0 ] || fail "pages evicted as free without an agent: $CK_LINE"
ZERO=$(ck_json .layer.stats.zero_pages); nums ZERO
rs "$G" "$G"
destroy_guest "$G"
pass "ck_s=$CK_S zero_pages=$ZERO full_sweeps=$(sweep_cost) bad=0 note=\"$(echo "$why" | sed 's/^ *note: //')\""
