# Builds what goes into QEMU: the static guest workload, the xckpt binary, the domU
# initramfs and the dom0 initramfs. The dom0 image is two concatenated cpio archives (the
# kernel accepts that): a large "base" (busybox, Xen tools, device model, guest kernel) and a
# small per-run part (test bed scripts, scenarios, settings).

WL_TARGET=$WORK/workload-target
WORKLOAD_BIN=$WL_TARGET/x86_64-unknown-linux-gnu/release/workload

# The guest workload, statically linked against glibc.
build_workload() {
  log "building the guest workload (static)"
  (cd "$TB/workload" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -q --release --locked --target x86_64-unknown-linux-gnu --target-dir "$WL_TARGET")
  ldd "$WORKLOAD_BIN" 2>&1 | grep -qE 'statically linked|not a dynamic' ||
    die "$WORKLOAD_BIN is not statically linked"
}

# The guest agent (tools/xckpt-agent), statically linked like the workload.
AGENT_BIN=$WL_TARGET/x86_64-unknown-linux-gnu/release/xckpt-agent
build_agent() {
  log "building xckpt-agent (static)"
  (cd "$ROOT/tools/xckpt-agent" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -q --release --locked --target x86_64-unknown-linux-gnu --target-dir "$WL_TARGET")
  ldd "$AGENT_BIN" 2>&1 | grep -qE 'statically linked|not a dynamic' ||
    die "$AGENT_BIN is not statically linked"
}

# The xckpt binary from the repository root, built with cargo profile $XCKPT_PROFILE
# (XCKPT_BUILD=0 uses $XCKPT_BIN as is).
build_xckpt() {
  if [ "${XCKPT_BUILD:-1}" = 1 ]; then
    log "cargo build --profile $XCKPT_PROFILE (xckpt)"
    (cd "$ROOT" && cargo build -q --profile "$XCKPT_PROFILE" --bin xckpt)
  fi
  [ -x "$XCKPT_BIN" ] || die "no xckpt binary at $XCKPT_BIN"
}

