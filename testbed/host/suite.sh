# Which Debian release a variant's images come from. "stock" and "shadow" are bookworm (Xen
# 4.17, the host's own release: its tools, device model and libraries are copied from the
# host); "xen420" is trixie (Xen 4.20): hypervisor, tools, dom0 kernel, device model and every
# shared library, glibc included, come from trixie's .debs, downloaded with tools/suite-apt
# (a private apt configuration under the variant's cache; the host's apt stays bookworm).
# Each release has its own cache and work folder, so the bookworm ones are never touched.

CACHE_BASE=$CACHE
WORK_BASE=$WORK
KVER_BOOKWORM=$KVER
SUITE=bookworm
ROOTFS=                          # where the image's user space comes from ("" = this host)

# Sets the globals of variant $1's release.
use_variant() {
  case $1 in
    stock|shadow)
      SUITE=bookworm; XENV=$PIN_XENV; KVER=$KVER_BOOKWORM
      CACHE=$CACHE_BASE; WORK=$WORK_BASE; ROOTFS= ;;
    xen420)
      SUITE=trixie; XENV=$PIN_TRIXIE_XENV; KVER=$PIN_TRIXIE_KVER
      CACHE=$CACHE_BASE/trixie; WORK=$WORK_BASE/trixie; ROOTFS=$CACHE_BASE/trixie/stage ;;
    *) die "unknown variant '$1' (stock | shadow | xen420)" ;;
  esac
  STAGE=$CACHE/stage
}

# The packages of a trixie image: their whole dependency closure is unpacked (the libraries
# are then picked per binary by trixie's own loader, see lib_list).
TRIXIE_CLOSURE="xen-utils-$PIN_TRIXIE_XENV xen-utils-common libxenmisc$PIN_TRIXIE_XENV
  libxenforeignmemory1 qemu-system-xen qemu-system-data seabios xenstore-utils e2fsprogs
  xfsprogs libgcc-s1"
# ... and the ones taken alone (no dependencies needed in the image).
TRIXIE_ALONE="xen-hypervisor-$PIN_TRIXIE_XENV-amd64 linux-image-$PIN_TRIXIE_KVER busybox-static"

# Downloads and unpacks a trixie variant's parts into $STAGE (skipped when already there).
fetch_parts_suite() {
  local stamp=$CACHE/parts-$KVER.done
  if [ -f "$stamp" ] && [ -f "$CACHE/xen-$XENV" ]; then return 0; fi
  local apt=$CACHE/apt debs=$CACHE/debs
  mkdir -p "$debs"
  log "downloading $SUITE's $TRIXIE_CLOSURE (with dependencies) and $TRIXIE_ALONE"
  # shellcheck disable=SC2086
  "$ROOT/tools/suite-apt" "$SUITE" "$apt" closure $TRIXIE_CLOSURE >"$CACHE/apt.log" 2>&1 ||
    die "cannot download $SUITE's packages (see $CACHE/apt.log)"
  # shellcheck disable=SC2086
  (cd "$debs" && "$ROOT/tools/suite-apt" "$SUITE" "$apt" download $TRIXIE_ALONE) >>"$CACHE/apt.log" 2>&1 ||
    die "cannot download $TRIXIE_ALONE from $SUITE (see $CACHE/apt.log; pins in testbed/pins.env)"
  cp -l "$apt"/cache/archives/*.deb "$debs/" 2>/dev/null || cp "$apt"/cache/archives/*.deb "$debs/"
  rm -rf "$STAGE" && mkdir -p "$STAGE"
  local f
  for f in "$debs"/*.deb; do dpkg -x "$f" "$STAGE"; done
  # trixie's packages install under /usr; binaries still name /lib64/ld-linux-x86-64.so.2.
  local x
  for x in bin sbin lib lib64; do
    if [ -d "$STAGE/$x" ] && [ ! -L "$STAGE/$x" ]; then
      mkdir -p "$STAGE/usr/$x" && cp -a "$STAGE/$x/." "$STAGE/usr/$x/" && rm -rf "${STAGE:?}/$x"
    fi
    mkdir -p "$STAGE/usr/$x"
    ln -sfn "usr/$x" "$STAGE/$x"
  done
  # The kernel's modules are xz-compressed; busybox insmod wants plain .ko.
  find "$STAGE/lib/modules/$KVER/kernel" -name '*.ko.xz' \( -path '*/drivers/*' -o -path '*/fs/*' \
       -o -path '*/lib/*' -o -path '*/crypto/*' -o -path '*/net/*' \) -print0 | xargs -0 -r -P2 xz -d
  zcat "$STAGE/boot/xen-$XENV-amd64.gz" > "$CACHE/xen-$XENV"
  record_versions > "$CACHE/versions.txt"
  touch "$stamp"
}

# ldd for the image's user space: the host's ldd (bookworm), or trixie's own loader over the
# unpacked libraries, one file at a time.
lib_list() {
  if [ -z "$ROOTFS" ]; then ldd "$@"; return; fi
  local f
  for f in "$@"; do
    "$ROOTFS/usr/lib64/ld-linux-x86-64.so.2" \
      --library-path "$ROOTFS/usr/lib/x86_64-linux-gnu:$ROOTFS/usr/lib/xen-$XENV/lib/x86_64-linux-gnu" \
      --list "$f" || true
  done
}
