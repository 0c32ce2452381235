# about: no agent and no profile, free by introspection (the guest's own kallsyms) while the guest re-allocates 32 MiB every second (a burst right after the scan): restore gives bad=0 and every burst region hashes as the guest wrote it
. /testbed/xckpt.sh
. /testbed/evict.sh
WL_MIB=${EVC_WL_MIB:-100}
G=evc
evict_guest "$G" 512 WL_DIRTY_FREE_MIB=64 BURST_MIB=32 BURST_EVERY_S=1
i=0
while ! after "$G" | grep -aq '^BURST n=' && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
after "$G" | grep -aq '^BURST n=' || {
  note "first console lines of $G: $(after "$G" | grep -av '^TICK\|^GAP' | head -n 20)"
  fail "the guest printed no BURST line"
}
figs=""
for n in 1; do
  clear_store
  ck "$G" --full --evict zero,unpopulated,free; note "$CK_LINE"
  note "$(ck_note introspection)"
  [ -n "$(ck_note "free: by introspection")" ] || fail "run $n: no introspection: $(ck_note introspection)"
  [ -n "$(ck_note "the guest's kallsyms")" ] || fail "run $n: the symbols did not come from the guest's kallsyms: $(ck_note introspection)"
  [ "$(ck_evicted free)" -gt 0 ] || fail "run $n: nothing evicted as free: $CK_LINE"
  evicted=$(ck_evicted free)
  # rs: the restore, then the workload's own full sweep of its buffer at a generation in
  # the checkpoint's window (verify_resumed), bad=0.
  rs "$G" "$G"
  r=$(mark "$G")
  i=0
  while [ "$(after "$G" "$r" | grep -ac '^BURST-CHECK')" -lt 2 ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
  checks=$(after "$G" "$r" | grep -a '^BURST-CHECK')
  [ -n "$checks" ] || fail "run $n: no BURST-CHECK after the restore"
  # Every region checked after the restore hashes as the BURST line that filled it said.
  echo "$checks" | while read -r _ nn hh; do
    after "$G" | grep -aq "^BURST $nn $hh " || { echo "$nn $hh" > "$TBW/evc.bad"; }
  done
  [ -f "$TBW/evc.bad" ] && fail "run $n: burst region $(cat "$TBW/evc.bad") after restore matches no BURST line"
  first=$(echo "$checks" | head -n 1 | cut -d' ' -f2)
  figs="$figs run$n:evicted_free=$evicted,first_check_$first,checks=$(echo "$checks" | wc -l)"
  sleep 3
done
destroy_guest "$G"
pass "bad=0 burst_mib=32$figs"
