//! The main loop: rewrite pages at the configured rate, verify the whole buffer continuously,
//! and report `TICK` lines with the longest gap between loop iterations (guest-observed pause).

use crate::clock::{boottime_ms, monotonic_ms, sleep_ms};
use crate::config::{Config, Pattern};
use crate::page::{self, Fault, WORDS};
use std::io::Write;

/// xorshift64*: a small, fast, seedable generator for page choice.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The buffer, the generation each page was last written at, and the counters.
struct Workload {
    cfg: Config,
    /// One page more than needed, so the pages can start on a 4 KiB boundary: then every
    /// workload page is exactly one guest frame and can be found whole in a save image.
    buf: Vec<u64>,
    /// Index of the first word of page 0 in `buf` (4 KiB aligned).
    base: usize,
    gens: Vec<u64>,
    generation: u64,
    bad: u64,
    rng: Rng,
    write_cursor: usize,
    verify_cursor: usize,
    sweeps: u64,
}

impl Workload {
    fn new(cfg: Config) -> Workload {
        let pages = cfg.mib * 256;
        let buf = vec![0u64; (pages + 1) * WORDS];
        let misalign = (buf.as_ptr() as usize) % page::PAGE_BYTES;
        let base = if misalign == 0 {
            0
        } else {
            (page::PAGE_BYTES - misalign) / 8
        };
        let mut w = Workload {
            cfg,
            buf,
            base,
            gens: vec![1; pages],
            generation: 1,
            bad: 0,
            rng: Rng(0x853C_49E6_748F_EA9B ^ boottime_ms().to_bits()),
            write_cursor: 0,
            verify_cursor: 0,
            sweeps: 0,
        };
        for p in 0..pages {
            page::write(w.page_mut(p), p as u64, 1);
        }
        w
    }

    fn pages(&self) -> usize {
        self.gens.len()
    }

    fn page(&self, p: usize) -> &[u64] {
        let at = self.base + p * WORDS;
        &self.buf[at..at + WORDS]
    }

    fn page_mut(&mut self, p: usize) -> &mut [u64] {
        let at = self.base + p * WORDS;
        &mut self.buf[at..at + WORDS]
    }

    /// Verifies page `p`; a bad page is reported once, counted, then rewritten.
    fn check(&mut self, p: usize) {
        let expected = self.gens[p];
        if let Err(fault) = page::verify(self.page(p), p as u64, expected) {
            self.bad += 1;
            report_bad(p, expected, fault);
            let generation = self.generation;
            page::write(self.page_mut(p), p as u64, generation);
            self.gens[p] = generation;
        }
    }

    fn pick(&mut self) -> usize {
        let n = self.pages();
        match self.cfg.pattern {
            Pattern::Uniform => self.rng.below(n),
            Pattern::Hot => {
                let hot = (n / 10).max(1);
                if self.rng.below(10) < 9 {
                    self.rng.below(hot)
                } else {
                    self.rng.below(n)
                }
            }
            Pattern::Sequential => {
                self.write_cursor = (self.write_cursor + 1) % n;
                self.write_cursor
            }
        }
    }

    /// Rewrites `count` pages at a new generation; each page is verified before it is
    /// overwritten, so a corrupted page cannot be silently repaired by a write.
    fn rewrite(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        self.generation += 1;
        for _ in 0..count {
            let p = self.pick();
            self.check(p);
            let generation = self.generation;
            page::write(self.page_mut(p), p as u64, generation);
            self.gens[p] = generation;
        }
    }

    /// Verifies the next `count` pages of the sweep.
    fn verify_some(&mut self, count: usize) {
        for _ in 0..count.min(self.pages()) {
            let p = self.verify_cursor;
            self.check(p);
            self.verify_cursor += 1;
            if self.verify_cursor == self.pages() {
                self.verify_cursor = 0;
                self.sweeps += 1;
            }
        }
    }
}

