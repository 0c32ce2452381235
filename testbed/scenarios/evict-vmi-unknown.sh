# about: a profile that does not match the guest's kernel: one note, nothing evicted as free, every page stored, restore bad=0
. /testbed/xckpt.sh
. /testbed/evict.sh
G=evu
# The System.map with linux_banner moved: parses, but matches no kernel in the guest.
sed 's/^[0-9a-f]* \(.\) linux_banner$/ffffffff81000800 \1 linux_banner/' "$GUEST_PROFILE" > "$TBW/wrong.map"
grep -q '^ffffffff81000800 . linux_banner$' "$TBW/wrong.map" || fail "cannot make the wrong profile"
evict_guest "$G" 256 WL_DIRTY_FREE_MIB=32
ck "$G" --full --evict zero,unpopulated,free --guest-profile "$TBW/wrong.map"; note "$CK_LINE"
why=$(ck_note "introspection")
[ -n "$why" ] || fail "no note about the introspection: $(grep -a 'note:' "$TBW/.out")"
[ "$(grep -ac 'note: .*introspection' "$TBW/.out")" = 1 ] || fail "more than one introspection note"
echo "$why" | grep -q "every page stored" || fail "the note does not say every page was stored: $why"
[ "$(ck_evicted free)" = 0 ] || fail "pages evicted as free with a wrong profile: $CK_LINE"
rs "$G" "$G"
destroy_guest "$G"
pass "ck_s=$CK_S bad=0 note=\"$(echo "$why" | sed 's/^ *note: //')\""
