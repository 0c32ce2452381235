#!/bin/sh
# One Slurm task of a two-host group checkpoint (hpc.sh, hpc_ckpt), on each host:
#   hpc-task.sh [VAR=VALUE...] -- xckpt ARGS...
# Runs xckpt (with the VAR=VALUE environment on host 2 only); the moment xckpt exited (this
# host's uptime, as the shell saw it) goes to /shared/end-HOST.txt.
# With HPC_WATCH=1 (hpc-member-dies), xentop watches meanwhile whether this host's test
# guests are paused: lines "UPTIME NAME STATE" into /shared/pw-HOST.txt, one per xentop sample
# (batch mode, no delay between samples: `xl list` takes ~2 s per call under TCG, too
# coarse), until 2 s after xckpt ended. Stock xentop, not xckpt, is the observer of how long a
# guest stayed paused (hpc.sh, paused_ms, pause_bound_ms). It runs at nice 5 and only where
# asked: its samples (~0.45 s of CPU each) take dom0's one vCPU from xckpt (un-niced, a
# group checkpoint ran past srun's 300 s), and at nice 19 xckpt starved it for 10 s around
# the kill (run md4: no sample of hpong for 9.94 s, so no bound under a second).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:$(echo /usr/lib/xen-4.*/bin)
W=/shared/pw-$(hostname).txt
E=/shared/end-$(hostname).txt
: > "$W"; : > "$E"
watch=""
if [ "${HPC_WATCH:-0}" = 1 ]; then
  nice -n 5 xentop -b -d 0 2> "${W%.txt}.err" | awk '$1 == "hping" || $1 == "hpong" {
      getline u < "/proc/uptime"; close("/proc/uptime"); split(u, a, " ")
      print a[1], $1, $2; fflush() }' >> "$W" &
  watch=$!   # awk: once it is gone, xentop dies of SIGPIPE at its next sample
fi
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  [ "$SLURM_NODEID" = 1 ] && export "$1"
  shift
done
shift
"$@"
rc=$?
cut -d' ' -f1 /proc/uptime > "$E"
if [ -n "$watch" ]; then
  sleep 2
  kill "$watch" 2>/dev/null
  wait 2>/dev/null
fi
exit "$rc"
