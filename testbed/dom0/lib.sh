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
  local cause; cause=$(cat "$RESULT.cause" 2>/dev/null)
  # A guest that did not boot says why (start_guest's BOOT_WHY).
  local why=
  [ "$cause" = tb:guest-boot ] && [ -n "${BOOT_WHY:-}" ] && why=" boot_why=\"$BOOT_WHY\""
  echo "FAIL $SCN $*$why cause=${cause:-scenario}" > "$RESULT"
  note "verdict: FAIL $* (cause ${cause:-scenario})"
  diagnostics
  exit 1
}

# ---- failure causes (the runner's retry rule, docs/testbed.md "Retries") ---------------
# The cause a `fail` line carries is the last one recorded here (default `scenario`):
#   verdict       the workload saw bad pages, a guest was left paused, or a restore resumed at
#                 the wrong generation: never retried, always a failure of xckpt (or xl).
#   tb:CAUSE      a known test-bed flake (see TB_CAUSES in testbed/run): may be retried, and a
#                 pass on the retry counts.
#   scenario      anything else: retried once for information, but a pass on the retry still
#                 makes `testbed/run` exit non-zero.
# A verdict is sticky (once the workload saw corruption, nothing else explains the failure).
set_cause() {
  [ "$(cat "$RESULT.cause" 2>/dev/null)" = verdict ] && return 0
  if [ -n "$1" ]; then echo "$1" > "$RESULT.cause"; else rm -f "$RESULT.cause"; fi
}
# fail_verdict REASON...: fail with cause `verdict` (bad pages, a paused guest, a wrong
# generation). Helpers that find such a fault record the cause themselves, so a plain `fail`
# after them is a verdict too.
fail_verdict() { set_cause verdict; fail "$@"; }

# ---- figures ----------------------------------------------------------------------------
# nums VAR...: every named variable holds a number (an optional minus, digits, at most one
# decimal point); otherwise the scenario fails naming the variable and its value. Call it on
# every figure a check compares, before comparing: an empty or garbled figure must not pass a
# bar (awk and [ ] turn "" into 0).
nums() {
  local v x
  for v in "$@"; do
    eval "x=\${$v-}"
    echo "$x" | grep -Eq '^-?[0-9]+(\.[0-9]+)?$' || fail "figure $v is not a number: '$x'"
  done
}
# json FILE FILTER: one value from a JSON document, read with jq (-r: strings bare). Prints
# nothing and fails if the document does not parse or the value is null.
json() { jq -er "$2" "$1" 2>/dev/null; }
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

# out VAR cmd...: like timed, but also keeps cmd's output (last non-empty line) in OUT_LAST;
# if cmd failed and xckpt said why (through srun too, whose own last line only names the
# task), xckpt's last two error lines instead.
out() {
  local var=$1 t0 rc why; shift
  t0=$(now)
  note "+ $*"
  { "$@"; echo $? > "$TBW/.rc"; } > "$TBW/.out" 2>&1
  rc=$(cat "$TBW/.rc")
  eval "$var=$(since "$t0")"
  tr '\r' '\n' < "$TBW/.out" | grep -av '%$'
  OUT_LAST=$(tr '\r' '\n' < "$TBW/.out" | grep -av '%$' | grep -av '^ *$' | tail -n 1)
  why=$(grep -a 'xckpt: ' "$TBW/.out" | tail -n 2 | paste -sd '|')
  [ "$rc" = 0 ] || [ -z "$why" ] || OUT_LAST="$why | $OUT_LAST"
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
# settle NAME: wait for a TICK of NAME printed after now (at most 60 s). A stop's gap is in the
# first TICK after the guest runs again, up to a tick (1 s) later: read at once after what
# stopped it, the lines there are may all predate the stop (a CI run read 21 ms beside a
# 151 ms pause that way). Fails if none comes.
settle() { wait_ticks "$1" 1 60 "$(mark "$1")"; }
# guest_gap NAME MARK: the longest pause the guest saw after MARK (CLOCK_BOOTTIME, ms), once
# settled: call it after the stop. Empty (and fails) if the guest printed no TICK since.
guest_gap() { settle "$1" && tick_max "$1" "$2" gap_ms; }
# guest_mgap NAME MARK: the same on CLOCK_MONOTONIC (does not count save/restore suspends).
guest_mgap() { settle "$1" && tick_max "$1" "$2" mgap_ms; }
# check_bad NAME MARK: succeeds if the workload reported no corrupted page after MARK.
# A failure records the cause `verdict` (see set_cause).
check_bad() {
  local b; b=$(tick_max "$1" "$2" bad)
  [ "$b" = 0 ] && ! after "$1" "$2" | grep -aq '^BAD ' && return 0
  set_cause verdict
  return 1
}
# check_running NAME: NAME exists and is neither paused nor suspended (else cause `verdict`).
check_running() {
  case "$(guest_state "$1")" in
    "") note "guest $1 does not exist"; return 1 ;;
    *p*|*s*) note "guest $1 is stopped: $(guest_state "$1")"; set_cause verdict; return 1 ;;
  esac
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

