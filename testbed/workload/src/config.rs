//! Settings, read from the environment (the domU kernel command line's unknown `KEY=VAL`
//! words become environment variables of `/init`, which execs the workload).

use std::env;

/// How the workload picks the pages it rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Every page equally likely.
    Uniform,
    /// 90 % of writes go to the first 10 % of the buffer.
    Hot,
    /// A cursor walks the buffer page by page.
    Sequential,
}

/// Workload settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Buffer size in MiB (`WL_MIB`, default 64).
    pub mib: usize,
    /// Pages rewritten per second (`WL_RATE`, default 2048).
    pub rate: f64,
    /// Write pattern (`WL_PATTERN`: uniform, hot, sequential).
    pub pattern: Pattern,
    /// Milliseconds between `TICK` lines (`WL_TICK_MS`, default 1000).
    pub tick_ms: f64,
    /// Seconds for one verification sweep of the whole buffer (`WL_SWEEP_S`, default 4).
    pub sweep_s: f64,
    /// Sleep between loop iterations in ms (`WL_SLEEP_MS`, default 5).
    pub sleep_ms: u64,
    /// A loop gap above this many ms is reported at once as a `GAP` line (`WL_GAP_MS`, 200).
    pub gap_report_ms: f64,
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("workload: ignoring {name}={v:?} (not a number)");
            default
        }),
        Err(_) => default,
    }
}

impl Config {
    /// Reads the settings from the environment.
    pub fn from_env() -> Config {
        let pattern = match env::var("WL_PATTERN").as_deref() {
            Ok("hot") => Pattern::Hot,
            Ok("sequential") | Ok("seq") => Pattern::Sequential,
            Ok("uniform") | Err(_) => Pattern::Uniform,
            Ok(other) => {
                eprintln!("workload: unknown WL_PATTERN={other:?}, using uniform");
                Pattern::Uniform
            }
        };
        Config {
            mib: var("WL_MIB", 64usize).max(1),
            rate: var("WL_RATE", 2048f64).max(0.0),
            pattern,
            tick_ms: var("WL_TICK_MS", 1000f64).max(50.0),
            sweep_s: var("WL_SWEEP_S", 4f64).max(0.1),
            sleep_ms: var("WL_SLEEP_MS", 5u64),
            gap_report_ms: var("WL_GAP_MS", 200f64),
        }
    }
}
