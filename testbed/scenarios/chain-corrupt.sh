# about: flip one byte in a middle xckpt layer: verify exits 2 naming it, restore of the damaged point refuses and creates no domain, a later point refuses the same way or (the damaged frame wholly superseded) restores verified in full, an earlier point still restores bad=0
. /testbed/xckpt.sh
G=xcor
S="--store $STORE"
fresh_guest pvh "$G"
for n in 1 2 3 4; do ck "$G"; note "$CK_LINE"; sleep 2; done
xckpt verify $S "$G" || fail "the chain does not verify before the damage"

# Flip one byte of layer 2's page data (frames start at byte 32). A checkpoint may have
# compacted the layer into layer-000002.rK.xcl: take the file the manifest names.
F=$(ls "$STORE/$G"/layer-000002*.xcl 2>/dev/null | head -n 1)
[ -f "$F" ] || fail "no layer 2 file in $STORE/$G: $(ls "$STORE/$G" | tr '\n' ' ')"
FN=${F##*/}
OFF=4200
v=$(dd if="$F" bs=1 skip=$OFF count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
nv=$(( v ^ 1 ))
printf "\\$(printf %o "$nv")" | dd of="$F" bs=1 seek=$OFF count=1 conv=notrunc 2>/dev/null
w=$(dd if="$F" bs=1 skip=$OFF count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
[ "$w" = "$nv" ] || fail "could not flip byte $OFF of $F ($v -> $w)"

xckpt verify $S "$G" > "$TBW/verify.out" 2>&1; VRC=$?
cat "$TBW/verify.out"
[ "$VRC" = 2 ] || fail "xckpt verify exited $VRC on a damaged chain (expected 2)"
grep -q "layer 2 is damaged" "$TBW/verify.out" && grep -q "$FN" "$TBW/verify.out" ||
  fail "xckpt verify did not name layer 2: $(cat "$TBW/verify.out")"
grep -q -- "--full" "$TBW/verify.out" || fail "xckpt verify did not say what to do"
xckpt verify $S "$G" --deep > /dev/null 2>&1; DRC=$?
[ "$DRC" = 2 ] || fail "xckpt verify --deep exited $DRC on a damaged chain"

destroy_guest "$G"
# refused SPEC: the restore of SPEC must fail naming layer 2 and leave no domain.
refused() {
  xckpt restore $S "$1" > "$TBW/restore.out" 2>&1 && return 1
  cat "$TBW/restore.out"
  grep -q "layer 2" "$TBW/restore.out" || fail_verdict "restore of $1 refused without naming layer 2: $(cat "$TBW/restore.out")"
  xl domid "$G" > /dev/null 2>&1 && fail_verdict "restore of $1 created a domain"
  xl list | grep -q "^$G " && fail_verdict "restore of $1 left a domain"
  return 0
}
# At @2 every page of layer 2 is live: its damaged frame is needed.
refused "$G@2" || fail_verdict "restore of $G@2 over its damaged frame succeeded"
# @4 reads layer 2's damaged frame only for pages layers 3 and 4 did not write again: restore
# decodes only the frames it needs, so @4 is refused, or (every page of that frame superseded)
# it restores, and then the whole buffer is verified at @4's generation.
m=$(mark "$G")
if refused "$G@4"; then
  AT4=refused
else
  # shellcheck disable=SC2046
  verify_resumed "$G" "$m" $(gen_window "$G" "$G@4") "xckpt restore $G@4 (damaged frame superseded)"
  AT4=restored_gen_$RESUME_GEN
  destroy_guest "$G"
fi

# A point that does not build on layer 2 still restores.
xckpt verify $S "$G@1" || fail "verify of $G@1 (below the damage) failed"
rs "$G" "$G@1"
destroy_guest "$G"
pass "verify_rc=$VRC verify_deep_rc=$DRC named=$FN restore_at2=refused restore_at4=$AT4 domain_created=0 restore_at1_gen=$RS_GEN bad=0"
