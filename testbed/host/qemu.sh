# Boots Xen + dom0 under QEMU TCG, collects the serial log under out/<run>/<variant>/ and
# extracts the scenario results.

# Prints the Xen command line.
xen_cmdline() {
  echo "console=com1 com1=115200,8n1 loglvl=$XEN_LOGLVL guest_loglvl=$XEN_LOGLVL" \
       "console_timestamps=boot dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=$DOM0_VCPUS" \
       "dom0_vcpus_pin bootscrub=0 $NOREBOOT $XEN_EXTRA"
}

# The QEMU command for hypervisor image $1; extra QEMU options follow.
qemu_cmd() {
  local xen=$1; shift
  # -initrd takes "kernel args,initrd" (multiboot modules); a comma in args would be ",,".
  QEMU=(qemu-system-x86_64 -accel tcg,thread=multi -cpu "$CPU" -smp "$SMP" -m "$MEM"
        -nographic -no-reboot -nodefaults -vga none "$@"
        -kernel "$xen" -append "$(xen_cmdline)"
        -initrd "$STAGE/boot/vmlinuz-$KVER console=hvc0 earlyprintk=xen loglevel=4 $DOM0_EXTRA,${DOM0_IMG:-$WORK/dom0.cpio.gz}")
}

# Runs scenarios "$@" on variant $1 in one QEMU boot; results go to $2/results.txt.
boot_scenarios() {
  local variant=$1 dir=$2; shift 2
  mkdir -p "$dir"
  TB_VARIANT=$variant build_dom0_run run "$@"
  local xen; xen=$(xen_image "$variant")
  # A scratch disk for dom0 (the disk scenarios format it), new and sparse on every boot.
  rm -f "$WORK/dom0-disk.img" && truncate -s 2G "$WORK/dom0-disk.img"
  # A disk that outlives the boot, standing for storage two hosts share: every boot of the run
  # whose scenarios say "# needs: shared-disk" sees the same file as /dev/vdb.
  local shared=() run_disk=$OUTROOT/$RUN/shared-disk.img
  if grep -qs '^# needs: shared-disk' $(printf "$TB/scenarios/%s.sh " "$@"); then
    [ -f "$run_disk" ] || truncate -s 1G "$run_disk"
    shared=(-drive "file=$run_disk,if=virtio,format=raw,cache=writeback")
  fi
  qemu_cmd "$xen" -monitor none -serial stdio \
    -drive "file=$WORK/dom0-disk.img,if=virtio,format=raw,cache=unsafe" "${shared[@]}"
  log "boot $variant: ${#@} scenario(s): $*  (log: $dir/serial.log, timeout ${TIMEOUT}s)"
  printf '%s\n' "${QEMU[@]}" > "$dir/qemu-cmd.txt"
  record_versions > "$dir/versions.txt"
  local t0 rc; t0=$(date +%s.%N)
  set +e
  # Each serial line gets the host wall-clock seconds since QEMU started: "[H   12.34] ...".
  /usr/bin/time -v -o "$dir/qemu-time.txt" timeout --foreground --kill-after=10 "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 |
    perl -MTime::HiRes=time -ne 'BEGIN{$|=1;$t0=time} s/\r/\n/g; for (split /\n/) { printf "[H%8.2f] %s\n", time-$t0, $_ }' |
    tee "$dir/serial.log" | if [ "${TB_QUIET:-1}" = 1 ]; then grep -aE '\] (PASS|FAIL|TB-)' --line-buffered; else cat; fi
  rc=${PIPESTATUS[0]}
  set -e
  local secs; secs=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}")
  [ "$rc" = 124 ] && log "QEMU killed by timeout after ${TIMEOUT}s"
  collect_results "$dir" "$@" > "$dir/results.txt"
  {
    echo "variant=$variant qemu_rc=$rc qemu_wall_s=$secs"
    grep -aoE 'TB-DOM0 ready uptime=[0-9.]+.*' "$dir/serial.log" | tr -d '\r' | head -1 | sed 's/^/dom0 /'
    grep -aE '^\[H *[0-9.]+\] TB-DOM0 ready' "$dir/serial.log" | head -1 |
      sed -E 's/^\[H *([0-9.]+)\].*/boot_to_dom0_ready_s=\1/'
    grep -E 'Maximum resident' "$dir/qemu-time.txt" || true
  } > "$dir/timing.txt"
  log "$(tr '\n' ' ' < "$dir/timing.txt")"
}

# Prints one PASS/FAIL line per expected scenario ("$2.."), read from serial log $1/serial.log,
# with the hypervisor's own version (dom0 reads it from /sys/hypervisor) appended as xen=4.NN.
collect_results() {
  local dir=$1 name line xenv; shift
  xenv=$(grep -aoE 'TB-DOM0 ready uptime=[0-9.]+ xen=[0-9]+\.[0-9]+' "$dir/serial.log" | head -1 |
         grep -oE '[0-9]+\.[0-9]+$' || true)
  for name in "$@"; do
    line=$(sed -E 's/^\[H *[0-9.]+\] //' "$dir/serial.log" | tr -d '\r' |
           grep -aE "^(PASS|FAIL) $name( |$)" | tail -1 || true)
    if [ -n "$line" ]; then
      echo "$line xen=${xenv:-unknown}"
    else
      echo "FAIL $name no result: dom0 crashed or QEMU timed out before it ran (see $dir/serial.log)"
    fi
  done
}

# Interactive: boots variant $1 into a dom0 shell on this terminal. Leave with `poweroff -f`
# in dom0 or Ctrl-A x (QEMU). Xen's console: Ctrl-A three times switches input Xen <-> dom0
# (with mon:stdio, type Ctrl-A Ctrl-A for each Ctrl-A).
boot_shell() {
  local variant=$1
  TB_VARIANT=$variant build_dom0_run shell
  local xen; xen=$(xen_image "$variant")
  qemu_cmd "$xen" -serial mon:stdio
  log "dom0 shell on $variant Xen (bounded by timeout ${SHELL_TIMEOUT:-14400}s)"
  timeout --foreground "${SHELL_TIMEOUT:-14400}" "${QEMU[@]}"
}
