# Two Xen hosts at once (`testbed/run pair`, issue 17): two QEMU boots of the stock variant
# side by side, their dom0s linked by a QEMU socket network on 127.0.0.1, with munge + Slurm
# (slurmctld on host 1, slurmd on both) and NFS (host 1 exports /shared, host 2 mounts it)
# from Debian's packages. Host 1 runs the scenarios; host 2 serves until host 1 is done.
# The dom0 side is testbed/dom0/pair.sh; docs/testbed.md, "Two hosts".

# The HPC packages of the dom0 image (bookworm). Their whole dependency closure is downloaded
# (tools/suite-apt, as for trixie); only packages the host does not have installed are
# unpacked, so every library the host has comes from the host, like the rest of the image.
HPC_PKGS="munge slurmd slurmctld slurm-client slurm-wlm-basic-plugins nfs-kernel-server nfs-common rpcbind"
HPC=$CACHE/hpc                   # downloads and the unpacked closure (cache/hpc/stage)
# dom0 modules: the virtio NIC of the link, the NFS server and client.
HPC_MODS="failover net_failover virtio_net sunrpc grace lockd nfs_acl auth_rpcgss nfsd
  netfs fscache nfs dns_resolver nfsv4"
PAIR_PORT=${PAIR_PORT:-}         # TCP port of the link on 127.0.0.1 (default: a free one)
PAIR_GRACE=${PAIR_GRACE:-90}     # seconds host 2 may run on after host 1 powered off

