# Helpers for xckpt scenarios (sourced after lib.sh). Each xckpt call is its own process.
STORE=${STORE:-/var/lib/xckpt}
# On any exit (fail included), run $CLEANUP and destroy this scenario's guests, so a retry
# starts clean.
CLEANUP=""
trap 'eval "$CLEANUP"; for g in $TB_GUESTS; do xl destroy "$g" >/dev/null 2>&1; done' EXIT

# clear_store: an empty store (in dom0 it is a tmpfs mount point, which stays).
clear_store() {
  rm -rf "${STORE:?}"/* "${STORE:?}"/.[!.]* "$TBW/gens"
}

# fresh_guest TYPE NAME: an empty store and a new guest whose workload is ticking.
fresh_guest() {
  clear_store
  start_guest "$1" "$2" "$DOMU_MEM" || fail "guest $2 did not start"
  wait_ticks "$2" 3 60 || fail "workload of $2 not ticking"
}

# ck NAME [ARGS...]: one `xckpt checkpoint --json` of NAME as its own process. Sets CK_S (wall
# time), CK_GAP_MS (longest guest-observed pause around it), CK_GEN (workload gen just before),
# CK_JSON (the file holding xckpt's JSON report; read it with ck_json), CK_ID (the layer id)
# and, for scenarios that match text, CK_LINE and $TBW/.out: the human summary line and notes
# rebuilt from the JSON (same wording as xckpt's own summary). Records the layer's generation
# window (the workload's gen before the run and after it returned) for rs. Fails the scenario if
# the workload breaks.
ck() {
  local name=$1 m rc t0; shift
  m=$(mark "$name"); CK_GEN=$(last_gen "$name")
  CK_JSON=$TBW/ck.json CK_CHAIN=$name
  note "+ xckpt checkpoint --json --store $STORE $* $name"
  t0=$(now)
  xckpt checkpoint --json --store "$STORE" "$@" "$name" > "$CK_JSON" 2> "$CK_JSON.err"; rc=$?
  CK_S=$(since "$t0")
  cat "$CK_JSON.err"
  note "  (rc=$rc, $CK_S s)"
  OUT_LAST=$(grep -av '^ *$' "$CK_JSON.err" | tail -n 1)
  if [ "$rc" != 0 ]; then
    # A failed run must still leave the guest running (else the cause is a verdict).
    check_running "$name" || fail "xckpt checkpoint $name failed and left it $(guest_state "$name"): $OUT_LAST"
    fail "xckpt checkpoint $name failed: $OUT_LAST"
  fi
  CK_ID=$(ck_json .layer.id); nums CK_ID
  CK_LINE=$(ck_summary "$name")
  # Where the run's time went, ms per phase (capture::PhaseTimes), beside the wall time seen here.
  # One jq over the report (not one per part: each is a process start at TCG speed in dom0).
  CK_PHASES=$(jq -r --arg wall "$CK_S" '
    def pairs: to_entries | map("\(.key)=\(.value)") | join(" ");
    ((.raw_bytes // 0) / 4096 | floor) as $w | (.layer.stats.data_pages // 0) as $d |
    "phases_ms: \(.phases // {} | to_entries | map("\(.key | rtrimstr("_ms"))=\(.value | floor)") | join(" "))"
    + " total=\(.layer.stats.total_ms) since_start=\(.since_start_s // "?") s wall=\($wall) s;"
    + " cpu_s: \([(.stages // {} | to_entries[]), (.cpu_s // {} | to_entries[])] | map("\(.key | rtrimstr("_s"))=\(.value * 100 | round / 100)") | join(" "));"
    + " faults: \(.faults // {} | pairs); setup_s: \(.setup_s // {} | pairs); probe: \(.probe // {} | pairs);"
    + " phase_cpu_ms/faults: \(.phase_usage // {} | to_entries | map("\(.key)=\(.value.user_ms + .value.system_ms)/\(.value.minor_faults)") | join(" "));"
    + " copies: written=\($w) data=\($d) dead=\($w - $d) dropped=\(.superseded_pages // 0)"' "$CK_JSON")
  { echo "$CK_LINE"; echo "  $CK_PHASES"
    jq -r '.layer.stats.notes[] | "  note: " + .' "$CK_JSON"
    jq -r '.disks[] | "  disk \(.vdev): \(.backend) snapshot \(.snapshot)"' "$CK_JSON"; } > "$TBW/.out"
  wait_ticks "$name" 2 60 "$m" || fail "workload of $name stopped after xckpt checkpoint"
  check_bad "$name" "$m" || fail "workload of $name saw bad pages after xckpt checkpoint"
  check_running "$name" || fail "xckpt checkpoint left $name stopped"
  CK_GAP_MS=$(guest_gap "$name" "$m")
  mkdir -p "$TBW/gens"
  echo "$CK_GEN $(last_gen "$name")" > "$TBW/gens/$name.$CK_ID"
}

# ck_json FILTER: a value of the last checkpoint's JSON report (jq filter, e.g. .layer.bytes);
# fails the scenario if the report has no such value.
ck_json() { json "$CK_JSON" "$1" || fail "no $1 in xckpt checkpoint's JSON report"; }

# ck_summary NAME: xckpt's one-line summary, rebuilt from the JSON report.
ck_summary() {
  jq -r --arg n "$1" '.layer as $l | $l.stats as $s |
    "\($n): layer \($l.id) (\($l.kind[0:1] | ascii_upcase)\($l.kind[1:])) \($l.bytes) bytes; " +
    "\($s.dirty_pages) pages covered: \($s.data_pages) data, \($s.zero_pages) zero, " +
    "\($s.unpopulated_pages) unpopulated, \([$s.evicted[]] | add // 0) evicted" +
    (if ($s.evicted | length) > 0 then " (" + ([$s.evicted | to_entries[] | "\(.key) \(.value)"] | join(", ")) + ")" else "" end) +
    "; \(.rounds | length) rounds (\(.stop)), downtime \(.downtime.secs * 1000 + .downtime.nanos / 1e6) ms"' "$CK_JSON"
}

# ck_bytes: the last checkpoint's layer size, as `stat` sees the file the JSON report names
# (call it right after ck: a later merge may rewrite the file). Prints nothing and fails the
# scenario if the report's `bytes` differs from the file.
ck_bytes() {
  local f b s
  f=$(ck_json .layer.file) && b=$(ck_json .layer.bytes) || return 1
  s=$(file_bytes "$STORE/${CK_CHAIN:-}/$f" 2>/dev/null)
  [ -n "$s" ] && [ "$s" = "$b" ] || fail "layer $f: the report says $b bytes, stat says '${s}'"
  echo "$s"
}

# gen_window NAME SPEC: "LO HI", the workload's generation window recorded by ck for the layer
# SPEC (NAME = the latest layer ck recorded for chain NAME, NAME@N = layer N), or
# RS_GEN_LO/RS_GEN_HI when a scenario sets them (points ck did not take: imports, groups).
gen_window() {
  local chain=${2%@*} id f
  if [ -n "${RS_GEN_LO:-}" ]; then echo "$RS_GEN_LO ${RS_GEN_HI:?RS_GEN_HI}"; return; fi
  case $2 in
    *@*) id=${2##*@} ;;
    *) id=$(ls "$TBW/gens" 2>/dev/null | sed -n "s/^$chain\.\([0-9]*\)$/\1/p" | sort -n | tail -n 1) ;;
  esac
  f=$TBW/gens/$chain.$id
  [ -n "$id" ] && [ -f "$f" ] && cat "$f"
}

# rs NAME SPEC [ARGS...]: destroy NAME, `xckpt restore SPEC`, then verify_resumed: a full sweep
# with bad=0, resumed within the generation window of SPEC (gen_window; a restore of a point
# without one fails). Sets RS_S and RS_GEN (the generation the workload resumed at).
rs() {
  local name=$1 spec=$2 m w; shift 2
  w=$(gen_window "$name" "$spec") ||
    fail "no generation window for $spec: take it with ck, or set RS_GEN_LO/RS_GEN_HI"
  destroy_guest "$name"
  m=$(mark "$name")
  out RS_S xckpt restore --store "$STORE" "$@" "$spec" || fail "xckpt restore $spec failed: $OUT_LAST"
  # shellcheck disable=SC2086
  verify_resumed "$name" "$m" $w "xckpt restore $spec"
  RS_GEN=$RESUME_GEN
}

# chain_scenario TYPE NAME: base + 3 incrementals seconds apart, restore latest and @1 (each
# checked by verify_resumed against its own layer's generation window).
chain_scenario() {
  local type=$1 g=$2 n
  fresh_guest "$type" "$g"
  ck "$g"; note "$CK_LINE"; local base_s=$CK_S base_bytes; base_bytes=$(ck_bytes)
  local gaps="$CK_GAP_MS"
  for n in 2 3 4; do
    sleep 3
    ck "$g"; note "$CK_LINE"; gaps="$gaps,$CK_GAP_MS"
  done
  rs "$g" "$g"; local rs_latest=$RS_S gen_latest=$RS_GEN
  rs "$g" "$g@1"; local gen_at1=$RS_GEN
  xckpt verify --store "$STORE" "$g" || fail "xckpt verify $g failed"
  destroy_guest "$g"
  nums base_bytes
  pass "base_s=$base_s base_bytes=$base_bytes guest_gaps_ms=$gaps restore_s=$rs_latest gen_latest=$gen_latest gen_at1=$gen_at1 window_latest=$(gen_window "$g" "$g@4" | tr ' ' -) window_at1=$(gen_window "$g" "$g@1" | tr ' ' -) full_sweeps=$(sweep_cost) bad=0"
}