# Copies the shared libraries of ELF files $2.. into root $1 (lib_list: the host's ldd, or
# trixie's loader over $ROOTFS; dlopen()ed ones are extra), at their paths inside the image.
copy_libs() {
  local root=$1 l dst; shift
  # A loader line names the loader once: "/lib64/ld-linux-x86-64.so.2 => $ROOTFS/..." under
  # trixie's loader (take the ROOTFS file, not the host's /lib64 one), a bare path under ldd.
  { lib_list "$@" 2>/dev/null || true; } | awk '/=> \//{print $3; next} /^\t\/lib64/{print $1}' | sort -u |
    while read -r l; do
      dst=${l#"$ROOTFS"}
      mkdir -p "$root$(dirname "$dst")"
      cp -L "$l" "$root$dst"
    done
}

# mod_file M: the .ko file of module M in the staged kernel; nothing if it is built in (trixie's
# 6.12 has virtio and virtio_pci built in).
mod_file() {
  local f
  grep -qE "/$1\.ko\$" "$STAGE/lib/modules/$KVER/modules.builtin" 2>/dev/null && return 0
  f=$(find "$STAGE/lib/modules/$KVER/kernel" -name "$1.ko" | head -1)
  [ -n "$f" ] || die "module $1 not found in $STAGE/lib/modules/$KVER"
  echo "$f"
}
# Copies kernel modules "$2.." (names without .ko) flat into root $1 under /lib/mods.
copy_mods() {
  local root=$1 m f; shift
  mkdir -p "$root/lib/mods"
  for m in "$@"; do
    f=$(mod_file "$m") || exit 1
    [ -n "$f" ] || continue
    cp "$f" "$root/lib/mods/"
  done
}
# mod_deps M...: modules M and every module they need (the `depends=` of each .ko's modinfo;
# the .debs carry no modules.dep), each after what it needs and once; built-in ones are left
# out.
mod_deps() {
  local m f d
  for m in "$@"; do
    f=$(mod_file "$m") || exit 1
    [ -n "$f" ] || continue
    for d in $(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | tr , ' '); do mod_deps "$d"; done
    echo "$m"
  done | awk '!seen[$0]++'
}
# The emulated IDE disk of an HVM guest (xckpt-hvm-dma: QEMU writes the pages a read fills).
DOMU_IDE_MODS="ata_piix sd_mod"
# Group and disk scenarios: block and network front-ends and ext4 in the guest; the virtio
# disk, XFS, the bridge, netback and e2fsprogs/xfsprogs in dom0.
DOMU_MODS="xen-blkfront xen-netfront crc32c_generic crc16 mbcache jbd2 ext4"
DOM0_MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
  crc32c_generic libcrc32c xfs llc stp bridge xen-netback"
DOM0_TOOLS="/usr/sbin/mkfs.xfs /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/debugfs"

# Packs directory $1 into the gzipped newc cpio $2.
pack() {
  (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$2.tmp"
  mv "$2.tmp" "$2"
}

build_domu() {
  local d=$WORK/domu
  rm -rf "$d" && mkdir -p "$d"/{bin,dev,proc,sys,tmp}
  cp "$STAGE/bin/busybox" "$WORKLOAD_BIN" "$d/bin/"
  ln -s busybox "$d/bin/sh"
  cp "$AGENT_BIN" "$d/bin/"
  mkdir -p "$d/lib" && cp "$STAGE/lib/modules/$KVER/kernel/drivers/block/xen-blkfront.ko" "$d/lib/"
  install -m 755 "$TB/domu/init" "$d/init"
  mknod -m 600 "$d/dev/console" c 5 1
  copy_mods "$d" $DOMU_MODS
  # The IDE stack in load order, for the guest's init (DMA_MIB).
  local ide; ide=$(mod_deps $DOMU_IDE_MODS) || die "the guest's IDE modules: see above"
  # shellcheck disable=SC2086
  copy_mods "$d" $ide
  echo $ide > "$d/lib/mods/ide.order"
  pack "$d" "$WORK/domu.cpio.gz"
}

build_dom0_base() {
  local d=$WORK/dom0-base x=/usr/lib/xen-$XENV
  rm -rf "$d" && mkdir -p "$d"/{bin,sbin,dev,proc,sys,tmp,etc,guest,usr/lib,usr/local/bin,lib64}
  if [ -n "$ROOTFS" ]; then     # trixie: /lib and /lib64 are /usr's, as its packages expect
    rmdir "$d/lib64" && mkdir -p "$d/usr/lib64" && ln -s usr/lib "$d/lib" && ln -s usr/lib64 "$d/lib64"
  fi
  cp "$STAGE/bin/busybox" "$d/bin/"
  mknod -m 600 "$d/dev/console" c 5 1
  mkdir -p "$d/lib/modules/$KVER"
  cp -r "$STAGE/lib/modules/$KVER/kernel/drivers/xen" "$d/lib/modules/$KVER/"
  copy_mods "$d" $DOM0_MODS
  local tools; tools=$(printf "$ROOTFS%s " $DOM0_TOOLS)
  mkdir -p "$d/usr/sbin" && cp $tools "$d/usr/sbin/" && copy_libs "$d" $tools
  [ -f "$ROOTFS/etc/mke2fs.conf" ] && cp "$ROOTFS/etc/mke2fs.conf" "$d/etc/"
  # A disk for guests (eviction scenarios: droppable page cache): loop + blkback.
  cp -r "$STAGE/lib/modules/$KVER/kernel/drivers/block/loop.ko" \
        "$STAGE/lib/modules/$KVER/kernel/drivers/block/xen-blkback" "$d/lib/modules/$KVER/"
  cp -a "$STAGE$x" "$d/usr/lib/"
  rm -rf "$d$x/lib/python" "$d$x/boot/xen-shim"
  cp -a "$STAGE/etc/xen" "$d/etc/"
  cp "$XCKPT_BIN" "$WORKLOAD_BIN" "$d/usr/local/bin/"
  copy_libs "$d" $(find "$d$x/bin" -type f) "$d/usr/local/bin/xckpt"
  # xckpt dlopen()s these at run time; xl links them too, but make sure.
  local l
  mkdir -p "$d/usr/lib/x86_64-linux-gnu"
  for l in libxenctrl.so.$XENV libxenguest.so.$XENV libxenforeignmemory.so.1 libxencall.so.1 \
           libxengnttab.so.1 libxenevtchn.so.1 libxenstore.so.4 libxentoollog.so.1 \
           libxendevicemodel.so.1; do
    [ -e "$ROOTFS/usr/lib/x86_64-linux-gnu/$l" ] &&
      cp -L "$ROOTFS/usr/lib/x86_64-linux-gnu/$l" "$d/usr/lib/x86_64-linux-gnu/"
  done
  # glibc dlopen()s libgcc_s for pthread_cancel; xl aborts without it and ldd does not show it.
  mkdir -p "$d/lib/x86_64-linux-gnu"
  cp -L "$ROOTFS/lib/x86_64-linux-gnu/libgcc_s.so.1" "$d/lib/x86_64-linux-gnu/"
  # xenstore-read/-write for testbed/dom0/blk-loop.sh (the disk hotplug script).
  mkdir -p "$d/usr/bin"
  cp -L "$ROOTFS/usr/bin/xenstore-read" "$ROOTFS/usr/bin/xenstore-write" "$d/usr/bin/"
  copy_libs "$d" "$d/usr/bin/xenstore-read"
  # jq: scenarios read xckpt's --json reports with a real parser (testbed/dom0/lib.sh `json`).
  command -v jq > /dev/null || die "jq is missing on the host (apt-get install jq)"
  cp -L "$(command -v jq)" "$d/usr/bin/jq"
  copy_libs "$d" "$d/usr/bin/jq"
  # HVM guests: the qemu-xen device model, SeaBIOS and the option ROMs for direct kernel boot.
  mkdir -p "$d/usr/libexec" "$d/usr/share/qemu" "$d/usr/share/seabios"
  cp "$ROOTFS/usr/libexec/xen-qemu-system-i386" "$d/usr/libexec/"
  copy_libs "$d" "$d/usr/libexec/xen-qemu-system-i386"
  cp "$ROOTFS/usr/share/seabios/bios-256k.bin" "$d/usr/share/seabios/"
  cp "$ROOTFS"/usr/share/qemu/{linuxboot_dma.bin,linuxboot.bin,kvmvapic.bin} "$d/usr/share/qemu/"
  cp -r "$ROOTFS/usr/share/qemu/keymaps" "$d/usr/share/qemu/"
  cp "$STAGE/boot/vmlinuz-$KVER" "$d/guest/vmlinuz"
  cp "$WORK/domu.cpio.gz" "$d/guest/"
  check_dom0_userspace "$d"
  pack "$d" "$WORK/dom0-base.cpio.gz"
}

# The image's own loader and libraries run its programs (chroot, so nothing of the host's
# leaks in): a mixed loader and libc fails here, not as every `xl create` in the boot.
check_dom0_userspace() {
  local d=$1 p out
  if [ "$(id -u)" != 0 ]; then log "not root: the dom0 image's programs are not test-run"; return; fi
  for p in "/usr/lib/xen-$XENV/bin/xl help" "/usr/local/bin/xckpt --version" "/usr/bin/jq --version" \
           "/usr/bin/xenstore-read --help" "/usr/sbin/e2fsck -V"; do
    out=$(chroot "$d" ${p} 2>&1 >/dev/null) && continue
    case $out in *"symbol lookup error"*|*"error while loading shared libraries"*|*"failed to run command"*)
      die "dom0 image $d: '${p}' does not run with the image's libraries: $(printf %s "$out" | head -1) (a host library got into the image: see copy_libs)" ;;
    esac
  done
}

# Per-run part: scripts, scenarios and settings. $1 = mode (run | shell), $2.. = scenarios.
build_dom0_run() {
  local mode=$1; shift
  local d=$WORK/dom0-run
  rm -rf "$d" && mkdir -p "$d/testbed" "$d/etc"
  install -m 755 "$TB/dom0/init" "$d/init"
  cp "$TB"/dom0/*.sh "$d/testbed/"
  cp -r "$TB/scenarios" "$d/testbed/"
  mkdir -p "$d/testbed/tools" && cp "$TB/../tools/systemd/"*.service "$TB/../tools/xckpt.cron" "$d/testbed/tools/"
  # The guest kernel's symbols for xckpt --guest-profile (evict-vmi-*; docs/eviction.md):
  # Debian's linux-image ships a stub System.map, the real one is in its -dbg package.
  [ -f "$TB/profiles/System.map-$KVER" ] && cp "$TB/profiles/System.map-$KVER" "$d/testbed/guest.System.map"
  {
    echo "TB_MODE=$mode"
    echo "TB_SCENARIOS=\"$*\""
    local k
    for k in RETRIES SCENARIO_TIMEOUT BOOT_TIMEOUT DOMU_MEM WL_MIB WL_RATE WL_PATTERN XENSTORED \
             DEMO_REQUIRE_XCKPT TB_VARIANT GUEST_CPUS GUEST_EXTRA TB_BOOT TB_SERVICE; do
      echo "$k=\"${!k}\""
    done
    # Extra settings of one boot (testbed/run pair: TB_PAIR_HOST=1 or 2).
    [ -z "${TB_ENV_EXTRA:-}" ] || printf '%s\n' "$TB_ENV_EXTRA"
  } > "$d/etc/testbed.env"
  pack "$d" "$WORK/dom0-run.cpio.gz"
  cat "$WORK/dom0-base.cpio.gz" "$WORK/dom0-run.cpio.gz" > "$WORK/dom0.cpio.gz"
}

# Builds everything except the per-run part.
build_images() {
  [ "$KVER" = auto ] && KVER=$(resolve_kver)
  mkdir -p "$WORK"
  build_workload
  build_agent
  build_xckpt
  build_domu
  build_dom0_base
  # Bookworm: the HPC part (munge, Slurm, NFS) that two-host runs append (host/pair.sh).
  if [ "$SUITE" = bookworm ]; then build_dom0_hpc; fi
  log "images: $(cd "$WORK" && du -h domu.cpio.gz dom0-base.cpio.gz $([ "$SUITE" = bookworm ] && echo dom0-hpc.cpio.gz) | awk '{print $2"="$1}' | tr '\n' ' ')"
}
