#!/bin/sh
# Two-host runs (testbed/run pair; docs/testbed.md "Two hosts"), in each dom0:
#   pair.sh up      link (eth0 on bridge xenbr0, 10.77.0.H, xhost1/xhost2 in /etc/hosts), shared
#                   storage (host 1: XFS on /dev/vda exported over NFS as /shared; host 2:
#                   mounts it at /shared), munged, slurmctld (host 1), slurmd; then one line
#                   "TB-PAIR ready host=H uptime=S" (host 1: once both Slurm nodes are idle and
#                   host 2 has written /shared/.ready-2).
#   pair.sh serve   host 2: wait until host 1 is done (/shared/.pair-done), then return.
#   pair.sh done    host 1: after its scenarios, tell host 2 to power off.
#   pair.sh guest NAME MAC IP ROLE [PEER [DISK]]   start a ping-pong PVH guest here, bridged
#                   to the link (hpc scenarios run it on host 2 through srun); with DISK, its
#                   write log goes to the ext4 image DISK too.
# Every step that fails prints one "TB-PAIR FAILED ..." line and the bring-up goes on: the
# scenarios then fail with the reason (hpc-smoke checks each part).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:$(echo /usr/lib/xen-4.*/bin)
. /etc/testbed.env
H=${TB_PAIR_HOST:-1}
PEER=$((3 - H))
PAIR_WAIT=${PAIR_WAIT:-900}      # seconds to wait for the other host at each step

up_s() { cut -d' ' -f1 /proc/uptime; }
say() { echo "TB-PAIR $* uptime=$(up_s)" > /dev/console; }
failed() { say "FAILED host=$H $*"; }
# modules NAME...: insmod from /lib/mods unless loaded (or built in: no file).
modules() {
  local m
  for m in "$@"; do
    grep -q "^$(echo "$m" | tr - _) " /proc/modules && continue
    [ -f "/lib/mods/$m.ko" ] || continue
    insmod "/lib/mods/$m.ko" || failed "insmod $m"
  done
}
# within SECONDS CMD...: retry CMD every 2 s until it succeeds or SECONDS passed.
within() {
  local limit=$1 t0; shift
  t0=$(up_s)
  until "$@" > /dev/null 2>&1; do
    awk -v a="$t0" -v b="$(up_s)" -v l="$limit" 'BEGIN{exit !(b-a > l)}' && return 1
    sleep 2
  done
}

link_up() {
  hostname "xhost$H"
  printf '127.0.0.1 localhost\n10.77.0.1 xhost1\n10.77.0.2 xhost2\n' > /etc/hosts
  ip link set lo up
  modules virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
    failover net_failover virtio_net llc stp bridge xen-netback
  local i=0
  while [ ! -d /sys/class/net/eth0 ] && [ $i -lt 40 ]; do sleep 0.5; i=$((i + 1)); done
  [ -d /sys/class/net/eth0 ] || { failed "no eth0 (the QEMU socket link)"; return 1; }
  # The link is a port of xenbr0, so guests bridged there reach the other host's guests.
  [ -d /sys/class/net/xenbr0 ] || brctl addbr xenbr0 || { failed "brctl addbr xenbr0"; return 1; }
  brctl addif xenbr0 eth0 && ip link set eth0 up && ip addr add "10.77.0.$H/24" dev xenbr0 &&
    ip link set xenbr0 up || { failed "address 10.77.0.$H on xenbr0"; return 1; }
  within "$PAIR_WAIT" ping -c 1 -W 2 "10.77.0.$PEER" || { failed "no ping reply from xhost$PEER"; return 1; }
  say "link host=$H peer=10.77.0.$PEER"
}

