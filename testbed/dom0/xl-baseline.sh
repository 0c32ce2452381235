# The xl baseline: the figures every xckpt measurement is compared against. Sourced by the
# xl-baseline-* scenarios and by demo (after lib.sh).

# xl_baseline TYPE NAME: boots NAME (TYPE pv|pvh|hvm) with the workload, then measures
# `xl save` + `xl restore`, `xl save -c` (the guest keeps running) and a restore of the
# checkpoint image after destroy, checking the workload reports bad=0 after each step.
# Sets CREATE_S BOOT_S USED_BYTES SAVE_S FILE_BYTES RESTORE_S RESTORE_GAP_MS SAVEC_S
# SAVEC_GAP_MS SAVEC_MGAP_MS RESTOREC_S; leaves the guest running (restored from the -c image).
xl_baseline() {
  local type=$1 name=$2 m img=$TBW/$2.save
  start_guest "$type" "$name" "$DOMU_MEM" || fail "guest $name did not start"
  wait_ticks "$name" 3 60 || fail "workload in $name stopped ticking"
  USED_BYTES=$(( $(guest_used_kib "$name") * 1024 ))

  local lo hi
  lo=$(last_gen "$name")
  timed SAVE_S xl save "$name" "$img" || fail "xl save $name failed"
  hi=$(last_gen "$name")
  FILE_BYTES=$(file_bytes "$img")
  m=$(mark "$name")
  timed RESTORE_S xl restore "$img" || fail "xl restore $name failed"
  rm -f "$img"
  verify_resumed "$name" "$m" "$lo" "$hi" "xl restore"
  RESTORE_GAP_MS=$(guest_gap "$name" "$m")

  m=$(mark "$name")
  lo=$(last_gen "$name")
  timed SAVEC_S xl save -c "$name" "$img" || fail "xl save -c $name failed"
  wait_ticks "$name" 3 60 "$m" || fail "workload not running after xl save -c"
  check_bad "$name" "$m" || fail "workload saw corrupted pages after xl save -c"
  check_running "$name" || fail "xl save -c left $name stopped"
  hi=$(last_gen "$name")
  SAVEC_GAP_MS=$(guest_gap "$name" "$m")
  SAVEC_MGAP_MS=$(guest_mgap "$name" "$m")

  destroy_guest "$name"
  m=$(mark "$name")
  timed RESTOREC_S xl restore "$img" || fail "xl restore of the -c image of $name failed"
  rm -f "$img"
  verify_resumed "$name" "$m" "$lo" "$hi" "xl restore of the -c image"
}

# The key=value figures of xl_baseline, for a PASS line.
xl_baseline_figures() {
  echo "save_s=$SAVE_S restore_s=$RESTORE_S savec_s=$SAVEC_S savec_guest_gap_ms=$SAVEC_GAP_MS" \
       "file_bytes=$FILE_BYTES guest_used_bytes=$USED_BYTES restorec_s=$RESTOREC_S" \
       "restore_guest_gap_ms=$RESTORE_GAP_MS savec_guest_mgap_ms=$SAVEC_MGAP_MS" \
       "create_s=$CREATE_S boot_s=$BOOT_S full_sweeps=$(sweep_cost)"
}
