//! The throughput a capture cannot beat on this machine, measured in the same run as the bench:
//! memory copy, zstd at the chosen level on all workers, and sequential writes to the store.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::{compress_frame, DigestKind};

/// Measured limits, GB/s (10^9 bytes per second).
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Single-thread memory copy.
    pub memcpy_gbps: f64,
    /// zstd at the chosen level, all worker threads together (input bytes).
    pub zstd_gbps: f64,
    /// Sequential write + fsync to the store's file system.
    pub write_gbps: f64,
    /// Compression ratio (input / output) of the sample.
    pub zstd_ratio: f64,
    /// The smallest of the three.
    pub limit_gbps: f64,
    /// Which one it is.
    pub bound_by: &'static str,
}

/// Measure all three. `sample` is representative guest memory (whole pages).
pub fn measure(
    sample: &[u8],
    level: i32,
    threads: usize,
    store_dir: &Path,
) -> std::io::Result<Limits> {
    let memcpy_gbps = memcpy_gbps();
    let (zstd_gbps, zstd_ratio) = zstd_gbps(sample, level, threads);
    let write_gbps = write_gbps(store_dir)?;
    let (limit_gbps, bound_by) = [
        (memcpy_gbps, "memcpy"),
        (zstd_gbps, "zstd"),
        (write_gbps, "write"),
    ]
    .into_iter()
    .fold((f64::INFINITY, ""), |a, b| if b.0 < a.0 { b } else { a });
    Ok(Limits {
        memcpy_gbps,
        zstd_gbps,
        write_gbps,
        zstd_ratio,
        limit_gbps,
        bound_by,
    })
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9
}

fn memcpy_gbps() -> f64 {
    const LEN: usize = 256 << 20;
    let src = vec![0x5au8; LEN];
    let mut dst = vec![0u8; LEN];
    dst.copy_from_slice(&src); // fault both in
    let t = Instant::now();
    let reps = 4;
    for _ in 0..reps {
        dst.copy_from_slice(std::hint::black_box(&src));
    }
    std::hint::black_box(&dst);
    gbps((LEN * reps) as u64, t.elapsed())
}

fn zstd_gbps(sample: &[u8], level: i32, threads: usize) -> (f64, f64) {
    let frame = 64 * PAGE_SIZE;
    let frames: Vec<&[u8]> = sample.chunks_exact(frame).collect();
    if frames.is_empty() {
        return (f64::INFINITY, 1.0);
    }
    let budget = Duration::from_millis(600);
    let t = Instant::now();
    let per: Vec<(u64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads.max(1))
            .map(|k| {
                let frames = &frames;
                s.spawn(move || {
                    let (mut inb, mut outb) = (0u64, 0u64);
                    let mut i = k;
                    while t.elapsed() < budget {
                        let f = compress_frame(frames[i % frames.len()], level, DigestKind::PLAIN);
                        inb += frame as u64;
                        outb += f.data.len() as u64;
                        i += threads.max(1);
                    }
                    (inb, outb)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or((0, 1))).collect()
    });
    let elapsed = t.elapsed();
    let inb: u64 = per.iter().map(|p| p.0).sum();
    let outb: u64 = per.iter().map(|p| p.1).sum();
    (gbps(inb, elapsed), inb as f64 / outb.max(1) as f64)
}

fn write_gbps(dir: &Path) -> std::io::Result<f64> {
    const LEN: usize = 512 << 20;
    let mut f = tempfile_in(dir)?;
    let block = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..(LEN / block.len()) {
        f.0.write_all(&block)?;
    }
    f.0.sync_all()?;
    Ok(gbps(LEN as u64, t.elapsed()))
}

/// A scratch file removed on drop.
struct Scratch(std::fs::File, std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.1);
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<Scratch> {
    let p = dir.join(format!(".bench-write-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)?;
    Ok(Scratch(f, p))
}
