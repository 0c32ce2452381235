# about: the systemd unit's command lines, twice on a PVH guest then once with the store read-only, leave a Prometheus textfile: the last success's figures (layer size as on disk), the failure counted, the file well-formed
. /testbed/xckpt.sh
G=opsm
UNIT=/testbed/tools/xckpt-checkpoint@.service
PROM=$TBW/node-exporter/xckpt.prom
CONF=$TBW/xckpt.toml
[ -f "$UNIT" ] || fail "$UNIT is not in the image"
mkdir -p "$TBW/node-exporter"
rm -f "$PROM"
printf 'store = "%s"\nmetrics_file = "%s"\n[default.retention]\nkeep_last = 5\n' "$STORE" "$PROM" > "$CONF"
# The unit's own command lines (%i = the domain), run as systemd would, with its config.
CK_CMD=$(sed -n 's/^ExecStart=//p' "$UNIT" | sed "s/%i/$G/g; s#/usr/bin/xckpt#xckpt#")
PRUNE_CMD=$(sed -n 's/^ExecStartPost=//p' "$UNIT" | sed "s/%i/$G/g; s#/usr/bin/xckpt#xckpt#")
[ -n "$CK_CMD" ] && [ -n "$PRUNE_CMD" ] || fail "no ExecStart/ExecStartPost in $UNIT"
unit_run() { XCKPT_CONFIG=$CONF sh -c "umask 077; $CK_CMD && $PRUNE_CMD"; }
# metric NAME: the sample of NAME for the guest (empty if absent).
metric() { sed -n "s/^$1{domain=\"$G\"} //p" "$PROM"; }
num() { case "$1" in ''|*[!0-9.e+-]*) return 1 ;; *) return 0 ;; esac; }
# well_formed: every line is a HELP/TYPE comment or `name{domain="…"} number`, and every
# metric has one TYPE line (the Prometheus text format as node_exporter's textfile reads it).
well_formed() {
  awk '/^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* / { if ($2 == "TYPE") types[$3]++; next }
       /^[a-zA-Z_:][a-zA-Z0-9_:]*\{domain="[^"]*"\} [-+0-9.eE]+$/ { n = $1; sub(/\{.*/, "", n); seen[n]++; next }
       { print "bad line: " $0; bad = 1 }
       END { for (m in seen) if (types[m] != 1) { print "no TYPE for " m; bad = 1 }; exit bad }' "$PROM"
}
newest_layer() { ls -t "$STORE/$G"/layer-*.xcl | head -n 1; }
fresh_guest pvh "$G"
for n in 1 2; do
  T0=$(date +%s); m=$(mark "$G")
  out RUN_S unit_run || fail "run $n of the unit's command lines failed: $OUT_LAST"
  T1=$(date +%s)
  LINE=$(grep -a "^$G: layer" "$TBW/.out" | tail -n 1); note "$LINE"
  wait_ticks "$G" 2 60 "$m" || fail "workload of $G stopped after run $n"
  check_bad "$G" "$m" || fail "bad pages after run $n"
  GAP=$(guest_gap "$G" "$m") && num "$GAP" || fail "run $n: the guest printed no gap after the run: '$GAP'"
  GAPS="${GAPS:+$GAPS,}$GAP"
  [ -f "$PROM" ] || fail "run $n left no $PROM"
  note "--- $PROM after run $n"; cat "$PROM"
  well_formed || fail "$PROM is not well-formed after run $n"
  TS=$(metric xckpt_last_success_timestamp_seconds); BYTES=$(metric xckpt_last_layer_bytes)
  DOWN=$(metric xckpt_last_downtime_seconds); FAILS=$(metric xckpt_failures_total)
  LAYERS=$(metric xckpt_chain_layers); CBYTES=$(metric xckpt_chain_bytes)
  for v in "$TS" "$BYTES" "$DOWN" "$FAILS" "$LAYERS" "$CBYTES"; do
    num "$v" || fail "run $n: a metric is missing or not a number: '$v'"
  done
  awk -v t="$TS" -v a="$T0" -v b="$T1" 'BEGIN{exit !(t >= a && t <= b + 1)}' ||
    fail "run $n: last success at $TS, outside the run ($T0..$T1)"
  # The layer's size as the file system has it, and the chain's as du has it.
  DISK=$(file_bytes "$(newest_layer)")
  [ "$BYTES" = "$DISK" ] || fail "run $n: xckpt_last_layer_bytes=$BYTES, the newest layer file has $DISK bytes"
  [ "$LAYERS" = "$(ls "$STORE/$G"/layer-*.xcl | wc -l)" ] || fail "run $n: xckpt_chain_layers=$LAYERS"
  SUM=$(stat -c %s "$STORE/$G"/layer-*.xcl | awk '{s+=$1} END{printf "%d", s}')
  [ "$CBYTES" = "$SUM" ] || fail "run $n: xckpt_chain_bytes=$CBYTES, the layer files hold $SUM"
  # The guest saw the stop: the downtime cannot exceed the longest gap it observed (+ its tick).
  awk -v d="$DOWN" -v g="$GAP" 'BEGIN{exit !(d > 0 && d * 1000 <= g + 100)}' ||
    fail "run $n: downtime ${DOWN}s is not within the guest's longest gap (${GAP} ms)"
  [ "$FAILS" = 0 ] || fail "run $n: xckpt_failures_total=$FAILS before any failure"
  [ "$(metric xckpt_last_run_success)" = 1 ] || fail "run $n: xckpt_last_run_success is not 1"
