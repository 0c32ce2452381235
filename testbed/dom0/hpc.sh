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
# playing ping-pong across the hosts (their boot times in PONG_BOOT, PING_BOOT); an empty
# store on /shared. With HPC_DISK1 / HPC_DISK2 (ext4 images, made here on host 1 / host 2),
# each guest also writes its log to its disk.
hpc_start_pair() {
  # A retried scenario starts clean on both hosts.
  destroy_guest hping > /dev/null; destroy_guest hpong > /dev/null
  on2 "xl destroy hpong; xl destroy hping" > /dev/null 2>&1 || true
  # A scenario before this one may have run either guest on either host (a swapped
  # restore): its console log there would read as this scenario's.
  local logs="/var/log/xen/console/guest-hping.log /var/log/xen/console/guest-hpong.log"
  rm -f $logs; on2 "rm -f $logs" > /dev/null 2>&1 || true
  rm -rf "$HPC_STORE" /shared/hostfile /shared/*-before.log
  # An earlier scenario's overlays would read as this one's.
  rm -rf /mnt/xfs/disks; on2 "rm -rf /mnt/xfs/disks" > /dev/null 2>&1 || true
  if [ -n "${HPC_DISK1:-}" ]; then
    mkdir -p "$(dirname "$HPC_DISK1")" && rm -f "$(dirname "$HPC_DISK1")"/* &&
      truncate -s 64M "$HPC_DISK1" && /usr/sbin/mke2fs -q -t ext4 -F "$HPC_DISK1" ||
      fail "cannot make $HPC_DISK1 on host 1"
  fi
  if [ -n "${HPC_DISK2:-}" ]; then
    on2lib "setup_xfs && truncate -s 64M $HPC_DISK2 && /usr/sbin/mke2fs -q -t ext4 -F $HPC_DISK2 && echo DISK2-OK" |
      grep -q DISK2-OK || fail "cannot make $HPC_DISK2 on host 2 (XFS on its /dev/vda): $(on2 'dmesg | tail -n 3' | tr '\n' ' ')"
  fi
  step "guest hpong on host 2"
  setup_bridge
  out PONG_S on2 "sh /testbed/pair.sh guest hpong 00:16:3e:77:00:02 10.9.0.2 pong '' ${HPC_DISK2:-}" ||
    fail "guest hpong on host 2 did not start: $OUT_LAST"
  PONG_BOOT=$(sed -n 's/^guest hpong up boot_s=//p' "$TBW/.out")
  step "guest hping on host 1"
  CFG_EXTRA="vif=['mac=00:16:3e:77:00:03,bridge=xenbr0,script=$VIF_SCRIPT']"
  local mods=xen-netfront dlog=""
  if [ -n "${HPC_DISK1:-}" ]; then
    CFG_EXTRA="$CFG_EXTRA
disk=['format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=$HPC_DISK1']"
    mods=xen-netfront,$DLOG_MODS dlog="WL_MOUNT=/dev/xvda WL_DLOG=/mnt/log WL_DLOG_MS=50"
  fi
  # shellcheck disable=SC2086 # $dlog is words
  start_guest pvh hping "$DOMU_MEM" WL_MODS="$mods" WL_IP=10.9.0.3 WL_PP_ROLE=ping WL_PP_PEER=10.9.0.2 $dlog ||
    fail "guest hping did not start"
  CFG_EXTRA=""""
  PING_BOOT=$BOOT_S
  wait_pp hping 3 180 0 ||
    fail "ping-pong across the hosts did not start (hping: $(after hping 0 | grep -a '^PP' | tail -n 2 | tr '\n' ' '))"
}

# hpc_ckpt VAR [ENV=VALUE on host 2...]: a group checkpoint of hping and hpong through Slurm,
# one xckpt per host (testbed/dom0/hpc-task.sh, which also has xl watch the guests' pause);
# its time in VAR. Host 2's task gets the extra environment.
hpc_ckpt() {
  local var=$1; shift
  step "group checkpoint through srun"
  # --kill-on-bad-exit=0: a task that dies must not make Slurm kill the others; xckpt's own
  # protocol handles it.
  # shellcheck disable=SC2086 # HPC_CKPT_DISK is words
  out "$var" sr -N2 --ntasks-per-node=1 --kill-on-bad-exit=0 sh /testbed/hpc-task.sh "$@" -- \
    xckpt checkpoint --store "$HPC_STORE" --group hjob --slurm ${HPC_CKPT_DISK---no-disk} -q hping hpong
}

# paused_ms NAME: the longest time NAME stayed paused during the last hpc_ckpt, as xentop
# on its host saw it: from the last sample that showed it running before the pause to the
# first one after (an upper bound: up to two sample intervals more than the pause). 0 if no
# sample showed it paused; "still-paused" if the last one did.
paused_ms() {
  cat /shared/pw-xhost1.txt /shared/pw-xhost2.txt 2>/dev/null | awk -v d="$1" '
    $2 != d {next}
    !seen {seen = 1; run = $1}
    $3 ~ /p/ {if (!inp) {inp = 1; start = run}; next}
    {if (inp && $1 - start > max) max = $1 - start; inp = 0; run = $1}
    END {if (inp) print "still-paused"; else printf "%d\n", max * 1000 + 0.5}'
}
# pause_bound_ms NAME HOST: an upper bound on any pause of NAME that ended in the last 5 s
# before HOST's xckpt exited (a pause xentop's samples may have missed): the longest span
# between two consecutive samples showing NAME not paused, among those spans that end in that
# window or at the first sample after it. -1 without samples or the exit time.
pause_bound_ms() {
  local end
  end=$(cat "/shared/end-$2.txt" 2>/dev/null)
  [ -n "$end" ] || { echo -1; return; }
  awk -v d="$1" -v e="$end" '
    $2 != d || $3 ~ /p/ {next}
    {if (p != "" && $1 > e - 5 && !done) {if ($1 - p > max) max = $1 - p; seen = 1}
     if ($1 > e) done = 1; p = $1}
    END {if (seen) printf "%d\n", max * 1000 + 0.5; else print -1}' "/shared/pw-$2.txt"
}
# sample_ms: the median interval between two of xentop's samples of hping (the
# resolution of paused_ms).
sample_ms() {
  awk '$2 == "hping" {if (p) print ($1 - p) * 1000; p = $1}' /shared/pw-xhost1.txt 2>/dev/null |
    sort -n | awk '{a[NR] = $1} END {printf "%d\n", (NR ? a[int((NR + 1) / 2)] : -1) + 0.5}'
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

# The disks of the two-host scenarios: each guest writes its log to ext4 on a disk local to
# its host (hping's on host 1's XFS under /shared, which xckpt reaches only through qemu-nbd;
# hpong's on host 2's own disk), snapshotted by reflink with each group checkpoint.
hpc_with_disks() {
  HPC_DISK1=/shared/h1/hping.img
  HPC_DISK2=/mnt/xfs/hpong.img
  HPC_CKPT_DISK=""
}

# hpc_snapshot_logs: each disk's newest snapshot (SNAP1 on host 1, SNAP2 on host 2), checked
# before its host lets it go, and the last record of its log (SNAP1_LAST, SNAP2_LAST): where
# the restored guest must go on.
hpc_snapshot_logs() {
  SNAP1=$(ls /shared/h1/hping.img.xckpt-hping-* 2>/dev/null | sort -V | tail -n 1)
  SNAP2=$(on2 "ls /mnt/xfs/hpong.img.xckpt-hpong-*" 2>/dev/null | sort -V | tail -n 1)
  [ -n "$SNAP1" ] && [ -n "$SNAP2" ] ||
    fail "no reflink snapshot next to each disk (host 1: '$SNAP1', host 2: '$SNAP2')"
  mkdir -p /mnt/xfs
  check_ext4_log "$SNAP1"; SNAP1_LAST=$LOG_LAST
  [ "$LOG_BAD" = 0 ] || fail "the snapshot of hping's disk has $LOG_BAD damaged records"
  SNAP2_LAST=$(on2lib "check_ext4_log $SNAP2 && [ \$LOG_BAD = 0 ] && echo SNAPLAST \$LOG_LAST" | sed -n 's/^SNAPLAST //p')
  nums SNAP1_LAST SNAP2_LAST
}

# hpc_restore_swapped SPEC [ARG...]: restore group SPEC through srun with the hosts swapped
# (task 0 on host 2, task 1 on host 1), so each member goes to the other host, its disk with
# it over NBD (qemu-nbd on the holder, a qcow2 overlay on the new host, QMP block-stream).
# Its time in RS_S; from the hub's report, RUN_S (every member running) and, with disks,
# LOCAL_S (every disk local), each disk's copy time (COPY_HPING_S, COPY_HPONG_S) and its
# overlay (OVL_HPING on host 2, OVL_HPONG on host 1).
hpc_restore_swapped() {
  local spec=$1 d t; shift
  printf 'xhost2\nxhost1\n' > /shared/hostfile
  step "restore through srun, hosts swapped${HPC_DISK1:+, disks over NBD}"
  out RS_S env SLURM_HOSTFILE=/shared/hostfile timeout "$SRUN_TIMEOUT" srun -N2 -n2 -m arbitrary \
    xckpt restore --store "$HPC_STORE" --group "$spec" --slurm "$@" < /dev/null ||
    fail "restore --group $spec --slurm failed: $OUT_LAST"
  grep -a 'disk xvda of \|local after\|running after' "$TBW/.out" | while read -r l; do note "$l"; done
  RUN_S=$(grep -a 'unpaused together; running after ' "$TBW/.out" | head -n 1 | sed 's/.* running after \([0-9.]*\) s$/\1/')
  nums RS_S RUN_S
  [ -n "${HPC_DISK1:-}" ] || return 0
  for d in hping hpong; do
    t=$(grep -a "^disk xvda of $d: .*: local after " "$TBW/.out" | head -n 1 | sed 's/.*: local after \([0-9.]*\) s;.*/\1/')
    [ -n "$t" ] || fail "the restore did not report $d's disk local: $OUT_LAST"
    eval "COPY_$(echo "$d" | tr a-z A-Z)_S=\$t"
    t=$(grep -a "^$d: disk xvda fetched from .* into the local overlay /mnt/xfs/disks/" "$TBW/.out" | head -n 1 | sed 's/.* into the local overlay //')
    [ -n "$t" ] || fail "the restore did not report $d's local overlay: $OUT_LAST"
    eval "OVL_$(echo "$d" | tr a-z A-Z)=\$t"
  done
  LOCAL_S=$(grep -a '^every disk of group hjob@[0-9]* local after ' "$TBW/.out" | head -n 1 | sed 's/.* after \([0-9.]*\) s$/\1/')
  nums LOCAL_S COPY_HPING_S COPY_HPONG_S
}

