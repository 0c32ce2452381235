# Helpers for scenarios, sourced by every scenario (busybox sh in dom0). The runner sets
# SCN (scenario name) and RESULT (file that receives the one PASS/FAIL line).
# Output of a scenario goes to its log, which the runner copies to the console prefixed.
. /etc/testbed.env
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:$(echo /usr/lib/xen-4.*/bin)
TBW=/tmp/tb/work                  # scratch for configs and save images (tmpfs)
mkdir -p "$TBW"
TB_GUESTS=""                      # guests this scenario started (for diagnostics)
BOOT_TIMEOUT=${BOOT_TIMEOUT:-480}   # HVM boots took 60-220 s on a busy 2-core host

now() { cut -d' ' -f1 /proc/uptime; }
# Seconds since uptime $1, two decimals.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
note() { echo "$*"; }
clog() { echo "/var/log/xen/console/guest-$1.log"; }

# The scenario's verdict. `pass key=value...` records success; `fail reason...` records a
# failure, prints diagnostics and ends the scenario.
pass() { echo "PASS $SCN $*" > "$RESULT"; note "verdict: PASS $*"; }
fail() {
  echo "FAIL $SCN $*" > "$RESULT"
  note "verdict: FAIL $*"
  diagnostics
  exit 1
}
diagnostics() {
  local g
  xl list 2>&1
  for g in $TB_GUESTS; do
    note "--- last console lines of $g"
    tail -n 15 "$(clog "$g")" 2>/dev/null | tr -d "\r"
  done
  note "--- xl dmesg tail"
  xl dmesg 2>/dev/null | tail -n 15
  note "--- dom0 dmesg tail"
  dmesg | tail -n 15
}

# timed VAR cmd...: runs cmd (its output, minus progress meters, into the log), stores its
# duration in seconds in VAR, and returns cmd's exit status.
timed() {
  local var=$1 t0 rc; shift
  t0=$(now)
  note "+ $*"
  { "$@"; echo $? > "$TBW/.rc"; } 2>&1 | tr '\r' '\n' | grep -av '%$'
  rc=$(cat "$TBW/.rc")
  eval "$var=$(since "$t0")"
  note "  (rc=$rc, $(eval echo \$$var) s)"
  return "$rc"
}

# out VAR cmd...: like timed, but also keeps cmd's output (last non-empty line) in OUT_LAST.
out() {
  local var=$1 t0 rc; shift
  t0=$(now)
  note "+ $*"
  { "$@"; echo $? > "$TBW/.rc"; } > "$TBW/.out" 2>&1
  rc=$(cat "$TBW/.rc")
  eval "$var=$(since "$t0")"
  tr '\r' '\n' < "$TBW/.out" | grep -av '%$'
  OUT_LAST=$(tr '\r' '\n' < "$TBW/.out" | grep -av '%$' | grep -av '^ *$' | tail -n 1)
  note "  (rc=$rc, $(eval echo \$$var) s)"
  return "$rc"
}

file_bytes() { stat -c %s "$1"; }
domid() { xl domid "$1" 2>/dev/null; }

