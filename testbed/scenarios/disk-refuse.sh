# about: a disk no back-end can snapshot (a file on tmpfs) makes xckpt checkpoint fail before any pause, with one clear line; --no-disk takes a memory-only layer
. /testbed/xckpt.sh
clear_store
IMG=$TBW/refuse.img
truncate -s 16M "$IMG"
CFG_EXTRA="disk=['format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=$IMG']"
start_guest pvh grefuse "$DOMU_MEM" || fail "guest grefuse did not start"
CFG_EXTRA=""
wait_ticks grefuse 3 60 || fail "workload of grefuse not ticking"
m=$(mark grefuse)
if out REF_S xckpt checkpoint --store "$STORE" grefuse; then
  fail "checkpoint of a guest with an unsnapshottable disk succeeded"
fi
MSG=$OUT_LAST
echo "$MSG" | grep -q 'disk xvdb' && echo "$MSG" | grep -q 'cannot be snapshotted' &&
  echo "$MSG" | grep -q 'nothing was paused' || fail "unclear refusal: $MSG"
wait_ticks grefuse 3 60 "$m" || fail "workload of grefuse stopped after the refusal"
GAP=$(guest_gap grefuse "$m"); nums GAP
check_running grefuse || fail "the refused checkpoint left grefuse stopped"
[ "$GAP" -lt 1000 ] || fail "the guest saw a ${GAP} ms gap: was it paused?"
[ -z "$(ls "$STORE/grefuse" 2>/dev/null | grep layer)" ] || fail "a layer was written"
ck grefuse --no-disk
note "$CK_LINE"
destroy_guest grefuse
pass "refused_in_s=$REF_S guest_gap_ms=$GAP no_disk_layer=yes message_ok=yes"
