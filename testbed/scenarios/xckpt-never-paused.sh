# about: SIGKILL during the pause, a full store during the write, SIGTERM during pre-copy: the domain runs within 1 s, the chain verifies, the next incremental restores bad=0
. /testbed/xckpt.sh
G=xnp
# A small store of its own, so filling it is cheap.
STORE=$TBW/np-store
umount "$STORE" 2>/dev/null; mkdir -p "$STORE" && mount -t tmpfs -o size=400m,mode=0700 tmpfs "$STORE" || fail "cannot mount a tmpfs store"
CLEANUP='umount "$STORE" 2>/dev/null' 
start_guest pvh "$G" "$DOMU_MEM" || fail "guest $G did not start"
wait_ticks "$G" 3 60 || fail "workload of $G not ticking"
ck "$G"

# running_within NAME SECONDS: succeeds once NAME is not paused; sets RUN_MS (time it took).
running_within() {
  local t0 s; t0=$(now)
  while :; do
    s=$(xl list "$1" 2>/dev/null | awk 'NR==2 {print $5}')
    case "$s" in *p*|"") ;; *) RUN_MS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%d", (b-a)*1000}'); return 0 ;; esac
    awk -v a="$t0" -v b="$(now)" -v l="$2" 'BEGIN{exit !(b-a > l)}' && return 1
    sleep 0.05
  done
}

# 1. SIGKILL-like death (abort) right after the pause: the watchdog unpauses.
m=$(mark "$G")
XCKPT_FAILPOINT=capture.paused xckpt checkpoint --store "$STORE" "$G"; rc=$?
[ "$rc" -ne 0 ] || fail "the failpoint did not kill xckpt"
running_within "$G" 1 || fail "domain $G still paused 1 s after xckpt died (rc $rc)"
KILL_MS=$RUN_MS
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after xckpt was killed while paused"

# 2. The store's file system fills up during the write.
free_kib=$(df -k "$STORE" | awk 'NR==2 {print $4}')
dd if=/dev/zero of="$STORE/filler" bs=1k count=$(( free_kib - 2048 )) 2>/dev/null
out NOSPC_S xckpt checkpoint --store "$STORE" "$G" && fail "checkpoint into a full store succeeded"
NOSPC_MSG=$OUT_LAST
running_within "$G" 1 || fail "domain $G paused after the ENOSPC failure"
rm -f "$STORE/filler"
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after ENOSPC"

# 3. SIGTERM during pre-copy (a full checkpoint reads everything, so it is still copying).
xckpt checkpoint --full --store "$STORE" "$G" & pid=$!
sleep 0.3
kill -TERM "$pid"; wait "$pid"; rc=$?
running_within "$G" 1 || fail "domain $G paused after SIGTERM"
xckpt verify --store "$STORE" "$G" || fail "chain does not verify after SIGTERM"

# The next incremental holds every page dirtied since the last good layer.
sleep 2
ck "$G"
echo "$CK_LINE" | grep -q Incremental || fail "expected an incremental after the failures: $CK_LINE"
rs "$G" "$G"
check_bad "$G" 0 || true
destroy_guest "$G"
umount "$STORE"
pass "kill_paused_unpause_ms=$KILL_MS enospc=\"$(echo "$NOSPC_MSG" | cut -c1-80)\" sigterm_rc=$rc next_incremental_bad=0"
