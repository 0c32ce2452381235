# about: SIGKILL during the pause, a full store during the write, SIGTERM during pre-copy: the domain runs within 1 s, the chain verifies, the next incremental restores bad=0
. /testbed/xckpt.sh
G=xnp
fresh_guest pvh "$G"
ck "$G"

# running_within NAME SECONDS: succeeds once NAME is not paused; sets RUN_MS (time it took).
running_within() {
  local t0 s; t0=$(now)
  while :; do
    s=$(xl list "$1" 2>/dev/null | awk 'NR==2 {print $5}')
    case "$s" in *p*|*s*|"") ;; *) RUN_MS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%d", (b-a)*1000}'); return 0 ;; esac
    awk -v a="$t0" -v b="$(now)" -v l="$2" 'BEGIN{exit !(b-a > l)}' && return 1
    sleep 0.05
  done
}

# 1. Death right after the domain was stopped (abort, as kill -9): the watchdog resumes it.
XCKPT_FAILPOINT=capture.paused xckpt checkpoint --store "$STORE" "$G"; rc=$?
[ "$rc" -ne 0 ] || fail "the failpoint did not kill xckpt"
running_within "$G" 1 || fail "domain $G still stopped 1 s after xckpt died (rc $rc)"
KILL_MS=$RUN_MS
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after xckpt was killed while paused"

# 2. A store whose file system is full: a small tmpfs of its own, nearly filled.
SMALL=$TBW/small-store
umount "$SMALL" 2>/dev/null; mkdir -p "$SMALL"
mount -t tmpfs -o size=64m,mode=0700 tmpfs "$SMALL" || fail "cannot mount a small tmpfs store"
CLEANUP='umount "$SMALL" 2>/dev/null'
dd if=/dev/zero of="$SMALL/filler" bs=1M count=60 2>/dev/null
out NOSPC_S xckpt checkpoint --store "$SMALL" "$G" && fail "checkpoint into a full store succeeded"
NOSPC_MSG=$OUT_LAST
echo "$NOSPC_MSG" | grep -q "No space left" || fail "ENOSPC not reported as such: $NOSPC_MSG"
running_within "$G" 1 || fail "domain $G stopped after the ENOSPC failure"
umount "$SMALL"; CLEANUP=""

# 3. SIGTERM during pre-copy (a full checkpoint reads everything, so it is still copying).
xckpt checkpoint --full --store "$STORE" "$G" & pid=$!
sleep 1
kill -TERM "$pid"; wait "$pid"; rc=$?
running_within "$G" 1 || fail "domain $G stopped after SIGTERM"
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after SIGTERM"

# The next checkpoint holds every page dirtied since the last good layer.
sleep 2
ck "$G"
rs "$G" "$G"
destroy_guest "$G"
pass "kill_stopped_resume_ms=$KILL_MS enospc_reported=1 sigterm_rc=$rc next_layer_bad=0"