# ---- guest console ---------------------------------------------------------------------
# mark NAME: the current end of NAME's console log; pass it to the helpers below to look only
# at what the guest printed afterwards.
mark() { wc -l < "$(clog "$1")" 2>/dev/null || echo 0; }
# Console lines of NAME after mark $2 (default: all).
after() { tail -n +"$(( ${2:-0} + 1 ))" "$(clog "$1")" 2>/dev/null | tr -d '\r'; }
ticks() { after "$1" "${2:-0}" | grep -a '^TICK '; }
# Value of key $3 in the last TICK line of NAME after mark $2.
tick_field() { ticks "$1" "$2" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$3=//p"; }
last_tick() { ticks "$1" "${2:-0}" | tail -n 1 | cut -d' ' -f2; }
last_gen() { tick_field "$1" "${2:-0}" gen; }
guest_used_kib() { tick_field "$1" "${2:-0}" used_kib; }
# Largest value of key $3 (gap_ms, mgap_ms, bad) over NAME's TICK lines after mark $2, as an
# integer (0 if none).
tick_max() {
  ticks "$1" "$2" | tr ' ' '\n' | sed -n "s/^$3=//p" |
    awk 'BEGIN{m=0} {if ($1+0 > m) m=$1+0} END{printf "%d", m + 0.5}'
}
# guest_gap NAME MARK: the longest pause the guest saw after MARK (CLOCK_BOOTTIME, ms).
guest_gap() { tick_max "$1" "$2" gap_ms; }
# guest_mgap NAME MARK: the same on CLOCK_MONOTONIC (does not count save/restore suspends).
guest_mgap() { tick_max "$1" "$2" mgap_ms; }
# check_bad NAME MARK: succeeds if the workload reported no corrupted page after MARK.
check_bad() {
  local b; b=$(tick_max "$1" "$2" bad)
  [ "$b" = 0 ] && ! after "$1" "$2" | grep -aq '^BAD '
}

# wait_ticks NAME COUNT [TIMEOUT] [MARK]: waits until NAME printed COUNT TICK lines after MARK
# (default: from now on). Fails after TIMEOUT seconds (default 60).
wait_ticks() {
  local name=$1 count=$2 limit=${3:-60} m=${4:-} t0
  [ -n "$m" ] || m=$(mark "$1")
  t0=$(now)
  local i=0
  while [ "$(ticks "$name" "$m" | wc -l)" -lt "$count" ]; do
    if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN{exit !(b-a > l)}'; then
      note "wait_ticks $name: no $count TICK lines within ${limit}s"
      return 1
    fi
    i=$((i + 1))
    # Every ~5 s: give up at once if the guest crashed (its init died, or the kernel paniced).
    if [ $((i % 10)) = 0 ] && guest_crashed "$name"; then
      note "wait_ticks $name: the guest crashed (xl list state $(guest_state "$name"))"
      return 1
    fi
    sleep 0.5
  done
}
# State flags of NAME in `xl list` (e.g. "r-----", "---sc-").
guest_state() { xl list "$1" 2>/dev/null | awk 'NR == 2 {print $5}'; }
guest_crashed() { guest_state "$1" | grep -q 'c'; }
wait_tick() { wait_ticks "$1" 1 "${2:-60}"; }

# ---- guests ----------------------------------------------------------------------------
# write_cfg TYPE NAME MEM [KEY=VAL...]: the xl config of a test guest; KEY=VAL words go to the
# guest kernel command line and so into the workload's environment.
write_cfg() {
  local type=$1 name=$2 mem=$3; shift 3
  # noxsave: under nested TCG the guest's AVX state is sometimes lost and glibc's AVX memcpy
  # in /init dies of SIGILL ("guest did not start"); without XSAVE glibc picks SSE2.
  cat > "$TBW/$name.cfg" <<CFG
name="$name"
type="$type"
kernel="/guest/vmlinuz"
ramdisk="/guest/domu.cpio.gz"
extra="console=hvc0 loglevel=4 noxsave WL_MIB=$WL_MIB WL_RATE=$WL_RATE WL_PATTERN=$WL_PATTERN $*"
memory=$mem
vcpus=1
on_crash="preserve"
CFG
  # Keep guests off dom0's CPU (see GUEST_CPUS in docs/testbed.md).
  [ -n "${GUEST_CPUS:-}" ] && echo "cpus=\"$GUEST_CPUS\"" >> "$TBW/$name.cfg"
  # Under QEMU TCG, PVH/HVM guests hang unless the TSC is not intercepted (REPORT pitfall 2).
  [ "$type" = pv ] || echo 'tsc_mode="native"' >> "$TBW/$name.cfg"
  [ "$type" = hvm ] && printf 'vga="none"\nnographic=1\nvnc=0\nsdl=0\nserial="pty"\n' >> "$TBW/$name.cfg"
  # Extra xl config lines (disks, vifs) for the group and disk scenarios.
  [ -n "${CFG_EXTRA:-}" ] && printf '%s\n' "$CFG_EXTRA" >> "$TBW/$name.cfg"
  echo "$TBW/$name.cfg"
}

# start_guest TYPE NAME MEM [KEY=VAL...]: creates the guest and waits for its first TICK.
# Sets CREATE_S (xl create) and BOOT_S (create returned -> first TICK).
start_guest() {
  local type=$1 name=$2 cfg t0; cfg=$(write_cfg "$@")
  TB_GUESTS="$TB_GUESTS $name"
  rm -f "$(clog "$name")"
  timed CREATE_S xl create "$cfg" || { note "xl create $name failed"; return 1; }
  t0=$(now)
  wait_ticks "$name" 1 "$BOOT_TIMEOUT" 0 || return 1
  BOOT_S=$(since "$t0")
  note "$name ($type) up: create ${CREATE_S}s, boot to first TICK ${BOOT_S}s"
}

destroy_guest() { xl destroy "$1" 2>&1 || true; }

# Destroys every domU (between scenarios and before a retry).
destroy_all() {
  local d
  for d in $(xl list 2>/dev/null | awk 'NR>1 && $2 != 0 {print $1}'); do xl destroy "$d"; done
}

# xl_migrate_local NAME: live `xl migrate` of NAME to this host (ssh replaced by a pipe). Sets
# MIGRATE_S and MIGRATE_GAP_MS; fails the scenario unless the migrated workload runs with bad=0.
xl_migrate_local() {
  printf '#!/bin/sh\nshift\nexec "$@"\n' > "$TBW/fakessh" && chmod +x "$TBW/fakessh"
  rm -f "$(clog "$1--incoming")"
  timed MIGRATE_S xl migrate -s "$TBW/fakessh" "$1" localhost ||
    fail "xl migrate of $1 failed (variant $TB_VARIANT)"
  follow_migrated "$1"
}

# follow_migrated NAME: after an `xl migrate` of NAME to this host, check the new domain's
# workload (bad=0; sets MIGRATE_GAP_MS) and bring its console log back under NAME. xenconsoled
# names a log when it first sees a domain, and the incoming one is called NAME--incoming then;
# SIGHUP makes it reopen every log under the domain's current name.
follow_migrated() {
  local inc="$1--incoming"
  wait_ticks "$inc" 2 60 0 || fail "workload of $1 not running after migrate"
  check_bad "$inc" 0 || fail "workload of $1 saw corrupted pages after migrate"
  MIGRATE_GAP_MS=$(guest_gap "$inc" 0)
  kill -HUP "$(cat /var/run/xenconsoled.pid)"
  wait_ticks "$1" 2 60 || fail "console of $1 not back under its name after migrate"
}

# migrate_scenario TYPE NAME: start a TYPE guest and migrate it live to localhost.
migrate_scenario() {
  start_guest "$1" "$2" "$DOMU_MEM" || fail "guest $2 did not start"
  wait_ticks "$2" 3 60 || fail "workload in $2 stopped ticking"
  xl_migrate_local "$2"
  pass "migrate_s=$MIGRATE_S guest_gap_ms=$MIGRATE_GAP_MS variant=$TB_VARIANT"
}

# running_cmd WORD...: succeeds if a process's command line contains all the words in order
# (busybox here has no pgrep).
running_cmd() {
  local f
  for f in /proc/[0-9]*/cmdline; do
    tr '\0' ' ' < "$f" 2>/dev/null | grep -q -- "$*" && return 0
  done
  return 1
}
