# about: log-dirty lost between runs (xckpt untrack, xl save -c, xl migrate): each next run is a resync that restores bad=0, and xl still saves and migrates a guest xckpt has checkpointed
. /testbed/xckpt.sh
G=xtl
fresh_guest pvh "$G"
ck "$G"
BASE=$(ck_bytes)

# expect_kind KIND WHY: the last checkpoint was a KIND layer (its JSON report's layer.kind).
expect_kind() {
  [ "$(ck_json .layer.kind)" = "$1" ] || fail "$2: expected a $1 layer: $CK_LINE"
}

# 1. xckpt untrack turns log-dirty off.
xckpt untrack --store "$STORE" "$G" || fail "xckpt untrack failed"
sleep 2
ck "$G"; expect_kind resync "after untrack"
grep -a "note: resync" "$TBW/.out" | head -n 1
RESYNC=$(ck_bytes)
sleep 2
ck "$G"; expect_kind incremental "after the resync"

# 2. xl save -c: xl must suspend the guest (xenstored was told of xckpt's resumes), and libxc
#    turns log-dirty off when its save ends.
m=$(mark "$G")
timed SAVEC_S xl save -c "$G" "$TBW/xtl.save" ||
  fail "xl save -c of a guest xckpt checkpointed failed"
rm -f "$TBW/xtl.save"
wait_ticks "$G" 2 60 "$m" || fail "workload of $G stopped after xl save -c"
check_bad "$G" "$m" || fail "workload of $G saw bad pages after xl save -c"
ck "$G"; expect_kind resync "after xl save -c"
rs "$G" "$G"

# 3. xl migrate of the restored guest: a new domain, so the next run resyncs.
xl_migrate_local "$G"
ck "$G"; expect_kind resync "after xl migrate"
rs "$G" "$G"
destroy_guest "$G"
pass "base_bytes=$BASE untrack_resync_bytes=$RESYNC savec_s=$SAVEC_S migrate_s=$MIGRATE_S migrate_gap_ms=$MIGRATE_GAP_MS full_sweeps=$(sweep_cost) bad=0"
