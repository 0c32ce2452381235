# about: faults confirmed where aimed (failpoint log): SIGKILL-like abort right after the pause, SIGTERM during pre-copy, a full store during the write of a third layer, the resident service aborting right after the pause of a served checkpoint: the domain runs within 1 s each time, the exit codes are the documented ones, both chains verify, hold no temp files and restore bad=0, and the next incremental after each fault restores bad=0
. /testbed/xckpt.sh
G=xnp
fresh_guest pvh "$G"
ck "$G"

# running_within NAME SECONDS: succeeds once NAME is not paused; sets RUN_MS (time it took).
running_within() {
  local t0 s; t0=$(now)
  while :; do
    s=$(guest_state "$1")
    case "$s" in *p*|*s*|"") ;; *) RUN_MS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%d", (b-a)*1000}'); return 0 ;; esac
    awk -v a="$t0" -v b="$(now)" -v l="$2" 'BEGIN{exit !(b-a > l)}' && { set_cause verdict; return 1; }
    sleep 0.05
  done
}
# no_temps DIR: DIR holds no temp file of a layer or manifest writer (.tmp-*).
no_temps() {
  local t; t=$(ls -A "$1" | grep '^\.tmp-' | tr '\n' ' ')
  [ -z "$t" ] || fail "temp files left in $1: $t"
}
FPLOG=$TBW/failpoints.log
# fp_counts: the failpoints reached so far, as name:hits,...
fp_counts() { sort "$FPLOG" 2>/dev/null | uniq -c | awk '{printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1}'; }

# 1. Death right after the domain was stopped (abort, as kill -9): the watchdog resumes it.
#    The failpoint log proves the abort came at `capture.paused`, i.e. after the stop; the
#    guest's own clock shows how long it was stopped (kill_guest_gap_ms).
rm -f "$FPLOG"; m=$(mark "$G")
XCKPT_FAILPOINT=capture.paused XCKPT_FAILPOINT_LOG=$FPLOG xckpt checkpoint --store "$STORE" "$G"; rc=$?
[ "$rc" = 134 ] || fail "xckpt at failpoint capture.paused exited $rc, not 134 (SIGABRT)"
[ "$(tail -n 1 "$FPLOG" 2>/dev/null)" = capture.paused ] ||
  fail "the abort did not come at capture.paused (failpoint log ends: $(tail -n 2 "$FPLOG" 2>/dev/null | tr '\n' ' '))"
running_within "$G" 1 || fail "domain $G still stopped 1 s after xckpt died (rc $rc)"
KILL_MS=$RUN_MS
wait_ticks "$G" 2 60 "$m" || fail "workload of $G stopped after the abort"
check_bad "$G" "$m" || fail "workload of $G saw bad pages after the abort"
KILL_GAP=$(guest_gap "$G" "$m"); nums KILL_MS KILL_GAP
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after xckpt was killed while paused"

# 2. SIGTERM during pre-copy (a full checkpoint reads everything, so it is still copying): sent
#    once the layer file exists (and its first frame is written, if within 1 s); the log must
#    never reach capture.paused.
rm -f "$FPLOG"
XCKPT_FAILPOINT_LOG=$FPLOG xckpt checkpoint --full --store "$STORE" "$G" > "$TBW/term.out" 2>&1 & pid=$!
i=0
until grep -q '^layer.create' "$FPLOG" 2>/dev/null; do
  [ $i -ge 600 ] && { kill -KILL "$pid"; fail "the full checkpoint started no layer within 60 s"; }
  sleep 0.1; i=$((i + 1))
done
i=0
until grep -q '^layer.frame' "$FPLOG" 2>/dev/null || [ $i -ge 10 ]; do sleep 0.1; i=$((i + 1)); done
TERM_AT=$(fp_counts)
kill -TERM "$pid"; wait "$pid"; TERM_RC=$?
note "SIGTERM sent after failpoints: $TERM_AT"
cat "$TBW/term.out"
grep -q '^capture.paused' "$FPLOG" && fail "SIGTERM came after the pause, not during pre-copy"
[ "$TERM_RC" = 1 ] || fail "xckpt exited $TERM_RC after SIGTERM during pre-copy, not 1"
grep -q "checkpoint interrupted; the domain is running and the chain is unchanged" "$TBW/term.out" ||
  fail "SIGTERM not reported as an interruption: $(tail -n 1 "$TBW/term.out")"
running_within "$G" 1 || fail "domain $G stopped after SIGTERM"
TERM_MS=$RUN_MS
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after SIGTERM"
no_temps "$STORE/$G"

# The next checkpoint holds every page dirtied since the last good layer.
sleep 2
ck "$G"
rs "$G" "$G"

