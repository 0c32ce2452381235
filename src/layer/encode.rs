//! How the pipeline encodes frames (`--compress auto|none|LEVEL`), and the clock of its stages.
//!
//! `auto` decides frame by frame from rates measured in the same run: `c`, the compress
//! workers' seconds per input byte; `w`, the writer's seconds per byte written (its writes are
//! made durable every [`super::writer`] window, so `w` is the device's rate, not the page
//! cache's); and `r`, the compressed/raw ratio. With one CPU every stage shares it, so the cost
//! of a byte is `c + w*r` compressed against `w` raw: compress only if that is cheaper. With
//! more CPUs the workers run beside the writer, and the fraction `f` of frames compressed is
//! the one at which neither side waits for the other: `f*c/N = w*(1 - f*(1 - r))`, with `N`
//! the cores left beside the producer. A compressed probe every [`PROBE_EVERY`] frames keeps
//! `c` and `r` current when `f` is 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// zstd level `auto` compresses at.
pub const AUTO_LEVEL: i32 = 1;
/// Under `auto`, one frame in this many is compressed whatever the rates say (a probe).
pub const PROBE_EVERY: u64 = 32;
/// Weight of a new measurement in the running averages.
const EWMA: f64 = 0.2;

/// How the frames of a layer are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "level")]
pub enum Encoding {
    /// zstd at [`AUTO_LEVEL`] or raw, frame by frame, by measured rates.
    Auto,
    /// Every frame at this zstd level (0: stored raw).
    Level(i32),
}

impl Encoding {
    /// The zstd level compressed frames use (0: none).
    pub fn level(self) -> i32 {
        match self {
            Encoding::Auto => AUTO_LEVEL,
            Encoding::Level(l) => l.max(0),
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    /// `auto`, `none` or a zstd level 1..=19.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Encoding::Auto),
            "none" | "0" => Ok(Encoding::Level(0)),
            _ => match s.parse::<i32>() {
                Ok(l) if (1..=19).contains(&l) => Ok(Encoding::Level(l)),
                _ => Err(format!(
                    "{s:?}: use auto, none or a zstd level from 1 to 19"
                )),
            },
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoding::Auto => write!(f, "auto"),
            Encoding::Level(0) => write!(f, "none"),
            Encoding::Level(l) => write!(f, "{l}"),
        }
    }
}

/// What a layer's frames used, recorded in its META (`xckpt inspect` shows it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EncodingUsed {
    /// `auto`, `none` or the level asked for.
    pub mode: String,
    /// zstd level of the compressed frames.
    pub level: i32,
    /// Frames stored as zstd frames.
    pub zstd_frames: u64,
    /// Frames stored raw (chosen, or because zstd did not shrink them).
    pub raw_frames: u64,
}

/// CPU time of the calling thread so far (what a stage costs, whatever else the machine runs).
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU nanoseconds spent per stage of a capture, summed over the threads doing it.
#[derive(Debug, Default)]
pub struct StageClock {
    copy: AtomicU64,
    zero: AtomicU64,
    digest: AtomicU64,
    compress: AtomicU64,
    write: AtomicU64,
    types: AtomicU64,
    map: AtomicU64,
    log: AtomicU64,
}

/// One stage of the pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Guest page -> chunk buffer.
    Copy,
    /// Zero check on the mapping.
    Zero,
    /// The digest of each page (the layer's [`super::DigestKind`]).
    Digest,
    /// zstd.
    Compress,
    /// Writing frames (durably, see the writer).
    Write,
    /// Asking the hypervisor for page types.
    Types,
    /// Mapping and unmapping guest pages.
    Map,
    /// Fetch-and-clear of the dirty log.
    Log,
}

impl StageClock {
    /// Run `f`, adding the CPU time it takes on this thread to `stage`.
    pub fn time<R>(&self, stage: Stage, f: impl FnOnce() -> R) -> R {
        let t = thread_cpu();
        let r = f();
        self.add(stage, thread_cpu().saturating_sub(t));
        r
    }

    /// Add `d` to `stage`.
    pub fn add(&self, stage: Stage, d: Duration) {
        let ns = d.as_nanos() as u64;
        let slot = match stage {
            Stage::Copy => &self.copy,
            Stage::Zero => &self.zero,
            Stage::Digest => &self.digest,
            Stage::Compress => &self.compress,
            Stage::Write => &self.write,
            Stage::Types => &self.types,
            Stage::Map => &self.map,
            Stage::Log => &self.log,
        };
        slot.fetch_add(ns, Ordering::Relaxed);
    }

    /// The times so far, in seconds.
    pub fn times(&self) -> StageTimes {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
        StageTimes {
            copy_s: s(&self.copy),
            zero_check_s: s(&self.zero),
            digest_s: s(&self.digest),
            compress_s: s(&self.compress),
            write_s: s(&self.write),
            types_s: s(&self.types),
            map_s: s(&self.map),
            dirty_log_s: s(&self.log),
        }
    }
}

/// CPU seconds per stage of one capture (thread CPU time of the stage, summed over threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Copying guest pages into chunk buffers.
    pub copy_s: f64,
    /// Zero checks on the mapping.
    pub zero_check_s: f64,
    /// Page digests.
    pub digest_s: f64,
    /// zstd.
    pub compress_s: f64,
    /// Writing frames.
    pub write_s: f64,
    /// Asking the hypervisor for page types (every pfn of a base's first round: the whole pfn
    /// space, holes included, as libxc's own saver asks).
    pub types_s: f64,
    /// Mapping guest pages and unmapping them.
    pub map_s: f64,
    /// Fetching and clearing the dirty log (each round's end and the mid-round refreshes),
    /// and dropping the copies it supersedes.
    pub dirty_log_s: f64,
}

