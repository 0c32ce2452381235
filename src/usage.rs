//! This process's CPU time and page faults so far, from `/proc/self/stat`: what a phase of a
//! command cost beside its wall time. A restore shares its CPU with the `xl restore` it feeds,
//! and in a PV dom0 a minor fault is a trip through the hypervisor, so both say more than the
//! wall time alone. The `xckpt` command's `--json` reports read the same fields.

/// CPU time (all threads of this process) and minor faults, at one moment or between two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// User CPU, milliseconds (at the kernel's clock-tick resolution, 10 ms on most systems).
    pub user_ms: u64,
    /// System CPU, milliseconds.
    pub system_ms: u64,
    /// Minor page faults.
    pub minor_faults: u64,
}

impl Usage {
    /// This process's usage so far; zero where `/proc/self/stat` cannot be read.
    pub fn now() -> Usage {
        stat_fields()
            .and_then(|f| from_fields(&f, rustix::param::clock_ticks_per_second()))
            .unwrap_or_default()
    }

    /// The usage from `earlier` to `self`.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            user_ms: self.user_ms.saturating_sub(earlier.user_ms),
            system_ms: self.system_ms.saturating_sub(earlier.system_ms),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }
}

/// A phase's clock: its wall time and this process's [`Usage`] since [`PhaseClock::start`].
#[derive(Debug, Clone, Copy)]
pub struct PhaseClock {
    started: std::time::Instant,
    usage: Usage,
}

impl PhaseClock {
    /// Start timing a phase now.
    pub fn start() -> PhaseClock {
        PhaseClock {
            started: std::time::Instant::now(),
            usage: Usage::now(),
        }
    }

    /// Milliseconds and usage since the start.
    pub fn read(&self) -> (u64, Usage) {
        let ms = self.started.elapsed().as_millis() as u64;
        (ms, Usage::now().since(self.usage))
    }
}

fn from_fields(f: &[String], ticks: u64) -> Option<Usage> {
    let [minor_faults] = numbers::<1>(f, 10)?;
    let [user, system] = numbers::<2>(f, 14)?;
    let ms = |t: u64| t * 1000 / ticks.max(1);
    Some(Usage {
        user_ms: ms(user),
        system_ms: ms(system),
        minor_faults,
    })
}

/// Fields 3 onwards of `/proc/self/stat`.
pub fn stat_fields() -> Option<Vec<String>> {
    split_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Fields 3 onwards of a `stat` line (the command name, field 2, may hold spaces and
/// parentheses: fields are counted from its last ')').
pub fn split_stat(stat: &str) -> Option<Vec<String>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Fields `first..first + N` (numbered as in proc(5)) of [`split_stat`]'s fields, as numbers.
pub fn numbers<const N: usize>(f: &[String], first: usize) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (o, v) in out.iter_mut().zip(f.get(first - 3..first - 3 + N)?) {
        *o = v.parse().ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_the_fields_after_the_name_and_subtracts() {
        let fields = split_stat("9 (a) b) R 0 0 0 0 0 0 7 0 0 0 150 25").unwrap();
        let u = from_fields(&fields, 100).unwrap();
        assert_eq!((u.user_ms, u.system_ms, u.minor_faults), (1500, 250, 7));
        let later = Usage {
            user_ms: 1600,
            system_ms: 250,
            minor_faults: 9,
        };
        let diff = later.since(u);
        assert_eq!(
            (diff.user_ms, diff.system_ms, diff.minor_faults),
            (100, 0, 2)
        );
        assert!(from_fields(&fields[..5], 100).is_none());
        assert!(split_stat("no name").is_none());
        assert!(Usage::now().minor_faults > 0);
        let (ms, used) = PhaseClock::start().read();
        assert!(ms < 60_000 && used.user_ms < 60_000, "{ms} ms, {used:?}");
    }
}
