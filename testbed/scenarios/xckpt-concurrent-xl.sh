# about: xckpt refuses to checkpoint a guest that xl migrate is moving, and an xl save -c during xckpt's pre-copy corrupts nothing
. /testbed/xckpt.sh
G=xcx
fresh_guest pvh "$G"
ck "$G"

# 1. xl migrate in progress: xckpt refuses with one line and changes nothing.
printf '#!/bin/sh\nshift\nexec "$@"\n' > "$TBW/fakessh" && chmod +x "$TBW/fakessh"
rm -f "$(clog "$G--incoming")"
MIG_LO=$(last_gen "$G")
xl migrate -s "$TBW/fakessh" "$G" localhost > "$TBW/mig.log" 2>&1 & MIG=$!
CLEANUP='kill $MIG 2>/dev/null'
for _ in $(seq 100); do running_cmd libxl-save-helper --save-domain && break; sleep 0.1; done
running_cmd libxl-save-helper --save-domain || fail "xl migrate did not start its save helper"
LAYERS=$(ls "$STORE/$G" | md5sum)
out REFUSE_S xckpt checkpoint --store "$STORE" "$G" && fail "xckpt checkpointed a guest during xl migrate"
echo "$OUT_LAST" | grep -q "being saved or migrated" || fail "refusal not explained: $OUT_LAST"
[ "$(grep -cv "^ *$" "$TBW/.out")" = 1 ] || fail "refusal is not one line: $(cat "$TBW/.out")"
wait "$MIG" || { cat "$TBW/mig.log"; fail "xl migrate failed beside a refused xckpt"; }
CLEANUP=""
follow_migrated "$G" "$MIG_LO"
[ "$(ls "$STORE/$G" | md5sum)" = "$LAYERS" ] || fail "the refused run changed the store"

# 2. xl save -c starts while xckpt copies (a full checkpoint, so the copy takes a while).
xckpt checkpoint --full --store "$STORE" "$G" > "$TBW/ck.log" 2>&1 & CK=$!
sleep 1
timed SAVEC_S xl save -c "$G" "$TBW/xcx.save"; SAVEC_RC=$?
wait "$CK"; CK_RC=$?
rm -f "$TBW/xcx.save"
note "xckpt beside xl save -c: rc=$CK_RC: $(tail -n 1 "$TBW/ck.log")"
[ "$(guest_state "$G")" != "" ] || fail "guest $G vanished"
check_running "$G" || fail "guest $G left stopped beside xl save -c"
[ "$SAVEC_RC" = 0 ] || [ "$CK_RC" = 0 ] || fail "both xl save -c (rc $SAVEC_RC) and xckpt (rc $CK_RC) failed"
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after the overlap"

# Whatever each tool made of it, the next checkpoint restores bad=0.
sleep 2
ck "$G"; NEXT=$(ck_json .layer.kind)
rs "$G" "$G"
destroy_guest "$G"
pass "refused=1 refuse_s=$REFUSE_S savec_rc=$SAVEC_RC xckpt_rc=$CK_RC next_layer=$NEXT full_sweeps=$(sweep_cost) bad=0"
