# Host dependencies: apt packages for the host, and the Debian parts that go into the images
# (downloaded with `apt-get download`, unpacked with `dpkg -x` under cache/; the host's own
# boot setup is never touched).

# Packages installed on the host. qemu-system-xen only supplies the HVM device model that is
# copied into dom0; libxen-dev supplies the libxen* libraries xl and xckpt need;
# xenstore-utils the xenstore-read/-write the test bed's disk hotplug script uses in dom0.
# qemu-utils: qemu-nbd and qemu-img for tests/disk_nbd.rs.
HOST_PKGS="qemu-system-x86 qemu-utils qemu-system-xen libxen-dev cpio gzip perl time curl jq
  ca-certificates gcc libc6-dev xz-utils xfsprogs e2fsprogs
  xenstore-utils"
# Extra host packages for the shadow-paging hypervisor rebuild.
SHADOW_PKGS="make flex bison python3 gcc dpkg-dev"

# Installs whatever of "$@" is missing (apt-get update first, once per run).
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${TB_APT_UPDATED:-}" ]; then apt_retry apt-get update -q; TB_APT_UPDATED=1; fi
  local pin
  pin=$(qemu_utils_pin "${missing[@]}")
  [ -z "$pin" ] || log "taking $pin: the installed qemu-utils is newer than the release's emulator and Breaks it"
  # shellcheck disable=SC2086 # $pin is one word or empty
  apt_retry apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}" $pin
}

# A host may carry a newer qemu-utils (a backport: qemu-img 10) whose Breaks rule out the
# release's qemu-system-common. When qemu-system-x86 is about to be installed, prints
# "qemu-utils=VERSION" of the emulator's own version (qemu-img stays, one release older).
qemu_utils_pin() {
  [[ " $* " == *" qemu-system-x86 "* ]] || return 0
  local have want
  have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null) || return 0
  want=$(apt-cache madison qemu-system-common | awk 'NR == 1 { print $3 }')
  [ -n "$want" ] && dpkg --compare-versions "$have" gt "$want" || return 0
  echo "qemu-utils=$want"
}

# Prints the kernel ABI that linux-image-amd64 points to right now.
resolve_kver() {
  apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*-amd64\)$/\1/p' | head -1
}

# Ensures cargo exists (CI machines may lack Rust).
ensure_rust() {
  command -v cargo >/dev/null && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH=$HOME/.cargo/bin:$PATH; return 0; }
  log "installing Rust with rustup (cargo not found)"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH=$HOME/.cargo/bin:$PATH
}

# Downloads and unpacks the image parts into $STAGE (skipped when already there).
fetch_parts() {
  [ "$SUITE" = bookworm ] || { fetch_parts_suite; return; }
  [ "$KVER" = auto ] && KVER=$(resolve_kver)
  local stamp=$CACHE/parts-$KVER.done
  if [ -f "$stamp" ] && [ -f "$CACHE/xen-$XENV" ]; then return 0; fi
  local debs=$CACHE/debs
  mkdir -p "$debs"
  local pkgs="xen-hypervisor-$XENV-amd64 xen-utils-$XENV xen-utils-common linux-image-$KVER busybox-static"
  log "apt-get download $pkgs"
  if [ -z "${TB_APT_UPDATED:-}" ]; then apt_retry apt-get update -q; TB_APT_UPDATED=1; fi
  if ! (cd "$debs" && apt_retry apt-get -o APT::Sandbox::User=root download $pkgs); then
    die "cannot download $pkgs; if linux-image-$KVER left the archive, run with KVER=auto" \
        "(now resolves to $(resolve_kver)) and update PIN_KVER in testbed/pins.env"
  fi
  rm -rf "$STAGE" && mkdir -p "$STAGE"
  local p f
  for p in $pkgs; do
    f=$(ls -t "$debs"/"${p}"_*.deb | head -1)
    dpkg -x "$f" "$STAGE"
  done
  # QEMU's multiboot loader needs the plain 32-bit ELF, not Debian's xen.gz.
  zcat "$STAGE/boot/xen-$XENV-amd64.gz" > "$CACHE/xen-$XENV"
  record_versions > "$CACHE/versions.txt"
  touch "$stamp"
}

# Prints the versions of every part (host packages and unpacked debs).
record_versions() {
  local p f
  echo "kernel_abi=$KVER"
  for f in "$CACHE"/debs/*.deb; do
    dpkg-deb -W --showformat='${Package}=${Version}\n' "$f"
  done
  echo "suite=$SUITE"
  local host="qemu-system-x86 qemu-system-xen libxen-dev"
  [ "$SUITE" = bookworm ] || host=qemu-system-x86     # the rest comes from $SUITE's debs
  for p in $host; do
    echo "$p=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)"
  done
}

# Everything the bed needs on the host.
deps() {
  ensure_pkgs $HOST_PKGS
  ensure_rust
  fetch_parts
  log "parts ready: $(tr '\n' ' ' < "$CACHE/versions.txt")"
}
