# about: restores of bases taken under each --evict policy give bad=0; memory the guest allocates right after the agent's report hashes the same after restore
. /testbed/xckpt.sh
. /testbed/evict.sh
G=ecr
WL_MIB=${ECR_WL_MIB:-100}
cache_disk 48
evict_guest "$G" 512 XCKPT_AGENT=1 CACHE_MIB=48 BURST_MIB=32
figs=""
for list in zero,unpopulated zero,unpopulated,free zero,unpopulated,free,cache; do
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
  if [ -n "$burst" ]; then
    i=0
    while ! after "$G" "$r" | grep -aq '^BURST-CHECK' && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    after "$G" "$r" | grep -aq '^BURST n=' && fail "$list: the burst ran again after restore (it came after the pause)"
    check=$(after "$G" "$r" | grep -a '^BURST-CHECK' | head -n 1 | sed -n 's/.*hash=\([0-9a-f]*\).*/\1/p')
    [ "$check" = "$burst" ] || fail "$list: burst pages hash $check after restore, $burst before the pause"
  fi
  figs="$figs ${list##*,}:evicted_free=$(ck_evicted free),evicted_cache=$(ck_evicted cache),burst=${burst:-none}"
done
destroy_guest "$G"
pass "bad=0 burst_mib=32$figs full_sweeps=$(sweep_cost)"
