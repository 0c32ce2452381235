//! CPU time and page faults of this process and of the children it waited for (`xl restore`,
//! `xl list`), for the `--json` reports: the wall time of a restore is shared with `xl restore`
//! on the same CPUs, and these say which side spent it. A minor fault costs a trip through the
//! hypervisor in a PV dom0, so their count says how much fresh memory a run touched.

use xckpt::usage::{numbers, stat_fields};

/// Where a command's figures count from when the process runs one command after another
/// (`xckpt serve`): its client's start, and this process's counters when the command began.
struct Origin {
    /// The client's start, in seconds of `CLOCK_BOOTTIME`.
    started_s: f64,
    /// Fields 10-17 of `/proc/self/stat` (faults, then CPU ticks) at the command's start.
    counters: [u64; 8],
    /// The decoders' CPU time at the command's start.
    decoded: xckpt::layer::DecodeCost,
}

static ORIGIN: std::sync::Mutex<Option<Origin>> = std::sync::Mutex::new(None);

/// Count this process's figures from now on for a command whose client started at
/// `started_s` (seconds of `CLOCK_BOOTTIME`); the marks start again.
pub fn begin_command(started_s: f64) {
    let counters = stat_fields()
        .and_then(|f| numbers::<8>(&f, 10))
        .unwrap_or_default();
    *lock(&ORIGIN) = Some(Origin {
        started_s,
        counters,
        decoded: xckpt::layer::decode_cost(),
    });
    lock(&MARKS).clear();
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fields 10-17 of `/proc/self/stat` less those at the command's start ([`begin_command`]).
fn own_fields() -> Option<Vec<String>> {
    let mut f = stat_fields()?;
    if let Some(origin) = &*lock(&ORIGIN) {
        let now = numbers::<8>(&f, 10)?;
        for (i, (n, o)) in now.iter().zip(origin.counters).enumerate() {
            f[10 - 3 + i] = n.saturating_sub(o).to_string();
        }
    }
    Some(f)
}

/// CPU seconds from `/proc/self/stat` (utime, stime, cutime, cstime); `None` where it cannot be
/// read (not Linux, no /proc).
pub fn cpu_json() -> Option<serde_json::Value> {
    let f = own_fields()?;
    parse_cpu(&f, rustix::param::clock_ticks_per_second())
}

/// Page faults from `/proc/self/stat` (minflt, cminflt, majflt, cmajflt).
pub fn faults_json() -> Option<serde_json::Value> {
    parse_faults(&own_fields()?)
}

/// The CPU seconds of each decode stage of this command's frames (this process's, less those
/// before [`begin_command`]).
pub fn decode_cost() -> xckpt::layer::DecodeCost {
    let now = xckpt::layer::decode_cost();
    match &*lock(&ORIGIN) {
        Some(o) => xckpt::layer::DecodeCost {
            read_s: now.read_s - o.decoded.read_s,
            decompress_s: now.decompress_s - o.decoded.decompress_s,
            check_s: now.check_s - o.decoded.check_s,
        },
        None => now,
    }
}

/// Seconds of `CLOCK_BOOTTIME` now.
fn boottime_s() -> f64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// When this process was started (exec included), in seconds of `CLOCK_BOOTTIME`, at
/// 1/`CLK_TCK` resolution.
pub fn process_start_s() -> Option<f64> {
    let [start] = numbers::<1>(&stat_fields()?, 22)?;
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    Some(start as f64 / ticks)
}

/// Seconds since this process was started, or under `xckpt serve` since the command's client
/// was: beside a run's own phases, what its setup and the command's start cost.
pub fn since_start_s() -> Option<f64> {
    let start = match &*lock(&ORIGIN) {
        Some(o) => o.started_s,
        None => process_start_s()?,
    };
    Some(((boottime_s() - start) * 1e3).round() / 1e3)
}

/// Points of a command's setup, each with its [`since_start_s`]: where the time before the
/// work itself goes (the binary's start, opening Xen, the disk plan, the store's lock).
static MARKS: std::sync::Mutex<Vec<(&str, f64)>> = std::sync::Mutex::new(Vec::new());

/// Note that the command reached `what` now.
pub fn mark(what: &'static str) {
    if let Some(s) = since_start_s() {
        lock(&MARKS).push((what, s));
    }
}

/// The marks so far, as `{"what": seconds since start}`.
pub fn marks_json() -> serde_json::Value {
    let marks = lock(&MARKS);
    serde_json::Value::Object(
        marks
            .iter()
            .map(|&(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect(),
    )
}

fn parse_cpu(f: &[String], ticks: u64) -> Option<serde_json::Value> {
    let [user, system, children_user, children_system] = numbers::<4>(f, 14)?;
    let s = |t: u64| t as f64 / ticks.max(1) as f64;
    Some(serde_json::json!({
        "user": s(user), "system": s(system),
        "children_user": s(children_user), "children_system": s(children_system),
    }))
}

fn parse_faults(f: &[String]) -> Option<serde_json::Value> {
    let [minor, children_minor, major, children_major] = numbers::<4>(f, 10)?;
    Some(serde_json::json!({
        "minor": minor, "major": major,
        "children_minor": children_minor, "children_major": children_major,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xckpt::usage::split_stat;

    #[test]
    fn reads_the_times_and_faults_after_the_name() {
        let stat = "4242 (x (y) z) S 1 2 3 4 5 6 7 8 9 10 150 25 300 40 20 0 1 0 100";
        let f = split_stat(stat).unwrap();
        let v = parse_cpu(&f, 100).unwrap();
        assert_eq!(v["user"], 1.5);
        assert_eq!(v["system"], 0.25);
        assert_eq!(v["children_user"], 3.0);
        assert_eq!(v["children_system"], 0.4);
        let v = parse_faults(&f).unwrap();
        assert_eq!(v["minor"], 7);
        assert_eq!(v["children_minor"], 8);
        assert_eq!(v["major"], 9);
        assert_eq!(v["children_major"], 10);
        assert!(parse_cpu(&split_stat("4242 (x) S 1 2").unwrap(), 100).is_none());
        assert!(cpu_json().is_some());
        assert!(faults_json().is_some());
        assert!(since_start_s().is_some_and(|s| (0.0..600.0).contains(&s)));
    }
}
