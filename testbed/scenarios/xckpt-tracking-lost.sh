# about: log-dirty turned off between runs (xckpt untrack): the next run is a resync that stores only what differs, and restores bad=0
. /testbed/xckpt.sh
G=xtl
fresh_guest pvh "$G"
ck "$G"
BASE=$(ck_bytes)
xckpt untrack --store "$STORE" "$G" || fail "xckpt untrack failed"
sleep 2
ck "$G"
echo "$CK_LINE" | grep -q Resync || fail "after untrack expected a resync: $CK_LINE"
grep -a "note: resync" "$TBW/.out" | head -n 1
RESYNC=$(ck_bytes)
sleep 2
ck "$G"
echo "$CK_LINE" | grep -q Incremental || fail "after the resync expected an incremental: $CK_LINE"
rs "$G" "$G"
destroy_guest "$G"
pass "base_bytes=$BASE resync_bytes=$RESYNC bad=0"