# hpc_logs_go_on M1: both restored guests (hping on host 2, hpong on host 1, console mark M1)
# keep writing their logs without an error for 5 s, their first record after the restore
# following their snapshot's last (or repeating it, if its write was in flight at the stop).
# Sets FIRST1/LAST1 (hping) and FIRST2/LAST2 (hpong).
hpc_logs_go_on() {
  local m=$1 a
  a=$(mark hpong)
  sleep 5
  FIRST2=$(dlog_first hpong "$m"); LAST2=$(dlog_last hpong "$a")
  set -- $(on2lib "echo H2 \$(dlog_first hping 0) \$(dlog_last hping 0) \$(after hping 0 | grep -ac '^DLOGERR')" | grep '^H2 ')
  FIRST1=${2:-}; LAST1=${3:-}
  nums FIRST1 LAST1 FIRST2 LAST2
  [ "${4:-}" = 0 ] && [ "$(after hpong "$m" | grep -ac '^DLOGERR')" = 0 ] ||
    fail "a restored guest's log writes fail: $(after hpong "$m" | grep -a DLOGERR | head -n 1) (hping: ${4:-?} errors)"
  [ "$LAST2" -gt "$FIRST2" ] && [ "$LAST1" -gt "$FIRST1" ] ||
    fail "a restored guest stopped writing its log (hping $FIRST1..$LAST1, hpong $FIRST2..$LAST2)"
  [ "$FIRST1" = $((SNAP1_LAST + 1)) ] || [ "$FIRST1" = "$SNAP1_LAST" ] ||
    fail "hping's log went on at $FIRST1, but its snapshot ends at $SNAP1_LAST"
  [ "$FIRST2" = $((SNAP2_LAST + 1)) ] || [ "$FIRST2" = "$SNAP2_LAST" ] ||
    fail "hpong's log went on at $FIRST2, but its snapshot ends at $SNAP2_LAST"
}

