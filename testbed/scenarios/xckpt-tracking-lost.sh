# about: log-dirty lost between runs (xckpt untrack, then xl migrate to localhost): the next run is a resync, and restores bad=0
. /testbed/xckpt.sh
G=xtl
rm -rf "$STORE"
start_guest pvh "$G" "$DOMU_MEM" || fail "guest $G did not start"
wait_ticks "$G" 3 60 || fail "workload of $G not ticking"
ck "$G"
xckpt untrack --store "$STORE" "$G" || fail "xckpt untrack failed"
sleep 2
ck "$G"
echo "$CK_LINE" | grep -q Resync || fail "after untrack expected a resync: $CK_LINE"
R1=$(ck_bytes)
# A live migration re-creates the domain (new domid) and turns log-dirty off on the source.
printf '#!/bin/sh\nshift\nexec "$@"\n' > "$TBW/fakessh" && chmod +x "$TBW/fakessh"
xl migrate -s "$TBW/fakessh" "$G" localhost || fail "xl migrate of $G failed"
wait_tick "$G" 60 || fail "workload not running after migrate"
ck "$G"
echo "$CK_LINE" | grep -q Resync || fail "after xl migrate expected a resync: $CK_LINE"
grep -a "note: resync" "$TBW/.out" | head -n 1
R2=$(ck_bytes)
rs "$G" "$G"
destroy_guest "$G"
pass "resync_after_untrack_bytes=$R1 resync_after_migrate_bytes=$R2 bad=0"
