# Host-side settings of the test bed: paths, knobs (environment variables) and logging.
# Sourced by testbed/run; every knob has a default here and is documented in docs/testbed.md.

TB=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # testbed/
ROOT=$(cd "$TB/.." && pwd)                            # repository root
# shellcheck source=../pins.env
. "$TB/pins.env"

CACHE=${TB_CACHE:-$TB/cache}     # downloads + extracted packages + shadow Xen (reused)
WORK=${TB_WORK:-$TB/work}        # build products (initramfs trees, workload target dir)
OUTROOT=${TB_OUT:-$TB/out}       # one folder per run: serial logs, results, versions

KVER=${KVER:-$PIN_KVER}          # kernel ABI; "auto" = what linux-image-amd64 points to now
XENV=$PIN_XENV
STAGE=$CACHE/stage               # dpkg -x of the downloaded .debs

# QEMU / Xen knobs
CPU=${CPU:-max,-smap,-erms,-fsrm} # SMAP under TCG crashes the PV dom0 (REPORT pitfall 1); ERMS/FSRM: docs/testbed.md pitfalls
SMP=${SMP:-2}
MEM=${MEM:-4G}
DOM0_MEM=${DOM0_MEM:-1536M}
# dom0 and the guests get separate physical CPUs: dom0 pinned to CPU 0, guests to CPU 1
# (GUEST_CPUS). When dom0 shares a CPU with a running PVH/HVM guest, dom0's processes
# crash at random under QEMU TCG (see docs/testbed.md, "dom0 segfaults").
DOM0_VCPUS=${DOM0_VCPUS:-1}
GUEST_CPUS=${GUEST_CPUS:-1}
TIMEOUT=${TIMEOUT:-1800}         # seconds for one QEMU run (hard bound, `timeout`)
XEN_LOGLVL=${XEN_LOGLVL:-warning}
XEN_EXTRA=${XEN_EXTRA:-}         # appended to the Xen command line
DOM0_EXTRA=${DOM0_EXTRA:-}       # appended to the dom0 kernel command line
GUEST_EXTRA=${GUEST_EXTRA:-}     # appended to every test guest's kernel command line
TB_SERVICE=${TB_SERVICE:-1}     # 1: xckpt serve runs in dom0 as xckpt.service would (0: every command its own process)
XENSTORED=${XENSTORED:-xenstored}
NOREBOOT=${NOREBOOT:-}           # "noreboot": keep Xen up after a dom0 crash (debug only)

# dom0 runner knobs (copied into the dom0 image)
RETRIES=${RETRIES:-1}            # automatic re-runs of a failed scenario (reported as retried=N)
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-900}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-480}  # guest create -> first TICK (HVM took 60-220 s on a busy host)
DOMU_MEM=${DOMU_MEM:-256}        # MiB per test guest
WL_MIB=${WL_MIB:-64}             # workload buffer per guest
WL_RATE=${WL_RATE:-2048}         # pages/s the workload rewrites
WL_PATTERN=${WL_PATTERN:-uniform}
DEMO_REQUIRE_XCKPT=${DEMO_REQUIRE_XCKPT:-1}   # 0: demo passes with the xl baseline alone if xckpt cannot checkpoint Xen

TB_BOOT=${TB_BOOT:-1}            # which boot of the run this is (1, 2, ...; set by run_boots)

XCKPT_PROFILE=${XCKPT_PROFILE:-release}  # cargo profile of the xckpt binary (tools/test-all: ci)
XCKPT_BIN=${XCKPT_BIN:-$ROOT/target/$XCKPT_PROFILE/xckpt}

log() { printf '[testbed %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs "$@", retrying while another apt/dpkg holds the lock (other jobs share the machine).
apt_retry() {
  local i
  for i in $(seq 1 60); do
    if "$@"; then return 0; fi
    if command -v fuser >/dev/null &&
       ! fuser /var/lib/dpkg/lock-frontend /var/lib/apt/lists/lock /var/lib/dpkg/lock >/dev/null 2>&1; then
      [ "$i" -ge 3 ] && return 1     # not a lock problem: give up after 3 tries
    fi
    [ "$i" -ge 24 ] && return 1
    log "apt busy or failed (attempt $i), retrying in 5 s: $*"
    sleep 5
  done
  return 1
}