# 3. A full file system under a store that holds a chain: a small tmpfs of its own with a base
#    and an incremental, then filled up to 4 MiB (room for the manifest updates a run makes
#    before its layer, not for a layer); a --full checkpoint must fail while writing its layer,
#    saying so, and leave the chain's layers as they were.
SMALL=$TBW/small-store
umount "$SMALL" 2>/dev/null; mkdir -p "$SMALL"
mount -t tmpfs -o size=320m,mode=0700 tmpfs "$SMALL" || fail "cannot mount a small tmpfs store"
CLEANUP='umount "$SMALL" 2>/dev/null'
STORE=$SMALL; rm -rf "$TBW/gens"
ck "$G"; sleep 2; ck "$G"
# The chain as listed (id, file, bytes of every layer) and its layer files.
chain_list() { xckpt list --store "$SMALL" "$G" --json | jq -ec '[.layers[] | [.id, .file, .bytes]]'; }
LIST=$(chain_list) || fail "xckpt list --json of the small store failed"
LAYERS=$(ls "$SMALL/$G" | grep '^layer-' | tr '\n' ' ')
AVAIL_KIB=$(df -k "$SMALL" | tail -n 1 | awk '{print $4}'); nums AVAIL_KIB
dd if=/dev/zero of="$SMALL/filler" bs=1M count=$(( (AVAIL_KIB - 4096) / 1024 )) 2>/dev/null
note "small store nearly full: $(df -k "$SMALL" | tail -n 1)"
rm -f "$FPLOG"; m=$(mark "$G")
export XCKPT_FAILPOINT_LOG=$FPLOG
out NOSPC_S xckpt checkpoint --full --store "$SMALL" "$G" && fail "checkpoint into a full store succeeded"
unset XCKPT_FAILPOINT_LOG
NOSPC_MSG=$OUT_LAST
echo "$NOSPC_MSG" | grep -q "No space left" || fail "ENOSPC not reported as such: $NOSPC_MSG"
grep -q '^layer.create' "$FPLOG" 2>/dev/null ||
  fail "the ENOSPC came before the layer write (failpoints: $(tr '\n' ' ' < "$FPLOG" 2>/dev/null)): $NOSPC_MSG"
NOSPC_AT=$(fp_counts)
note "ENOSPC after failpoints: $NOSPC_AT"
running_within "$G" 1 || fail "domain $G stopped after the ENOSPC failure"
check_bad "$G" "$m" || fail "workload of $G saw bad pages after the ENOSPC failure"
no_temps "$SMALL/$G"
[ "$(chain_list)" = "$LIST" ] || fail "the failed checkpoint changed the chain: $(chain_list), was $LIST"
[ "$(ls "$SMALL/$G" | grep '^layer-' | tr '\n' ' ')" = "$LAYERS" ] ||
  fail "the failed checkpoint changed the layer files: $(ls "$SMALL/$G" | tr '\n' ' '), was $LAYERS"
xckpt verify --store "$SMALL" "$G" || fail "the chain in the full store does not verify"
rm -f "$SMALL/filler"
# The next checkpoint (which carries the failed run's dirty pages) and the chain as it was
# before the fault both restore.
ck "$G"; NEXT_KIND=$(ck_json .layer.kind)
[ "$NEXT_KIND" != base ] || fail "the checkpoint after ENOSPC started a new chain (a base layer)"
rs "$G" "$G"
rs "$G" "$G@2"
no_temps "$SMALL/$G"

# 4. The resident service dies (abort, as kill -9) right after pausing the domain for a served
#    checkpoint: the watchdog, a process of its own, resumes it, and the client says the service
#    ended and exits 1. A second service on a socket of its own, the crash point in its own
#    environment (a client never hands its crash points over: it runs such a command itself).
SVC=/run/xckpt-np/service.sock
rm -f "$FPLOG"; m=$(mark "$G")
XCKPT_FAILPOINT=capture.paused XCKPT_FAILPOINT_LOG=$FPLOG xckpt serve --socket "$SVC" \
  > "$TBW/np-serve.log" 2>&1 < /dev/null & spid=$!
i=0
until [ -S "$SVC" ] || [ $i -ge 200 ]; do sleep 0.1; i=$((i + 1)); done
[ -S "$SVC" ] || fail "a second xckpt service did not start: $(tail -n 1 "$TBW/np-serve.log")"
XCKPT_SERVICE=$SVC xckpt checkpoint --store "$STORE" "$G" > "$TBW/np.out" 2>&1; SVC_CLIENT_RC=$?
wait "$spid"; SVC_RC=$?
cat "$TBW/np.out"
[ "$SVC_RC" = 134 ] || fail "the service at failpoint capture.paused exited $SVC_RC, not 134 (SIGABRT)"
[ "$(tail -n 1 "$FPLOG" 2>/dev/null)" = capture.paused ] ||
  fail "the service's abort did not come at capture.paused (failpoint log ends: $(tail -n 2 "$FPLOG" 2>/dev/null | tr '\n' ' '))"
running_within "$G" 1 || fail "domain $G still stopped 1 s after the service died"
SVC_MS=$RUN_MS; nums SVC_MS
[ "$SVC_CLIENT_RC" = 1 ] || fail "the client of the dead service exited $SVC_CLIENT_RC, not 1"
grep -q "ended before the command did" "$TBW/np.out" ||
  fail "the client did not say the service ended: $(tail -n 1 "$TBW/np.out")"
wait_ticks "$G" 2 60 "$m" || fail "workload of $G stopped after the service died"
check_bad "$G" "$m" || fail "workload of $G saw bad pages after the service died"
xckpt verify --store "$STORE" "$G" || fail "the chain does not verify after the service died while paused"
no_temps "$SMALL/$G"
destroy_guest "$G"
STORE=/var/lib/xckpt
umount "$SMALL"; CLEANUP=""
pass "kill_rc=134 kill_failpoint=capture.paused kill_stopped_resume_ms=$KILL_MS kill_guest_gap_ms=$KILL_GAP sigterm_rc=$TERM_RC sigterm_resume_ms=$TERM_MS sigterm_after=$TERM_AT enospc_reported=1 enospc_after=$NOSPC_AT enospc_chain_layers=2 enospc_chain_verified=1 service_abort_rc=$SVC_RC service_client_rc=$SVC_CLIENT_RC service_stopped_resume_ms=$SVC_MS temp_files=0 next_after_enospc=$NEXT_KIND full_sweeps=$(sweep_cost) bad=0"