# hpc_overlays_clean: with both guests destroyed, each overlay the restore named alone (no
# backing file left) is a clean ext4 holding the whole log the guest wrote (O1_LAST: hping's
# on host 2, O2_LAST: hpong's on host 1).
hpc_overlays_clean() {
  [ -f "$OVL_HPONG" ] || fail "hpong's overlay $OVL_HPONG is not on host 1"
  qemu-img info "$OVL_HPONG" | grep -q '^backing file' && fail "hpong's overlay still has a backing file"
  qemu-img convert -f qcow2 -O raw "$OVL_HPONG" /mnt/xfs/hpong-final.raw || fail "cannot read hpong's overlay $OVL_HPONG"
  check_ext4_log /mnt/xfs/hpong-final.raw; O2_LAST=$LOG_LAST
  rm -f /mnt/xfs/hpong-final.raw
  [ "$LOG_BAD" = 0 ] && [ "$O2_LAST" -ge "$LAST2" ] ||
    fail "hpong's overlay: $LOG_BAD damaged records, last $O2_LAST (the guest wrote up to $LAST2)"
  O1_LAST=$(on2lib "o=$OVL_HPING; qemu-img info \$o | grep -q '^backing file' && fail 'backing file left'; qemu-img convert -f qcow2 -O raw \$o /mnt/xfs/hping-final.raw && check_ext4_log /mnt/xfs/hping-final.raw && [ \$LOG_BAD = 0 ] && echo O1LAST \$LOG_LAST; rm -f /mnt/xfs/hping-final.raw" | sed -n 's/^O1LAST //p')
  nums O1_LAST
  [ "$O1_LAST" -ge "$LAST1" ] || fail "hping's overlay ends at record $O1_LAST, but the guest wrote up to $LAST1"
}