# Host 1: XFS on the scratch disk, exported read-write (root not squashed: xckpt runs as
# root on both hosts). A short NFSv4 grace period: the default 90 s would hold host 2's
# first opens.
nfs_server() {
  modules crc32c_generic libcrc32c xfs sunrpc grace lockd nfs_acl auth_rpcgss nfsd
  local i=0
  while [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
  mkdir -p /shared
  mkfs.xfs -q -f -m reflink=1 /dev/vda && mount -t xfs /dev/vda /shared ||
    { failed "XFS on /dev/vda for /shared"; return 1; }
  mkdir -p /var/lib/nfs/v4recovery /var/lib/nfs/rpc_pipefs /run/rpcbind /proc/fs/nfsd
  : > /var/lib/nfs/etab; : > /var/lib/nfs/rmtab
  grep -q ' /proc/fs/nfsd ' /proc/mounts || mount -t nfsd nfsd /proc/fs/nfsd ||
    { failed "mount nfsd"; return 1; }
  echo '/shared 10.77.0.0/24(rw,sync,no_root_squash,no_subtree_check,insecure)' > /etc/exports
  rpcbind -w || failed "rpcbind (NFSv4 goes on without it)"
  exportfs -ra || { failed "exportfs -ra"; return 1; }
  rpc.mountd || { failed "rpc.mountd"; return 1; }
  rpc.nfsd --grace-time 10 --lease-time 10 4 || rpc.nfsd -N 3 -U --grace-time 10 --lease-time 10 4 ||
    { failed "rpc.nfsd"; return 1; }
  say "nfs-export host=$H path=/shared"
}

# Host 2: mount host 1's /shared. Attribute caching of 1 s and no cached "no such file": a
# file the other host just wrote shows up here at once.
nfs_client() {
  modules sunrpc grace lockd netfs fscache nfs dns_resolver nfsv4
  mkdir -p /shared /var/lib/nfs
  within "$PAIR_WAIT" mount.nfs 10.77.0.1:/shared /shared -n -o vers=4.2,actimeo=1,lookupcache=positive ||
    { failed "mount.nfs 10.77.0.1:/shared"; return 1; }
  say "nfs-mount host=$H path=/shared"
}

# munged (the key came with the image: one per run, the same on both hosts), slurmctld on
# host 1, slurmd on both (root, so that Slurm's tasks run as root, as xckpt needs).
slurm_up() {
  mkdir -p /run/munge /var/lib/munge /var/log/munge /var/spool/slurmctld /var/spool/slurmd \
    /var/log/slurm
  chmod 755 /run/munge; chmod 700 /var/lib/munge /var/log/munge
  # Slurm 22.05's slurmd initializes a cgroup plugin whatever the task and proctrack plugins
  # are, and fails without a file system on /sys/fs/cgroup. cgroup.conf names cgroup/v1 and
  # an empty tmpfs satisfies its init; no controller is used (proctrack/pgid, task/none).
  mkdir -p /sys/fs/cgroup
  grep -q ' /sys/fs/cgroup ' /proc/mounts || mount -t tmpfs -o size=1m cgroup /sys/fs/cgroup
  munged --force || { failed "munged: $(tail -n 2 /var/log/munge/munged.log 2>/dev/null | tr '\n' ' ')"; return 1; }
  munge -n | unmunge > /dev/null || { failed "munge credential round trip"; return 1; }
  if [ "$H" = 1 ]; then
    slurmctld || { failed "slurmctld: $(tail -n 3 /var/log/slurm/slurmctld.log 2>/dev/null | tr '\n' ' ')"; return 1; }
  fi
  slurmd || { failed "slurmd: $(grep -a 'error\|fatal' /var/log/slurm/slurmd.log 2>/dev/null | tail -n 3 | tr '\n' ' ')"; return 1; }
  say "slurm host=$H"
}

# Both nodes registered and idle ("idle*" would be a node that never answered).
nodes_idle() { [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE '^xhost[12] idle$')" = 2 ]; }

case ${1:-} in
  up)
    say "start host=$H"
    link_up
    if [ "$H" = 1 ]; then nfs_server; else nfs_client; fi
    slurm_up
    if [ "$H" = 1 ]; then
      within "$PAIR_WAIT" test -f /shared/.ready-2 || failed "host 2 did not report ready"
      within "$PAIR_WAIT" nodes_idle ||
        failed "Slurm nodes not idle: $(sinfo -h -N -o '%N=%t' 2>&1 | tr '\n' ' ')"
      up_s > /run/tb-pair-ready
      say "ready host=1 nodes=\"$(sinfo -h -N -o '%N=%t' 2>&1 | tr '\n' ' ')\""
    else
      up_s > /shared/.ready-2 || failed "cannot write /shared/.ready-2"
      up_s > /run/tb-pair-ready
      say "ready host=2"
    fi ;;
  serve)
    # Until host 1 says it is done, or it is gone (no ping reply for 2 minutes).
    lost=0
    while [ ! -f /shared/.pair-done ]; do
      if ping -c 1 -W 2 10.77.0.1 > /dev/null 2>&1; then lost=0; else lost=$((lost + 1)); fi
      [ $lost -ge 24 ] && { say "host 1 gone: powering off"; break; }
      sleep 3
    done
    # Tell host 1 (it waits for this before it powers off: a file access on the hard NFS
    # mount would hang once the server is gone), then detach the mount.
    touch /shared/.pair-bye; sync
    say "done host=2"
    umount -f -l /shared 2>/dev/null ;;
  done)
    touch /shared/.pair-done; sync
    within 60 test -f /shared/.pair-bye || failed "host 2 did not answer .pair-done"
    say "done host=1" ;;
  guest)
    # guest NAME MAC IP ROLE [PEER [DISK]]: a ping-pong guest bridged to the link; with DISK
    # (an ext4 image), it also appends its write log there (xvda, on qdisk).
    shift
    export SCN=pair-guest RESULT=/tmp/tb/pair-guest.result
    mkdir -p /tmp/tb
    . /testbed/lib.sh
    . /testbed/group.sh
    setup_bridge
    CFG_EXTRA="vif=['mac=$2,bridge=xenbr0,script=$VIF_SCRIPT']"
    mods=xen-netfront dlog=""
    if [ -n "${6:-}" ]; then
      CFG_EXTRA="$CFG_EXTRA
disk=['format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=$6']"
      mods=xen-netfront,$DLOG_MODS dlog="WL_MOUNT=/dev/xvda WL_DLOG=/mnt/log WL_DLOG_MS=50"
    fi
    # shellcheck disable=SC2086 # $dlog is words
    start_guest pvh "$1" "$DOMU_MEM" WL_MODS="$mods" WL_IP="$3" WL_PP_ROLE="$4" ${5:+WL_PP_PEER=$5} $dlog ||
      { echo "guest $1 did not start: ${BOOT_WHY:-}"; exit 1; }
    echo "guest $1 up boot_s=$BOOT_S" ;;
  *) echo "usage: pair.sh up | serve | done | guest NAME MAC IP ROLE [PEER [DISK]]" >&2; exit 2 ;;
esac