# ---- the check after every restore and every migrate -----------------------------------
# verify_resumed NAME MARK GEN_LO GEN_HI WHAT [STEP_NAME]: the one check every scenario runs after a
# restore (xckpt or xl) or a migrate of NAME, MARK taken before it. It proves, from the guest
# workload alone (an observer other than xckpt):
#  1. the restored memory is whole: the workload finished a full verification sweep of its
#     buffer (every page read back and checked) that began after the restore, and saw bad=0
#     and no BAD line from MARK to the end of that sweep;
#  2. it is the right point: the generation it resumed at is within GEN_LO..GEN_HI, the
#     workload's generation before the checkpoint (or save) began and after it ended (or at
#     the destroy), plus at most one TICK's worth of writes (lines in the console ring at the
#     pause show up late; STEP = the largest generation step between two TICKs before MARK,
#     in the log of STEP_NAME if given: the source of a migrate).
# The resumed generation is the `gen=` of the first GAP line after MARK (printed by the first
# loop iteration after a pause over 200 ms, before any write), else of the first TICK. The sweep counted
# is the one that ends at `sweeps=` S+2, S being the sweep count on the TICK printed with or
# right after that GAP line: sweep S+1 starts after that line, so after the restore.
# Fails with cause `verdict` (never retried). Sets RESUME_GEN, RESUME_SWEEP_S (seconds from
# the first TICK to the end of the full sweep: what this check costs).
verify_resumed() {
  local name=$1 m=$2 lo=$3 hi=$4 what=$5 t0 first s0 step g
  # The domain (a migrated guest logs as NAME--incoming but is called NAME once it arrived).
  local dom=${1%--incoming}
  nums lo hi
  wait_ticks "$name" 1 120 "$m" || fail "workload of $name not running after $what"
  t0=$(now)
  # The resume point: the first GAP line after MARK if it comes before the second TICK (one
  # TICK may be an old line left in the console ring at the pause), else the first TICK.
  first=$(after "$name" "$m" | grep -a -m 1 -n '^GAP ' | cut -d: -f1)
  local t2; t2=$(after "$name" "$m" | grep -a -n '^TICK ' | sed -n 2p | cut -d: -f1)
  [ -n "$first" ] && [ -n "$t2" ] && [ "$first" -gt "$t2" ] && first=""
  if [ -n "$first" ]; then
    g=$(after "$name" "$m" | sed -n "${first}p" | tr ' ' '\n' | sed -n 's/^gen=//p')
    s0=$(after "$name" "$m" | tail -n +"$first" | grep -a -m 1 '^TICK ' | tr ' ' '\n' | sed -n 's/^sweeps=//p')
  else
    g=$(ticks "$name" "$m" | head -n 1 | tr ' ' '\n' | sed -n 's/^gen=//p')
    s0=$(ticks "$name" "$m" | head -n 1 | tr ' ' '\n' | sed -n 's/^sweeps=//p')
  fi
  if [ -z "$s0" ]; then   # GAP line seen, its TICK not yet
    wait_ticks "$name" 1 60 || fail "workload of $name stopped after $what"
    s0=$(after "$name" "$m" | tail -n +"$first" | grep -a -m 1 '^TICK ' | tr ' ' '\n' | sed -n 's/^sweeps=//p')
  fi
  nums g s0
  step=$(gen_step "${6:-$name}" "$m")
  RESUME_GEN=$g
  [ "$g" -ge "$lo" ] && [ "$g" -le $((hi + step)) ] ||
    fail_verdict "$what: the workload of $name resumed at gen $g, not in $lo..$hi (+$step, one TICK)"
  # One full sweep that began after the restore, with the guest running all along.
  local i=0 s
  while :; do
    s=$(tick_field "$name" "$m" sweeps)
    [ -n "$s" ] && [ "$s" -ge $((s0 + 2)) ] && break
    if awk -v a="$t0" -v b="$(now)" 'BEGIN{exit !(b-a > 180)}'; then
      check_running "$dom" || fail "$what: guest $dom stopped before a full sweep"
      fail "$what: workload of $dom did not finish a full sweep within 180 s (sweeps $s0 -> $s)"
    fi
    i=$((i + 1))
    if [ $((i % 10)) = 0 ] && guest_crashed "$dom"; then
      fail "$what: guest $dom crashed before a full sweep (xl list state $(guest_state "$dom"))"
    fi
    sleep 0.5
  done
  RESUME_SWEEP_S=$(since "$t0")
  check_bad "$name" "$m" || fail_verdict "$what: the workload of $name saw bad pages ($(after "$name" "$m" | grep -a -m 1 '^BAD '))"
  check_running "$dom" || fail "$what: guest $dom is not running after its full sweep"
  note "verify_resumed $name ($what): gen $g in $lo..$hi (+$step), full sweep $s0 -> $s in ${RESUME_SWEEP_S}s, bad=0"
  echo "$RESUME_SWEEP_S" >> "$TBW/.sweep_s"
}
# gen_step NAME MARK: the largest generation step between two of the last 10 TICK lines
# NAME printed before MARK (all of its lines if MARK is 0).
gen_step() {
  local f; f=$(clog "$1")
  { if [ "$2" = 0 ]; then cat "$f"; else head -n "$2" "$f"; fi; } 2>/dev/null | tr -d '\r' |
    grep -a '^TICK ' | tail -n 10 | tr ' ' '\n' | sed -n 's/^gen=//p' |
    awk 'NR > 1 && $1 - p > s {s = $1 - p} {p = $1} END {print s + 0}'
}
# sweep_cost: "N restores, S s" spent in verify_resumed's full sweeps by this scenario.
sweep_cost() { awk '{s+=$1; n++} END{printf "%d/%.1f", n, s}' "$TBW/.sweep_s" 2>/dev/null; }