done
OK_TS=$TS OK_BYTES=$BYTES OK_DOWN=$DOWN OK_LAYERS=$LAYERS OK_CBYTES=$CBYTES
# Run 3: the store is read-only; the checkpoint fails, the guest keeps running.
mount -o remount,ro "$STORE" || fail "cannot remount $STORE read-only"
CLEANUP="mount -o remount,rw $STORE"
m=$(mark "$G")
if out FAIL_S unit_run; then fail "the unit's command lines succeeded on a read-only store"; fi
note "failure line: $OUT_LAST"
mount -o remount,rw "$STORE"; CLEANUP=""
wait_ticks "$G" 3 60 "$m" || fail "workload of $G not running after the failed run (left paused?)"
check_bad "$G" "$m" || fail "bad pages after the failed run"
note "--- $PROM after the failed run"; cat "$PROM"
well_formed || fail "$PROM is not well-formed after the failed run"
FAILS=$(metric xckpt_failures_total)
[ "$FAILS" = 1 ] || fail "xckpt_failures_total=$FAILS after one failure"
[ "$(metric xckpt_last_run_success)" = 0 ] || fail "xckpt_last_run_success is not 0 after the failure"
[ "$(metric xckpt_last_success_timestamp_seconds)" = "$OK_TS" ] &&
  [ "$(metric xckpt_last_layer_bytes)" = "$OK_BYTES" ] &&
  [ "$(metric xckpt_last_downtime_seconds)" = "$OK_DOWN" ] &&
  [ "$(metric xckpt_chain_layers)" = "$OK_LAYERS" ] &&
  [ "$(metric xckpt_chain_bytes)" = "$OK_CBYTES" ] ||
  fail "the failure changed the figures of the last success"
# For the host side: the file between markers (tests/cli_metrics.rs parses it with prometheus-parse).
echo "PROM-BEGIN"; sed 's/^/PROM| /' "$PROM"; echo "PROM-END"
destroy_guest "$G"
pass "layer_bytes=$OK_BYTES downtime_s=$OK_DOWN guest_gaps_ms=$GAPS chain_layers=$OK_LAYERS chain_bytes=$OK_CBYTES failures_total=$FAILS run_s=$RUN_S failed_run_s=$FAIL_S"
