//! Clocks. Which one measures a pause:
//!
//! * `CLOCK_BOOTTIME` advances while the domain is paused (`xl pause`) **and** while it is
//!   suspended for `xl save` / `xl save -c` / migration (Linux adds the time it was suspended,
//!   read from Xen's wall clock, on resume). The workload's gaps (`gap_ms`) use it.
//! * `CLOCK_MONOTONIC` advances while paused but **not** across a save/restore suspend (the
//!   test bed's REPORT pitfall 13), so `mgap_ms` shows only the in-guest part of a pause.

/// Milliseconds on `clock` as a float.
fn read_ms(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and `clock` is a clock id the kernel knows.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// `CLOCK_BOOTTIME` in milliseconds: counts paused and suspended time.
pub fn boottime_ms() -> f64 {
    read_ms(libc::CLOCK_BOOTTIME)
}

/// `CLOCK_MONOTONIC` in milliseconds: stops while the guest is suspended for a save.
pub fn monotonic_ms() -> f64 {
    read_ms(libc::CLOCK_MONOTONIC)
}

/// Sleeps `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}