# Downloads and unpacks the HPC packages into $HPC/stage (skipped when already there).
fetch_hpc() {
  local stamp=$HPC/stage.done
  [ -f "$stamp" ] && return 0
  local apt=$HPC/apt f p
  mkdir -p "$HPC"
  log "downloading bookworm's $HPC_PKGS (with dependencies)"
  # shellcheck disable=SC2086
  "$ROOT/tools/suite-apt" bookworm "$apt" closure $HPC_PKGS > "$HPC/apt.log" 2>&1 ||
    die "cannot download $HPC_PKGS (see $HPC/apt.log)"
  rm -rf "$HPC/stage" && mkdir -p "$HPC/stage"
  for f in "$apt"/cache/archives/*.deb; do
    p=$(dpkg-deb -W --showformat='${Package}' "$f")
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' && continue
    dpkg -x "$f" "$HPC/stage"
    dpkg-deb -W --showformat='${Package}=${Version}\n' "$f" >> "$HPC/stage/versions.txt"
  done
  touch "$stamp"
}

# Copies the libraries of ELF files $2.. into root $1: from the HPC stage if there, else the
# host's (ldd with the stage first on the library path). Fails on a library found nowhere.
copy_hpc_libs() {
  local root=$1 l dst missing; shift
  local lp=$HPC/stage/usr/lib/x86_64-linux-gnu:$HPC/stage/lib/x86_64-linux-gnu:$HPC/stage/usr/lib/x86_64-linux-gnu/slurm-wlm
  missing=$(LD_LIBRARY_PATH=$lp ldd "$@" 2>/dev/null | grep 'not found' | sort -u || true)
  [ -z "$missing" ] || die "HPC image: libraries found nowhere: $(echo "$missing" | tr -s '\t\n' '  ')"
  LD_LIBRARY_PATH=$lp ldd "$@" 2>/dev/null | awk '/=> \//{print $3}' | sort -u |
    while read -r l; do
      dst=${l#"$HPC/stage"}
      mkdir -p "$root$(dirname "$dst")"
      [ -e "$root$dst" ] || cp -L "$l" "$root$dst"
    done
}

# The HPC part of the dom0 image, $WORK/dom0-hpc.cpio.gz: munge, Slurm, the NFS server and
# client, qemu-nbd and qemu-img, their libraries and modules. Only pair boots append it to the
# dom0 image.
build_dom0_hpc() {
  fetch_hpc
  local d=$WORK/dom0-hpc s=$HPC/stage x
  rm -rf "$d" && mkdir -p "$d"/{etc,sbin,usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,lib/mods}
  cp "$s"/usr/sbin/{munged,rpc.nfsd,rpc.mountd,exportfs} "$d/usr/sbin/"
  cp "$s"/usr/bin/{munge,unmunge} "$d/usr/bin/"
  for x in slurmctld slurmd slurmstepd; do
    cp "$s/usr/sbin/$x-wlm" "$d/usr/sbin/" && ln -s "$x-wlm" "$d/usr/sbin/$x"
  done
  for x in srun scontrol sinfo squeue scancel sbatch salloc; do cp "$s/usr/bin/$x" "$d/usr/bin/"; done
  cp "$s"/sbin/{mount.nfs,rpcbind} "$d/sbin/" && ln -s mount.nfs "$d/sbin/mount.nfs4"
  # Disks that follow their domain (restore across hosts): the host's own qemu-nbd and
  # qemu-img (qemu-utils, a host package).
  cp "$(command -v qemu-nbd)" "$(command -v qemu-img)" "$d/usr/bin/" ||
    die "HPC image: no qemu-nbd/qemu-img on the host (install qemu-utils)"
  # The hpc scenarios' xentop sampler runs under nice (dom0's busybox has none).
  cp /usr/bin/nice "$d/usr/bin/"
  cp -a "$s/usr/lib/x86_64-linux-gnu/slurm-wlm" "$d/usr/lib/x86_64-linux-gnu/"
  # PMIx is not in the closure (slurm-wlm-basic-plugins only recommends it); without these
  # two plugins slurmd does not log an MPI error at every start.
  rm -f "$d"/usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix*.so
  copy_hpc_libs "$d" "$d"/usr/sbin/*-wlm "$d"/usr/sbin/{munged,rpc.nfsd,rpc.mountd,exportfs} \
    "$d"/usr/bin/* "$d"/sbin/{mount.nfs,rpcbind} "$d"/usr/lib/x86_64-linux-gnu/slurm-wlm/*.so
  # libtirpc reads /etc/netconfig; getaddrinfo and getpwnam read the files below.
  cp /etc/netconfig /etc/protocols /etc/services "$d/etc/"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\n' \
    > "$d/etc/nsswitch.conf"
  printf 'root:x:0:0:root:/root:/bin/sh\n_rpc:x:100:65534::/run/rpcbind:/bin/false\nstatd:x:101:65534::/var/lib/nfs:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    > "$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$d/etc/group"
  for x in $HPC_MODS; do
    grep -qE "/$x\.ko\$" "$STAGE/lib/modules/$KVER/modules.builtin" && continue
    cp "$(find "$STAGE/lib/modules/$KVER/kernel" -name "$x.ko" | head -1)" "$d/lib/mods/" ||
      die "module $x not found in $STAGE/lib/modules/$KVER"
  done
  pack "$d" "$WORK/dom0-hpc.cpio.gz"
}

# The per-run part both hosts share: the munge key (new for every run) and slurm.conf.
build_pair_conf() {
  local d=$WORK/dom0-pairconf
  rm -rf "$d" && mkdir -p "$d/etc/munge" "$d/etc/slurm"
  dd if=/dev/urandom of="$d/etc/munge/munge.key" bs=1024 count=1 status=none
  chmod 700 "$d/etc/munge" && chmod 400 "$d/etc/munge/munge.key"
  # Two nodes of one CPU (dom0 has DOM0_VCPUS=1), one partition; no cgroups, no accounting.
  # The timeouts are long: everything runs under QEMU TCG.
  cat > "$d/etc/slurm/slurm.conf" <<'CONF'
ClusterName=xtb
SlurmctldHost=xhost1(10.77.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/linear
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
SlurmctldTimeout=120
SlurmdTimeout=300
MessageTimeout=60
InactiveLimit=0
KillWait=10
NodeName=xhost1 NodeAddr=10.77.0.1 CPUs=1 State=UNKNOWN
NodeName=xhost2 NodeAddr=10.77.0.2 CPUs=1 State=UNKNOWN
PartitionName=xtb Nodes=xhost1,xhost2 Default=YES MaxTime=INFINITE State=UP
CONF
  # slurmd loads a cgroup plugin in any case; v1's init needs only a file system on
  # /sys/fs/cgroup (dom0/pair.sh mounts an empty tmpfs). No controller is used.
  echo 'CgroupPlugin=cgroup/v1' > "$d/etc/slurm/cgroup.conf"
  pack "$d" "$WORK/dom0-pairconf.cpio.gz"
}

# A free TCP port on 127.0.0.1.
free_port() {
  local p
  for p in $(shuf -i 20000-39999 -n 50); do
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
  done
  return 1
}

# Starts host $1's QEMU in the background (serial log into $2/serial.log); extra QEMU options
# follow. Sets PAIR_PID_$1 (the pipeline's last process: wait for it).
start_pair_qemu() {
  local h=$1 dir=$2; shift 2
  local xen; xen=$(xen_image stock)
  rm -f "$WORK/dom0-disk-$h.img" && truncate -s 2G "$WORK/dom0-disk-$h.img"
  DOM0_IMG=$WORK/dom0-pair$h.cpio.gz qemu_cmd "$xen" -monitor none -serial stdio \
    -drive "file=$WORK/dom0-disk-$h.img,if=virtio,format=raw,cache=unsafe" -pidfile "$dir/qemu.pid" "$@"
  printf '%s\n' "${QEMU[@]}" > "$dir/qemu-cmd.txt"
  record_versions > "$dir/versions.txt"
  cat "$HPC/stage/versions.txt" >> "$dir/versions.txt"
  (
    /usr/bin/time -v -o "$dir/qemu-time.txt" timeout --foreground --kill-after=10 "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 |
      perl -MTime::HiRes=time -ne 'BEGIN{$|=1;$t0=time} s/\r/\n/g; for (split /\n/) { printf "[H%8.2f] %s\n", time-$t0, $_ }' |
      tee "$dir/serial.log" | if [ "${TB_QUIET:-1}" = 1 ]; then grep -aE '\] (PASS|FAIL|TB-)' --line-buffered | sed -u "s/^/[host$h] /"; else sed -u "s/^/[host$h] /"; fi
    echo "${PIPESTATUS[0]}" > "$dir/qemu-rc"
  ) &
  eval "PAIR_PID_$h=$!"
}

# Stops the QEMUs of pair folders "$@" (their -pidfile), if still running.
pair_stop() {
  local d
  for d in "$@"; do [ -f "$d/qemu.pid" ] && kill -TERM "$(cat "$d/qemu.pid")" 2>/dev/null; done
  return 0
}

# Runs scenarios "$@" on two stock hosts at once; host 1's results go to out/$RUN/results.txt.
boot_pair() {
  local run=$OUTROOT/$RUN h1=$OUTROOT/$RUN/pair-host1 h2=$OUTROOT/$RUN/pair-host2
  mkdir -p "$h1" "$h2"
  pgrep -a qemu-system >&2 && log "note: other QEMUs are running (above); the pair adds two"
  [ -f "$WORK/dom0-hpc.cpio.gz" ] || build_dom0_hpc
  build_pair_conf
  TB_VARIANT=stock TB_ENV_EXTRA="TB_PAIR_HOST=1" build_dom0_run run "$@"
  cat "$WORK/dom0-base.cpio.gz" "$WORK/dom0-hpc.cpio.gz" "$WORK/dom0-run.cpio.gz" \
      "$WORK/dom0-pairconf.cpio.gz" > "$WORK/dom0-pair1.cpio.gz"
  TB_VARIANT=stock TB_ENV_EXTRA="TB_PAIR_HOST=2" build_dom0_run serve
  cat "$WORK/dom0-base.cpio.gz" "$WORK/dom0-hpc.cpio.gz" "$WORK/dom0-run.cpio.gz" \
      "$WORK/dom0-pairconf.cpio.gz" > "$WORK/dom0-pair2.cpio.gz"
  local port=${PAIR_PORT:-$(free_port)}
  [ -n "$port" ] || die "no free TCP port on 127.0.0.1 for the link"
  log "pair: host 1 and host 2 (stock), link on 127.0.0.1:$port, scenario(s): $*  (logs: $h1/serial.log, $h2/serial.log, timeout ${TIMEOUT}s)"
  local t0; t0=$(date +%s.%N)
  # A Ctrl-C or kill of testbed/run must not leave either QEMU behind.
  rm -f "$h1/qemu.pid" "$h2/qemu.pid" "$h1/qemu-rc" "$h2/qemu-rc"
  trap 'pair_stop "$h1" "$h2"; exit 130' INT TERM
  start_pair_qemu 1 "$h1" -netdev "socket,id=link,listen=127.0.0.1:$port" \
    -device virtio-net-pci,netdev=link,mac=52:54:00:77:00:01
  # Host 2 connects: wait until host 1's QEMU listens (QEMU exits if the connect fails).
  for _ in $(seq 1 100); do
    ss -Htln "sport = :$port" | grep -q . && break
    sleep 0.2
  done
  ss -Htln "sport = :$port" | grep -q . || log "pair: host 1's QEMU does not listen on 127.0.0.1:$port"
  start_pair_qemu 2 "$h2" -netdev "socket,id=link,connect=127.0.0.1:$port" \
    -device virtio-net-pci,netdev=link,mac=52:54:00:77:00:02
  wait "$PAIR_PID_1" || true
  # Host 2 powers off once host 1 wrote /shared/.pair-done; bound it in case it cannot.
  for _ in $(seq 1 "$PAIR_GRACE"); do [ -f "$h2/qemu-rc" ] && break; sleep 1; done
  if [ ! -f "$h2/qemu-rc" ]; then
    log "pair: host 2 still up ${PAIR_GRACE}s after host 1 ended; stopping its QEMU"
    kill -TERM "$(cat "$h2/qemu.pid")" 2>/dev/null || true
  fi
  wait "$PAIR_PID_2" || true
  trap - INT TERM
  local secs; secs=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}")
  local h dir
  for h in 1 2; do
    dir=$run/pair-host$h
    {
      echo "pair host$h qemu_rc=$(cat "$dir/qemu-rc" 2>/dev/null || echo unknown) pair_wall_s=$secs"
      grep -aE '^\[H *[0-9.]+\] TB-DOM0 ready' "$dir/serial.log" | head -1 |
        sed -E 's/^\[H *([0-9.]+)\].*/boot_to_dom0_ready_s=\1/'
      grep -aE '^\[H *[0-9.]+\] TB-PAIR ready' "$dir/serial.log" | head -1 |
        sed -E 's/^\[H *([0-9.]+)\].*/boot_to_pair_ready_s=\1/'
      grep -E 'Maximum resident' "$dir/qemu-time.txt" || true
    } > "$dir/timing.txt"
  done
  # Host 1's result lines, with each host's boot-to-ready time (host seconds from its QEMU's
  # start to its "TB-PAIR ready" line) appended like xen=.
  local r1 r2
  r1=$(sed -n 's/^boot_to_pair_ready_s=//p' "$h1/timing.txt"); r2=$(sed -n 's/^boot_to_pair_ready_s=//p' "$h2/timing.txt")
  local add="${r1:+ host1_boot_to_ready_s=$r1}${r2:+ host2_boot_to_ready_s=$r2}"
  collect_results "$h1" "$@" | sed -E "s/ xen=([^ ]*)\$/$add xen=\\1/" > "$h1/results.txt"
  cat "$h1/results.txt" >> "$run/results.txt"
  log "$(cat "$h1/timing.txt" "$h2/timing.txt" | tr '\n' ' ')"
}
