# about: xckpt chain ops on a PVH guest: base + 6 incrementals, prune --keep-last 3, merge, one more checkpoint; every kept point restores bad=0; verify --deep
. /testbed/xckpt.sh
G=xops
X="xckpt"
S="--store $STORE"

# From `xckpt list G --json`, read with jq: the sum of the layers' bytes, and their ids.
chain_bytes() { $X list $S "$G" --json | jq -e '[.layers[].bytes] | add'; }
chain_ids() { $X list $S "$G" --json | jq -er '[.layers[].id | tostring] | join(" ")'; }

fresh_guest pvh "$G"
for n in 1 2 3 4 5 6 7; do
  ck "$G"; note "$CK_LINE"
  sleep 2
done
[ "$(chain_ids)" = "1 2 3 4 5 6 7" ] || fail "chain has layers $(chain_ids), expected 1..7"
BYTES_7=$(chain_bytes)

out PRUNE_S $X prune $S "$G" --keep-last 3 || fail "xckpt prune failed: $OUT_LAST"
[ "$(chain_ids)" = "5 6 7" ] || fail "after prune --keep-last 3 the chain has layers $(chain_ids)"
BYTES_PRUNED=$(chain_bytes)

out MERGE_S $X merge $S "$G" --upto 6 || fail "xckpt merge failed: $OUT_LAST"
[ "$(chain_ids)" = "6 7" ] || fail "after merge --upto 6 the chain has layers $(chain_ids)"
BYTES_MERGED=$(chain_bytes)
$X inspect $S "$G@6" --json > "$TBW/inspect6.json" || fail "xckpt inspect $G@6 failed"
DEAD6=$(json "$TBW/inspect6.json" .frames.dead_slots); nums DEAD6
[ "$DEAD6" = 0 ] || fail "merged base layer 6 holds $DEAD6 dead page copies"
[ "$(json "$TBW/inspect6.json" .layer.kind)" = base ] || fail "merged layer 6 is not a base"

# The chain goes on: tracking still refers to layer 7, so this is an incremental.
ck "$G"; note "$CK_LINE"
[ "$CK_ID $(ck_json .layer.kind)" = "8 incremental" ] || fail "layer 8 after merge is not an incremental: $CK_LINE"

out VERIFY_S $X verify $S "$G" --deep || fail "xckpt verify --deep failed: $OUT_LAST"

# Every kept point restores (a full sweep, bad=0) and resumes within its own checkpoint's
# generation window (rs: verify_resumed).
rs "$G" "$G@6"; R6=$RS_GEN
rs "$G" "$G@7"; R7=$RS_GEN
rs "$G" "$G"; R8=$RS_GEN; RS_LATEST=$RS_S
destroy_guest "$G"
nums BYTES_7 BYTES_PRUNED BYTES_MERGED
pass "full_sweeps=$(sweep_cost) layers=1..7 kept_after_prune=5,6,7 kept_after_merge=6,7 bytes_7=$BYTES_7 bytes_pruned=$BYTES_PRUNED bytes_merged=$BYTES_MERGED prune_s=$PRUNE_S merge_s=$MERGE_S verify_deep_s=$VERIFY_S restore_s=$RS_LATEST gen6=$R6 gen7=$R7 gen8=$R8 bad=0"
