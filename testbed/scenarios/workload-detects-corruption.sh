# about: one flipped byte in a save image must make the restored workload report bad>0
start_guest pvh corrupt "$DOMU_MEM" WL_SWEEP_S=3 || fail "guest corrupt did not start"
wait_ticks corrupt 3 60 || fail "workload in corrupt stopped ticking"
img=$TBW/corrupt.save
timed SAVE_S xl save corrupt "$img" || fail "xl save failed"
out SCAN_S workload scan "$img" $((WL_MIB * 256)) || fail "workload scan of the save image failed"
found=$(echo "$OUT_LAST" | sed -n 's/.* distinct=\([0-9]*\).*/\1/p')
torn=$(echo "$OUT_LAST" | sed -n 's/.* torn=\([0-9]*\).*/\1/p')
nums found torn
# The workload writes pages from one thread, body before header: the save may catch one page
# mid-write (torn); every other page must be whole in the image.
[ "$torn" -le 1 ] && [ $((found + torn)) -eq $((WL_MIB * 256)) ] ||
  fail "save image holds $found whole and $torn torn of the workload's $((WL_MIB * 256)) pages"
out FLIP_S workload corrupt "$img" $((WL_MIB * 128)) || fail "workload corrupt failed: $OUT_LAST"
page=$(echo "$OUT_LAST" | sed -n 's/.* page=\([0-9]*\).*/\1/p')
m=$(mark corrupt)
timed RESTORE_S xl restore "$img" || fail "xl restore of the corrupted image failed"
rm -f "$img"
t0=$(now)
# One verification sweep takes WL_SWEEP_S=3 s; allow a few.
until after corrupt "$m" | grep -aq '^BAD '; do
  awk -v a="$t0" -v b="$(now)" 'BEGIN{exit !(b-a > 30)}' && fail "no BAD page reported within 30 s of the restore"
  sleep 0.5
done
detect_s=$(since "$t0")
wait_ticks corrupt 1 30 || fail "workload stopped after detecting the corruption"
bad=$(tick_max corrupt "$m" bad)
[ "$bad" -gt 0 ] || fail "BAD line seen but TICK lines still say bad=0"
badline=$(after corrupt "$m" | grep -a '^BAD ' | head -n 1)
echo "$badline" | grep -q "page=$page " || fail "workload flagged another page than the flipped one: $badline"
pass "flipped_page=$page bad=$bad detect_s=$detect_s pages_in_image=$found torn_in_image=$torn"