# ---- guests ----------------------------------------------------------------------------
# write_cfg TYPE NAME MEM [KEY=VAL...]: the xl config of a test guest; KEY=VAL words go to the
# guest kernel command line and so into the workload's environment.
write_cfg() {
  local type=$1 name=$2 mem=$3; shift 3
  # noxsave: under nested TCG the guest's AVX state is sometimes lost and glibc's AVX memcpy
  # in /init dies of SIGILL ("guest did not start"); without XSAVE glibc picks SSE2.
  # pci=noearly (HVM): the kernel's early AGP/GART checks read the config space of every
  # possible PCI function through port I/O, each access a round trip to the device model in
  # dom0: 27.5 s of a 35 s HVM kernel boot here (docs/testbed.md, "Pitfalls").
  local hvm_extra=
  [ "$type" = hvm ] && hvm_extra="pci=noearly "
  cat > "$TBW/$name.cfg" <<CFG
name="$name"
type="$type"
kernel="/guest/vmlinuz"
ramdisk="/guest/domu.cpio.gz"
extra="console=hvc0 loglevel=4 noxsave ${hvm_extra}${GUEST_EXTRA:-} WL_MIB=$WL_MIB WL_RATE=$WL_RATE WL_PATTERN=$WL_PATTERN $*"
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
  # Until the workload's first TICK, a failure is the test bed's (cause tb:guest-boot).
  set_cause tb:guest-boot
  BOOT_WHY=
  out CREATE_S xl create "$cfg" || {
    # What xl said (its last error line) goes into the FAIL line: CI shows only those.
    BOOT_WHY="xl create: $(grep -ai 'error\|fail\|cannot\|invalid' "$TBW/.out" | tail -n 1 |
      tr -d '"' | cut -c1-200)"
    [ "$BOOT_WHY" != "xl create: " ] || BOOT_WHY="xl create: $(echo "$OUT_LAST" | tr -d '"')"
    note "xl create $name failed"; return 1; }
  t0=$(now)
  wait_ticks "$name" 1 "$BOOT_TIMEOUT" 0 || {
    BOOT_WHY="no TICK from $name within ${BOOT_TIMEOUT}s (xl list state $(guest_state "$name"))"
    return 1; }
  set_cause ""
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
  local lo; lo=$(last_gen "$1")
  timed MIGRATE_S xl migrate -s "$TBW/fakessh" "$1" localhost ||
    fail "xl migrate of $1 failed (variant $TB_VARIANT)"
  follow_migrated "$1" "$lo"
}

# follow_migrated NAME [GEN_LO]: after an `xl migrate` of NAME to this host, check the new
# domain's workload with verify_resumed (a full sweep with bad=0, resumed between GEN_LO, the
# gen before the migrate began, and the source's last gen; sets MIGRATE_GAP_MS) and bring its
# console log back under NAME. xenconsoled names a log when it first sees a domain, and the
# incoming one is called NAME--incoming then; SIGHUP makes it reopen every log under the
# domain's current name.
follow_migrated() {
  local inc="$1--incoming" lo=${2:-} hi
  [ -n "$lo" ] || { lo=0; note "follow_migrated $1: no gen before the migrate given, checking from 0"; }
  wait_ticks "$inc" 1 60 0 || fail "workload of $1 not running after migrate"
  hi=$(last_gen "$1")
  verify_resumed "$inc" 0 "$lo" "$hi" "xl migrate of $1" "$1"
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
