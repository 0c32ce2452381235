# about: without an agent or a profile, --evict zero,unpopulated,free (introspection through the guest's own kallsyms) gives a base <= 1.05x the guest's own used memory; beside the same with --guest-profile, the agent's figure and init_on_free=1 (zero elision alone) in the same boot
. /testbed/xckpt.sh
. /testbed/evict.sh
# used_ck NAME LIST [ARGS]: a fresh base of NAME under LIST; sets SIZE and USED (MemTotal -
# MemFree from the guest's last TICK line on its console before the checkpoint).
used_ck() {
  local g=$1 list=$2; shift 2
  clear_store
  USED=$(guest_used_kib "$g")
  [ -n "$USED" ] && [ "$USED" -gt 0 ] || fail "$g printed no used_kib on its console"
  ck "$g" --full --compress 1 --evict "$list" "$@"; note "$CK_LINE"
  SIZE=$(ck_bytes)
  [ -n "$SIZE" ] || fail "no layer size in: $CK_LINE"
}
# 1. No agent, no profile: introspection through the guest's kallsyms.
WL_MIB=${EVR_WL_MIB:-100}
G=evr
evict_guest "$G" 512 WL_DIRTY_FREE_MIB=64
used_ck "$G" zero,unpopulated,free
VMI_SIZE=$SIZE VMI_USED=$USED VMI_R=$(ratio "$SIZE" "$USED") VMI_PAGES=$(ck_evicted free)
VMI_NOTE=$(ck_note "introspection")
note "introspection: $VMI_NOTE"
echo "$VMI_NOTE" | grep -q "free: by introspection of .*(the guest's kallsyms" ||
  fail "no introspection through the guest's kallsyms: $(grep -a 'note:' "$TBW/.out")"
VMI_MS=$(echo "$VMI_NOTE" | sed -n 's/.* pages read in \([0-9]*\) ms.*/\1/p')
# 1b. The same guest with the operator's profile: both ways read the same kernel.
used_ck "$G" zero,unpopulated,free --guest-profile "$GUEST_PROFILE"
PROF_R=$(ratio "$SIZE" "$USED") PROF_PAGES=$(ck_evicted free)
PROF_NOTE=$(ck_note "introspection")
echo "$PROF_NOTE" | grep -q "free: by introspection of .*($GUEST_PROFILE)" ||
  fail "no introspection with the profile: $(grep -a 'note:' "$TBW/.out")"
PROF_MS=$(echo "$PROF_NOTE" | sed -n 's/.* pages read in \([0-9]*\) ms.*/\1/p')
destroy_guest "$G"
# 2. The agent, same workload.
G=eva
evict_guest "$G" 512 XCKPT_AGENT=1 WL_DIRTY_FREE_MIB=64
used_ck "$G" zero,unpopulated,free --agent-timeout-ms 20000
AGENT_R=$(ratio "$SIZE" "$USED") AGENT_PAGES=$(ck_evicted free)
destroy_guest "$G"
# 3. init_on_free=1, no agent: zero elision alone.
G=evz
evict_guest "$G" 512 WL_DIRTY_FREE_MIB=64 init_on_free=1
used_ck "$G" zero,unpopulated
IOF_R=$(ratio "$SIZE" "$USED")
destroy_guest "$G"
clear_store
figs="vmi_ratio=$VMI_R vmi_bytes=$VMI_SIZE used_kib=$VMI_USED vmi_free_pages=$VMI_PAGES vmi_scan_ms=$VMI_MS profile_ratio=$PROF_R profile_free_pages=$PROF_PAGES profile_scan_ms=$PROF_MS agent_ratio=$AGENT_R agent_free_pages=$AGENT_PAGES init_on_free_ratio=$IOF_R"
note "$figs"
nums VMI_R VMI_SIZE VMI_USED VMI_PAGES VMI_MS PROF_R PROF_PAGES PROF_MS AGENT_R AGENT_PAGES IOF_R
awk -v r="$VMI_R" 'BEGIN{exit !(r <= 1.05)}' ||
  fail "base with introspection is ${VMI_R}x the guest's used memory (want <= 1.05): $figs"
pass "$figs"
