//! CPU time of this process and of the children it waited for (`xl restore`, `xl list`), for
//! the `--json` reports: the wall time of a restore is shared with `xl restore` on the same
//! CPUs, and these say which side spent it.

/// CPU seconds from `/proc/self/stat` (utime, stime, cutime, cstime); `None` where it cannot be
/// read (not Linux, no /proc).
pub fn cpu_json() -> Option<serde_json::Value> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat, rustix::param::clock_ticks_per_second())
}

fn parse_stat(stat: &str, ticks: u64) -> Option<serde_json::Value> {
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state .. cmajflt: fields 3-13
        .take(4) // utime, stime, cutime, cstime: fields 14-17
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [user, system, children_user, children_system] = f[..] else {
        return None;
    };
    let s = |t: u64| t as f64 / ticks.max(1) as f64;
    Some(serde_json::json!({
        "user": s(user), "system": s(system),
        "children_user": s(children_user), "children_system": s(children_system),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_times_after_the_name() {
        let stat = "4242 (x (y) z) S 1 2 3 4 5 6 7 8 9 10 150 25 300 40 20 0 1 0 100";
        let v = parse_stat(stat, 100).unwrap();
        assert_eq!(v["user"], 1.5);
        assert_eq!(v["system"], 0.25);
        assert_eq!(v["children_user"], 3.0);
        assert_eq!(v["children_system"], 0.4);
        assert!(parse_stat("4242 (x) S 1 2", 100).is_none());
        assert!(cpu_json().is_some());
    }
}
