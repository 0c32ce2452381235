# Helpers of the two-host scenarios (testbed/run pair; docs/testbed.md "Two hosts"), sourced
# after lib.sh and group.sh on host 1's dom0. Host 2 is reached through Slurm.
[ -n "${TB_PAIR_HOST:-}" ] || fail "needs two hosts: run it with testbed/run pair $SCN"
[ -f /run/tb-pair-ready ] || fail "the pair did not come up (see the TB-PAIR lines of both serial logs)"
HPC_STORE=/shared/store
# srun bounded by SRUN_TIMEOUT seconds (a lost task must fail the step, not the whole boot).
SRUN_TIMEOUT=${SRUN_TIMEOUT:-300}
sr() { timeout "$SRUN_TIMEOUT" srun "$@" < /dev/null; }
# on2 CMD...: run a shell command on host 2 through Slurm.
on2() { sr -N1 -n1 -w xhost2 sh -c "$*"; }
# on2lib CMD...: the same with the scenario helpers loaded (a `fail` there prints its verdict
# line and exits non-zero; the caller reads it).
on2lib() {
  on2 "export SCN=$SCN-h2 RESULT=/tmp/tb/$SCN-h2.result; mkdir -p /tmp/tb; . /testbed/lib.sh; . /testbed/group.sh; $*"
}
# step WHAT: a progress line on the console (the scenario's log reaches it only at the end).
step() { note "step: $*"; echo "TB-STEP $SCN $* uptime=$(now)" > /dev/console; }

# hpc_start_pair: the job: guest hpong on host 2, hping on host 1, bridged to the link,
# playing ping-pong across the hosts; an empty store on /shared.
hpc_start_pair() {
  rm -rf "$HPC_STORE" /shared/hostfile /shared/*-before.log
  step "guest hpong on host 2"
  setup_bridge
  out PONG_S on2 "sh /testbed/pair.sh guest hpong 00:16:3e:77:00:02 10.9.0.2 pong" ||
    fail "guest hpong on host 2 did not start: $OUT_LAST"
  step "guest hping on host 1"
  CFG_EXTRA="vif=['mac=00:16:3e:77:00:03,bridge=xenbr0,script=$VIF_SCRIPT']"
  start_guest pvh hping "$DOMU_MEM" WL_MODS=xen-netfront WL_IP=10.9.0.3 WL_PP_ROLE=ping WL_PP_PEER=10.9.0.2 ||
    fail "guest hping did not start"
  CFG_EXTRA=""
  wait_pp hping 3 180 0 ||
    fail "ping-pong across the hosts did not start (hping: $(after hping 0 | grep -a '^PP' | tail -n 2 | tr '\n' ' '))"
}

# hpc_ckpt VAR [ENV=VALUE on host 2...]: a group checkpoint of hping and hpong through Slurm,
# one xckpt per host; its time in VAR. Host 2's task gets the extra environment.
hpc_ckpt() {
  local var=$1; shift
  step "group checkpoint through srun"
  # --kill-on-bad-exit=0: a task that dies must not make Slurm kill the others; xckpt's own
  # protocol handles it.
  out "$var" sr -N2 --ntasks-per-node=1 --kill-on-bad-exit=0 sh -c \
    "[ \"\$SLURM_NODEID\" = 1 ] && export $* XCKPT_ON2=1; exec xckpt checkpoint --store $HPC_STORE --group hjob --slurm --no-disk -q hping hpong"
}

# hpc_no_trouble WHEN: no reconnect, error or bad message on either side after the first
# connection.
hpc_no_trouble() {
  local up t
  up=$(after hping 0 | grep -an -m 1 '^PPUP' | cut -d: -f1)
  t=$(after hping "${up:-0}" | grep -aE '^(PPERR|PPBAD)|bad=[1-9]'
      on2lib "u=\$(after hpong 0 | grep -an -m 1 '^PPUP' | cut -d: -f1); after hpong \${u:-0} | grep -aE '^(PPERR|PPBAD)|bad=[1-9]'")
  [ -z "$t" ] || fail "ping-pong saw errors $1: $(echo "$t" | head -n 2 | tr '\n' ' ')"
  [ "$(after hping 0 | grep -ac '^PPUP')" = 1 ] || fail "ping reconnected $1"
}
