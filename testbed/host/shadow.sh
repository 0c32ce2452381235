# Variant "shadow": Debian's hypervisor is built with CONFIG_SHADOW_PAGING off, so PV guests
# get EOPNOTSUPP for log-dirty. This rebuilds only the hypervisor (xen/ of Debian's `xen`
# source package) with shadow paging on; the 4.17 tools from the binary packages keep working
# (same hypercall ABI within 4.17). Uses a private apt config under cache/xensrc, so the
# host's sources.list is untouched. About 50 s of compiling on 2 cores.

SHADOW_XEN=$CACHE/xen-$XENV-shadow

build_shadow_xen() {
  [ -f "$SHADOW_XEN" ] && return 0
  ensure_pkgs $SHADOW_PKGS
  local src=$CACHE/xensrc
  mkdir -p "$src/apt/lists/partial"
  printf '%s\n' 'deb-src http://deb.debian.org/debian bookworm main' \
    'deb-src http://deb.debian.org/debian-security bookworm-security main' > "$src/sources.list"
  local o=(-o "Dir::Etc::SourceList=$src/sources.list" -o Dir::Etc::SourceParts=/nonexistent
           -o "Dir::State::Lists=$src/apt/lists")
  apt_retry apt-get "${o[@]}" update -q
  # Newest source first; the security pocket's source may 404, then take bookworm main's.
  local v got=
  for v in $(apt-cache "${o[@]}" showsrc xen | sed -n 's/^Version: //p' | sort -rV -u); do
    rm -rf "$src"/xen-4* "$src"/xen_*
    if (cd "$src" && apt-get "${o[@]}" -o APT::Sandbox::User=root source --download-only -q "xen=$v"); then got=$v; break; fi
  done
  [ -n "$got" ] || die "could not download Debian's xen source package"
  log "building the shadow-paging hypervisor from xen $got"
  (
    cd "$src"
    tar xf xen_*.orig.tar.xz
    cd xen-4*/xen
    cp "$STAGE/boot/xen-$XENV-amd64.config" .config
    sed -i 's/^# CONFIG_SHADOW_PAGING is not set/CONFIG_SHADOW_PAGING=y/' .config
    make -s olddefconfig
    grep -q '^CONFIG_SHADOW_PAGING=y' .config
    make -s -j"$(nproc)" XEN_TARGET_ARCH=x86_64
    cp xen "$SHADOW_XEN.tmp"
  )
  mv "$SHADOW_XEN.tmp" "$SHADOW_XEN"
  echo "shadow_xen_source=xen $got" > "$CACHE/shadow-version.txt"
  rm -rf "$src"/xen-4*/
}

# Prints the hypervisor image for variant $1 (stock | shadow).
xen_image() {
  case $1 in
    stock|xen420) echo "$CACHE/xen-$XENV" ;;
    shadow) build_shadow_xen >&2; echo "$SHADOW_XEN" ;;
    *) die "unknown variant '$1' (stock | shadow | xen420)" ;;
  esac
}
