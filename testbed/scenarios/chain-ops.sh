# about: xckpt chain ops on a PVH guest: base + 6 incrementals, prune --keep-last 3, merge, one more checkpoint; every kept point restores bad=0; verify --deep
. /testbed/xckpt.sh
G=xops
X="xckpt"
S="--store $STORE"

# sum of "bytes" in `xckpt list G --json` (one layer field per line in pretty JSON)
chain_bytes() { $X list $S "$G" --json | sed -n 's/^      "bytes": \([0-9]*\),*$/\1/p' | awk '{s+=$1} END {print s+0}'; }
chain_ids() { $X list $S "$G" --json | sed -n 's/^      "id": \([0-9]*\),*$/\1/p' | tr '\n' ' ' | sed 's/ $//'; }

fresh_guest pvh "$G"
# GEN_k: the workload's generation just before layer k was taken.
for n in 1 2 3 4 5 6 7; do
  ck "$G"; note "$CK_LINE"; eval "GEN_$n=$CK_GEN"
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
grep -q '"dead_slots": 0' "$TBW/inspect6.json" || fail "merged base layer 6 holds dead page copies"
grep -q '"kind": "base"' "$TBW/inspect6.json" || fail "merged layer 6 is not a base"

# The chain goes on: tracking still refers to layer 7, so this is an incremental.
ck "$G"; note "$CK_LINE"; GEN_8=$CK_GEN
echo "$CK_LINE" | grep -q "layer 8 (Incremental)" || fail "layer 8 after merge is not an incremental: $CK_LINE"
GEN_END=$(last_gen "$G")

out VERIFY_S $X verify $S "$G" --deep || fail "xckpt verify --deep failed: $OUT_LAST"

# Every kept point restores with bad=0 and resumes between its capture and the next one.
rs "$G" "$G@6"; R6=$RS_GEN
rs "$G" "$G@7"; R7=$RS_GEN
rs "$G" "$G"; R8=$RS_GEN; RS_LATEST=$RS_S
[ "$R6" -ge "$GEN_6" ] && [ "$R6" -le "$GEN_7" ] || fail "$G@6 resumed at gen $R6, not in $GEN_6..$GEN_7"
[ "$R7" -ge "$GEN_7" ] && [ "$R7" -le "$GEN_8" ] || fail "$G@7 resumed at gen $R7, not in $GEN_7..$GEN_8"
[ "$R8" -ge "$GEN_8" ] && [ "$R8" -le "$GEN_END" ] || fail "$G@8 resumed at gen $R8, not in $GEN_8..$GEN_END"
destroy_guest "$G"
pass "layers=1..7 kept_after_prune=5,6,7 kept_after_merge=6,7 bytes_7=$BYTES_7 bytes_pruned=$BYTES_PRUNED bytes_merged=$BYTES_MERGED prune_s=$PRUNE_S merge_s=$MERGE_S verify_deep_s=$VERIFY_S restore_s=$RS_LATEST gen6=$R6 gen7=$R7 gen8=$R8 bad=0"