#[derive(Debug, Default)]
struct Rates {
    /// Seconds per byte compressed, ratio of compressed to raw, seconds per byte written.
    c: Option<f64>,
    r: Option<f64>,
    w: Option<f64>,
    /// Fractional frames owed to compression.
    credit: f64,
}

/// Chooses, frame by frame, whether to compress, and counts what was used.
#[derive(Debug)]
pub struct Tuner {
    encoding: Encoding,
    /// Cores the workers have beside the producer (0: one CPU for everything).
    beside: usize,
    rates: Mutex<Rates>,
    frames: AtomicU64,
    zstd: AtomicU64,
    raw: AtomicU64,
}

fn ewma(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| o + EWMA * (new - o)))
}

impl Tuner {
    /// A tuner for `encoding` with `workers` compress threads on this machine's CPUs.
    pub fn new(encoding: Encoding, workers: usize) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Tuner {
            encoding,
            beside: (cpus - 1).min(workers),
            rates: Mutex::new(Rates::default()),
            frames: AtomicU64::new(0),
            zstd: AtomicU64::new(0),
            raw: AtomicU64::new(0),
        }
    }

    /// A tuner for one fixed level, without looking at the machine.
    pub fn fixed(level: i32) -> Self {
        Tuner {
            encoding: Encoding::Level(level.max(0)),
            beside: 0,
            rates: Mutex::new(Rates::default()),
            frames: AtomicU64::new(0),
            zstd: AtomicU64::new(0),
            raw: AtomicU64::new(0),
        }
    }

    /// The zstd level for the next frame (0: store it raw).
    pub fn level(&self) -> i32 {
        let level = self.encoding.level();
        if self.encoding != Encoding::Auto {
            return level;
        }
        let n = self.frames.fetch_add(1, Ordering::Relaxed);
        let mut r = match self.rates.lock() {
            Ok(r) => r,
            Err(_) => return level,
        };
        let f = match (r.c, r.r, r.w) {
            (Some(c), Some(ratio), Some(w)) => self.fraction(c, ratio, w),
            _ => 1.0, // measure first
        };
        r.credit += f;
        if r.credit >= 1.0 || n % PROBE_EVERY == 0 {
            r.credit = (r.credit - 1.0).max(0.0);
            level
        } else {
            0
        }
    }

    fn fraction(&self, c: f64, ratio: f64, w: f64) -> f64 {
        let saved = w * (1.0 - ratio);
        if self.beside == 0 {
            return if c < saved { 1.0 } else { 0.0 };
        }
        let per_core = c / self.beside as f64;
        (w / (per_core + saved).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0)
    }

    /// A frame of `raw` bytes was compressed to `out` bytes in `took` (CPU time).
    pub fn compressed(&self, raw: usize, out: usize, took: Duration) {
        self.zstd.fetch_add(1, Ordering::Relaxed);
        if let (Ok(mut r), true) = (self.rates.lock(), raw > 0) {
            r.c = ewma(r.c, took.as_secs_f64() / raw as f64);
            r.r = ewma(r.r, (out as f64 / raw as f64).min(1.0));
        }
    }

    /// A frame was stored raw.
    pub fn stored_raw(&self) {
        self.raw.fetch_add(1, Ordering::Relaxed);
    }

    /// The writer wrote `bytes` in `took` (wall time: the device's pace).
    pub fn written(&self, bytes: usize, took: Duration) {
        if let (Ok(mut r), true) = (self.rates.lock(), bytes > 0) {
            r.w = ewma(r.w, took.as_secs_f64() / bytes as f64);
        }
    }

    /// What the frames used so far.
    pub fn used(&self) -> EncodingUsed {
        EncodingUsed {
            mode: self.encoding.to_string(),
            level: self.encoding.level(),
            zstd_frames: self.zstd.load(Ordering::Relaxed),
            raw_frames: self.raw.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_show() {
        for (s, e) in [
            ("auto", Encoding::Auto),
            ("none", Encoding::Level(0)),
            ("3", Encoding::Level(3)),
        ] {
            assert_eq!(s.parse::<Encoding>(), Ok(e));
            assert_eq!(e.to_string(), s);
        }
        assert!("20".parse::<Encoding>().is_err());
        assert!("fast".parse::<Encoding>().is_err());
    }

    #[test]
    fn one_cpu_compresses_only_when_it_pays() {
        let t = Tuner {
            beside: 0,
            ..Tuner::new(Encoding::Auto, 1)
        };
        // zstd at 4 ns/B saving half of a 1 ns/B write: not worth it.
        assert_eq!(t.fraction(4e-9, 0.5, 1e-9), 0.0);
        // A slow disk (20 ns/B): worth it.
        assert_eq!(t.fraction(4e-9, 0.5, 20e-9), 1.0);
    }

    #[test]
    fn several_cpus_balance_the_two_sides() {
        let t = Tuner {
            beside: 1,
            ..Tuner::new(Encoding::Auto, 2)
        };
        let f = t.fraction(2e-9, 0.5, 2e-9);
        // f*c = w*(1 - f/2)  =>  f = w / (c + w/2) = 2/3.
        assert!((f - 2.0 / 3.0).abs() < 1e-9, "{f}");
        assert_eq!(t.fraction(0.1e-9, 0.5, 2e-9), 1.0);
    }

    #[test]
    fn fixed_levels_never_change() {
        let t = Tuner::new(Encoding::Level(3), 2);
        assert!((0..100).all(|_| t.level() == 3));
        let t = Tuner::new(Encoding::Level(0), 2);
        assert!((0..100).all(|_| t.level() == 0));
    }
}
