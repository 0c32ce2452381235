# about: restores of bases taken under each --evict policy give bad=0; memory the guest allocates right after the agent's report hashes the same after restore
. /testbed/xckpt.sh
. /testbed/evict.sh
G=ecr
WL_MIB=${ECR_WL_MIB:-100}
cache_disk 48
# 8 MiB: allocated and filled within the capture's pre-copy, which the probe of the pfn space
# (2026-12-06) made 1-2 s shorter; a 32 MiB burst still ran at the pause in 3 of 5 bases of
# the CI run of a4af48a.
BURST=8
evict_guest "$G" 512 XCKPT_AGENT=1 CACHE_MIB=48 BURST_MIB=$BURST
figs=""
# A policy's base is taken again, at most twice, if the agent's report reached the burst only
# after the pause (the restored guest then runs that burst itself): that run did not race the
# capture.
# Every attempt's restore is still checked (rs: full sweep, bad=0); the count is printed.
late=0
for list in zero,unpopulated zero,unpopulated,free zero,unpopulated,free,cache; do
  for attempt in 1 2 3; do
    clear_store
    m=$(mark "$G")
    ck "$G" --full --evict "$list" --agent-timeout-ms 20000; note "$CK_LINE"
    sleep 1
    burst=$(after "$G" "$m" | grep -a '^BURST n=' | tail -n 1 | sed -n 's/.*hash=\([0-9a-f]*\).*/\1/p')
    case $list in *free*)
      [ -n "$burst" ] || fail "$list: the guest printed no BURST line after the agent's report"
      ev=$(ck_evicted free); nums ev
      [ "$ev" -gt 0 ] || fail "$list: nothing evicted as free: $CK_LINE" ;;
    esac
    # r before rs: the restored guest may print BURST-CHECK during rs's full sweep.
    r=$(mark "$G")
    rs "$G" "$G"
    [ -n "$burst" ] || break
    i=0
    while ! after "$G" "$r" | grep -aq '^BURST-CHECK' && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    if after "$G" "$r" | grep -aq '^BURST n='; then
      [ "$attempt" -lt 3 ] || fail "$list: the burst ran again after restore three times (it came after the pause)"
      note "$list: the burst came after the pause (the restored guest ran it): taking this base again"
      late=$((late + 1))
      continue
    fi
    check=$(after "$G" "$r" | grep -a '^BURST-CHECK' | head -n 1 | sed -n 's/.*hash=\([0-9a-f]*\).*/\1/p')
    [ "$check" = "$burst" ] || fail "$list: burst pages hash $check after restore, $burst before the pause"
    break
  done
  figs="$figs ${list##*,}:evicted_free=$(ck_evicted free),evicted_cache=$(ck_evicted cache),burst=${burst:-none}"
done
destroy_guest "$G"
pass "bad=0 burst_mib=$BURST$figs burst_after_pause_retakes=$late full_sweeps=$(sweep_cost)"
