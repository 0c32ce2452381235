# Helpers for xckpt scenarios (sourced after lib.sh). Each xckpt call is its own process.
STORE=${STORE:-/var/lib/xckpt}
# On any exit (fail included), run $CLEANUP and destroy this scenario's guests, so a retry
# starts clean.
CLEANUP=""
trap 'eval "$CLEANUP"; for g in $TB_GUESTS; do xl destroy "$g" >/dev/null 2>&1; done' EXIT

# clear_store: an empty store (in dom0 it is a tmpfs mount point, which stays).
clear_store() {
  rm -rf "${STORE:?}"/* "${STORE:?}"/.[!.]*
}

# fresh_guest TYPE NAME: an empty store and a new guest whose workload is ticking.
fresh_guest() {
  clear_store
  start_guest "$1" "$2" "$DOMU_MEM" || fail "guest $2 did not start"
  wait_ticks "$2" 3 60 || fail "workload of $2 not ticking"
}

# ck NAME [ARGS...]: one `xckpt checkpoint` of NAME as its own process. Sets CK_S (wall time),
# CK_GAP_MS (longest guest-observed pause around it), CK_GEN (workload gen just before),
# CK_LINE (xckpt's summary line). Fails the scenario if the workload breaks.
ck() {
  local name=$1 m; shift
  m=$(mark "$name"); CK_GEN=$(last_gen "$name")
  out CK_S xckpt checkpoint --store "$STORE" "$@" "$name" || fail "xckpt checkpoint $name failed: $OUT_LAST"
  CK_LINE=$(grep -a "^$name: layer" "$TBW/.out" | tail -n 1)
  wait_ticks "$name" 2 60 "$m" || fail "workload of $name stopped after xckpt checkpoint"
  check_bad "$name" "$m" || fail "workload of $name saw bad pages after xckpt checkpoint"
  CK_GAP_MS=$(guest_gap "$name" "$m")
}

# ck_bytes: the layer size from the last checkpoint's summary line.
ck_bytes() { echo "$CK_LINE" | sed -n 's/.*) \([0-9]*\) bytes.*/\1/p'; }

# rs NAME SPEC [ARGS...]: destroy NAME, `xckpt restore SPEC`, wait for the workload. Sets RS_S
# and RS_GEN (first gen the restored workload printed). Fails if bad pages are seen.
rs() {
  local name=$1 spec=$2 m; shift 2
  destroy_guest "$name"
  m=$(mark "$name")
  out RS_S xckpt restore --store "$STORE" "$@" "$spec" || fail "xckpt restore $spec failed: $OUT_LAST"
  wait_ticks "$name" 3 120 "$m" || fail "workload of $name not running after xckpt restore $spec"
  check_bad "$name" "$m" || fail "workload of $name saw bad pages after xckpt restore $spec"
  RS_GEN=$(ticks "$name" "$m" | head -n 1 | tr ' ' '\n' | sed -n 's/^gen=//p')
}

# chain_scenario TYPE NAME: base + 3 incrementals seconds apart, restore latest and @1.
chain_scenario() {
  local type=$1 g=$2 n
  fresh_guest "$type" "$g"
  ck "$g"; note "$CK_LINE"; local base_s=$CK_S base_bytes; base_bytes=$(ck_bytes)
  local gen1; gen1=$(last_gen "$g")
  local gaps="$CK_GAP_MS"
  for n in 2 3 4; do
    sleep 3
    ck "$g"; note "$CK_LINE"; gaps="$gaps,$CK_GAP_MS"
  done
  local gen4; gen4=$CK_GEN
  local gen_end; gen_end=$(last_gen "$g")
  rs "$g" "$g"; local rs_latest=$RS_S gen_latest=$RS_GEN
  [ "$gen_latest" -ge "$gen4" ] && [ "$gen_latest" -le "$gen_end" ] ||
    fail "restore of the latest layer resumed at gen $gen_latest, not between $gen4 and $gen_end"
  rs "$g" "$g@1"; local gen_at1=$RS_GEN
  [ "$gen_at1" -le "$gen1" ] && [ "$gen_at1" -lt "$gen_latest" ] ||
    fail "restore of $g@1 resumed at gen $gen_at1 (layer 1 was taken before gen $gen1)"
  xckpt verify --store "$STORE" "$g" || fail "xckpt verify $g failed"
  destroy_guest "$g"
  pass "base_s=$base_s base_bytes=$base_bytes guest_gaps_ms=$gaps restore_s=$rs_latest gen_latest=$gen_latest gen_at1=$gen_at1 bad=0"
}
