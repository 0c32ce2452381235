# about: two hosts (testbed/run pair): srun -N2 runs on both dom0s, the NFS store /shared is writable from both and each sees the other's files, a PVH guest on each host plays TCP ping-pong with the other over the bridged link
#
# Runs on host 1's dom0; host 2 is reached through Slurm (srun -w xhost2). The pair's bring-up
# is testbed/dom0/pair.sh (docs/testbed.md, "Two hosts").
. /testbed/group.sh
. /testbed/hpc.sh
READY_H1=$(cat /run/tb-pair-ready)
READY_H2=$(cat /shared/.ready-2 2>/dev/null)
nums READY_H1 READY_H2

# 1. srun -N2: one task on each host, both names back. The first srun, then a second one
# (the round trip once the step machinery is warm).
step "srun -N2 hostname"
out SRUN1_S sr -N2 --ntasks-per-node=1 hostname || fail "srun -N2 hostname failed: $OUT_LAST"
HOSTS=$(grep -x "xhost[12]" "$TBW/.out" | sort | tr '\n' ' ')
[ "$HOSTS" = "xhost1 xhost2 " ] || fail "srun -N2 hostname returned '$HOSTS', not xhost1 and xhost2"
out SRUN_S sr -N2 --ntasks-per-node=1 hostname || fail "second srun -N2 hostname failed: $OUT_LAST"
[ "$(grep -x "xhost[12]" "$TBW/.out" | sort | tr '\n' ' ')" = "xhost1 xhost2 " ] || fail "second srun -N2 returned '$(tr '\n' ' ' < "$TBW/.out")'"
# Tasks run as root on both hosts (xckpt needs root in dom0).
IDS=$(sr -N2 --ntasks-per-node=1 id -u | tr '\n' ' ')
[ "$IDS" = "0 0 " ] || fail "srun tasks do not run as root: uids '$IDS'"
# The same xckpt binary at the same path on both hosts.
SUMS=$(sr -N2 --ntasks-per-node=1 md5sum /usr/local/bin/xckpt | awk '{print $1}' | sort -u | wc -l)
[ "$SUMS" = 1 ] || fail "/usr/local/bin/xckpt differs between the hosts"

# 2. The shared store: host 1 (the NFS server, local XFS) and host 2 (NFS client) each write
# a file with a fresh token; each reads the other's.
step "shared store /shared"
mkdir -p /shared/store /shared/smoke || fail "cannot create /shared/store on host 1"
TOK1=$(cat /proc/sys/kernel/random/uuid); TOK2=$(cat /proc/sys/kernel/random/uuid)
echo "$TOK1" > /shared/smoke/from-xhost1 || fail "host 1 cannot write /shared"
out NFS_S on2 "cat /shared/smoke/from-xhost1 && echo $TOK2 > /shared/smoke/from-xhost2 && sync && ls /shared/smoke" ||
  fail "host 2 cannot read or write /shared: $OUT_LAST"
grep -qx "$TOK1" "$TBW/.out" || fail "host 2 does not see host 1's file in /shared: $(head -c 200 "$TBW/.out")"
grep -qx from-xhost2 "$TBW/.out" || fail "host 2 does not list its own file in /shared"
[ "$(cat /shared/smoke/from-xhost2 2>/dev/null)" = "$TOK2" ] || fail "host 1 does not see host 2's file in /shared"
SEEN_ON_2=$(on2 "ls /shared/smoke" | grep -c '^from-xhost')
nums SEEN_ON_2
[ "$SEEN_ON_2" = 2 ] || fail "host 2 lists $SEEN_ON_2 of the 2 files in /shared/smoke"

# 3. One PVH guest per host, bridged to the link: pong on host 2, ping on host 1.
hpc_start_pair
step "ping-pong across the hosts"
# Let it run, then count: ping's last number is the messages echoed across the link.
sleep 10
PP_MSGS=$(pp_ns hping 0 | tail -n 1)
PONG_LAST=$(on2 "grep -a '^PP ' /var/log/xen/console/guest-hpong.log | tail -n 1" | tr ' ' '\n' | sed -n 's/^n=//p')
PONG_TROUBLE=$(on2 "grep -acE '^(PPERR|PPBAD)|bad=[1-9]' /var/log/xen/console/guest-hpong.log")
UP1=$(after hping 0 | grep -an -m 1 '^PPUP' | cut -d: -f1)
PING_TROUBLE=$(after hping "${UP1:-0}" | grep -acE '^(PPERR|PPBAD)|bad=[1-9]')
nums PONG_BOOT PING_BOOT PP_MSGS PONG_LAST PONG_TROUBLE PING_TROUBLE SRUN1_S SRUN_S NFS_S
[ "$PP_MSGS" -gt 0 ] && [ "$PONG_LAST" -gt 0 ] || fail "no ping-pong messages (ping $PP_MSGS, pong $PONG_LAST)"
[ "$PONG_TROUBLE" = 0 ] && [ "$PING_TROUBLE" = 0 ] ||
  fail "ping-pong errors across the hosts (ping $PING_TROUBLE, pong $PONG_TROUBLE lines)"
check_bad hping 0 || fail "bad pages in hping"
destroy_guest hping
on2 "xl destroy hpong" || note "xl destroy hpong on host 2 failed"
pass "srun_hosts=2 srun_first_s=$SRUN1_S srun_rtt_s=$SRUN_S nfs_rw_s=$NFS_S nfs_files_seen=2 ready_uptime_h1_s=$READY_H1 ready_uptime_h2_s=$READY_H2 pong_boot_s=$PONG_BOOT ping_boot_s=$PING_BOOT pp_msgs=$PP_MSGS pp_pong_last=$PONG_LAST pp_bad=0 bad=0"