fn report_bad(p: usize, expected: u64, fault: Fault) {
    println!("BAD page={p} expected_gen={expected} fault={fault:?}");
}

/// Guest memory in use, MemTotal - MemFree from /proc/meminfo, in KiB (0 if unreadable).
pub fn used_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("MemTotal:").saturating_sub(field("MemFree:"))
}

/// Carry-over of fractional work between iterations.
#[derive(Default)]
struct Budget(f64);

impl Budget {
    /// Adds `per_s * dt_ms / 1000` (capped at a tenth of a second's worth) and takes the
    /// whole part, so a long pause does not cause a burst.
    fn take(&mut self, per_s: f64, dt_ms: f64) -> usize {
        self.0 = (self.0 + per_s * dt_ms.min(100.0) / 1000.0).min(per_s / 10.0 + 1.0);
        let whole = self.0.floor();
        self.0 -= whole;
        whole as usize
    }
}

fn var_mib(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `mib` MiB of non-zero data and frees it again (a large allocation is its own
/// mapping, so the pages go back to the kernel with the data still in them): free memory
/// that is not zero, as in a guest that has run for a while. Prints `WL DIRTY-FREE`.
fn dirty_free(mib: usize) {
    if mib == 0 {
        return;
    }
    let mut junk = vec![0u8; mib << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in junk.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    std::hint::black_box(&junk);
    drop(junk);
    println!("WL DIRTY-FREE mib={mib} used_kib={}", used_kib());
}

/// Runs the workload forever.
pub fn run(cfg: Config) -> ! {
    let started = boottime_ms();
    let mut w = Workload::new(cfg.clone());
    let pages = w.pages();
    println!(
        "WL START mib={} pages={} rate={} pattern={:?} tick_ms={} sweep_s={} fill_ms={:.0} used_kib={}",
        cfg.mib,
        pages,
        cfg.rate,
        cfg.pattern,
        cfg.tick_ms,
        cfg.sweep_s,
        boottime_ms() - started,
        used_kib()
    );
    dirty_free(var_mib("WL_DIRTY_FREE_MIB"));
    let verify_rate = pages as f64 / cfg.sweep_s;
    let (mut writes, mut verifies) = (Budget::default(), Budget::default());
    let (mut last_b, mut last_m) = (boottime_ms(), monotonic_ms());
    let mut next_tick = last_b + cfg.tick_ms;
    let (mut tick, mut win_b, mut win_m, mut max_b) = (0u64, 0f64, 0f64, 0f64);
    let mut out = std::io::stdout();
    loop {
        let (now_b, now_m) = (boottime_ms(), monotonic_ms());
        let (gap_b, gap_m) = (now_b - last_b, now_m - last_m);
        (last_b, last_m) = (now_b, now_m);
        win_b = win_b.max(gap_b);
        win_m = win_m.max(gap_m);
        max_b = max_b.max(gap_b);
        if gap_b > cfg.gap_report_ms {
            println!(
                "GAP ms={gap_b:.1} mono_ms={gap_m:.1} tick={tick} gen={}",
                w.generation
            );
        }
        let n = writes.take(cfg.rate, gap_m);
        w.rewrite(n);
        let n = verifies.take(verify_rate, gap_m);
        w.verify_some(n);
        if now_b >= next_tick {
            tick += 1;
            println!(
                "TICK {tick} gen={} bad={} sweeps={} gap_ms={win_b:.1} mgap_ms={win_m:.1} maxgap_ms={max_b:.1} used_kib={}",
                w.generation,
                w.bad,
                w.sweeps,
                used_kib()
            );
            let _ = out.flush();
            (win_b, win_m) = (0.0, 0.0);
            next_tick = if now_b - next_tick > cfg.tick_ms {
                now_b + cfg.tick_ms
            } else {
                next_tick + cfg.tick_ms
            };
        }
        sleep_ms(cfg.sleep_ms);
    }
}
