//! Writer threads: pick a populated page, write fresh content, mark it dirty, at a target rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::hv::PAGE_SIZE;

use super::config::{AccessPattern, WorkloadSpec};
use super::Inner;

/// Running writer threads.
pub(crate) struct Workers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    progress: Arc<[AtomicU64]>,
}

/// Which pages the writers of one workload choose from.
struct Targets {
    /// Populated pfns when the workload started (shuffled for a hot set: the hot set first).
    pfns: Vec<u64>,
    pattern: AccessPattern,
    hot: usize,
    cursor: AtomicU64,
}

impl Targets {
    fn new(inner: &Inner, pattern: AccessPattern, seed: u64) -> Self {
        let mut pfns: Vec<u64> = (0..inner.pfn_count)
            .filter(|&p| inner.populated.get(p))
            .collect();
        let mut hot = pfns.len();
        if let AccessPattern::HotSet { hot_fraction, .. } = pattern {
            fastrand::Rng::with_seed(seed).shuffle(&mut pfns);
            hot = ((pfns.len() as f64 * hot_fraction).ceil() as usize).clamp(1, pfns.len().max(1));
        }
        Targets {
            pfns,
            pattern,
            hot,
            cursor: AtomicU64::new(0),
        }
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> u64 {
        let n = self.pfns.len();
        let i = match self.pattern {
            AccessPattern::Uniform => rng.usize(..n),
            AccessPattern::Sequential => {
                (self.cursor.fetch_add(1, Ordering::Relaxed) % n as u64) as usize
            }
            AccessPattern::HotSet {
                hot_probability, ..
            } => {
                if self.hot >= n || rng.f64() < hot_probability {
                    rng.usize(..self.hot)
                } else {
                    rng.usize(self.hot..n)
                }
            }
        };
        self.pfns[i]
    }
}

/// A token bucket in pages: at most `rate` pages per second, bursts of a few milliseconds.
struct TokenBucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let cap = (rate * 0.005).max(1.0);
        TokenBucket {
            rate,
            cap,
            tokens: cap,
            last: Instant::now(),
        }
    }

    /// Wait until one page may be written. False if `stop` was set meanwhile.
    fn take(&mut self, stop: &AtomicBool) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        loop {
            let now = Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
                .min(self.cap);
            self.last = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return true;
            }
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let want = (self.cap / 2.0).max(1.0) - self.tokens;
            let wait = Duration::from_secs_f64(want / self.rate).min(Duration::from_millis(50));
            std::thread::sleep(wait);
        }
    }
}

impl Workers {
    /// Start `writers` threads running `spec` on `inner`.
    pub(crate) fn start(
        inner: &Arc<Inner>,
        spec: &WorkloadSpec,
        writers: usize,
        seed: u64,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Arc<[AtomicU64]> = (0..writers).map(|_| AtomicU64::new(0)).collect();
        let targets = Arc::new(Targets::new(inner, spec.pattern, seed));
        let rate = spec.rate_mib_s * (1 << 20) as f64 / PAGE_SIZE as f64 / writers.max(1) as f64;
        let mut w = Workers {
            stop,
            handles: Vec::new(),
            progress,
        };
        if targets.pfns.is_empty() {
            return Ok(w);
        }
        for i in 0..writers {
            let (shared, targets, stop, progress) = (
                Arc::clone(inner),
                Arc::clone(&targets),
                Arc::clone(&w.stop),
                Arc::clone(&w.progress),
            );
            let rng =
                fastrand::Rng::with_seed(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let spawned = std::thread::Builder::new()
                .name(format!("sim-writer-{i}"))
                .spawn(move || writer_loop(&shared, &targets, &stop, &progress[i], rng, rate));
            match spawned {
                Ok(h) => w.handles.push(h),
                Err(e) => {
                    w.stop_and_join(inner);
                    return Err(e);
                }
            }
        }
        Ok(w)
    }

    /// Pages written by each writer so far.
    pub(crate) fn progress(&self) -> Vec<u64> {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }

    /// Stop and join every writer; returns the pages they wrote.
    pub(crate) fn stop_and_join(&mut self, inner: &Inner) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        inner.gate.wake_all();
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                eprintln!("sim domain {}: a writer thread panicked", inner.name);
            }
        }
        self.progress().iter().sum()
    }
}

fn writer_loop(
    inner: &Inner,
    targets: &Targets,
    stop: &AtomicBool,
    done: &AtomicU64,
    mut rng: fastrand::Rng,
    rate: f64,
) {
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut bucket = TokenBucket::new(rate);
    while bucket.take(stop) {
        let pfn = targets.pick(&mut rng);
        let Some(_write) = inner.gate.enter(stop) else {
            break;
        };
        // Writers only write populated pages; a page ballooned out since the start is skipped
        // (ballooning holds the gate, so this check cannot race with it). The generation only
        // moves inside the gate, so it is stable while the domain is paused.
        if inner.populated.get(pfn) {
            let generation = inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
            inner.content.fill(pfn, generation, &mut buf);
            inner.write_and_mark(pfn, &buf);
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
