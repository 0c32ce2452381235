//! CPU time spent decoding frames, per stage, summed over every thread since the process
//! started: what `xckpt bench --sim` reports as the restore's `cpu_s_per_gb`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A stage of [`super::LayerReader::decode`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage {
    /// Reading the encoded frame from the file.
    Read = 0,
    /// zstd (or copying nothing, for a raw frame).
    Decompress = 1,
    /// The integrity checks: the frame's check code or authentication, and every page's digest.
    Check = 2,
}

static NANOS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// CPU seconds of each decode stage so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DecodeCost {
    /// Reading frames (pread, in kernel and user time).
    pub read_s: f64,
    /// Decompressing.
    pub decompress_s: f64,
    /// Checking (check code or authentication, page digests).
    pub check_s: f64,
}

/// The CPU time decoders have spent so far, per stage.
pub fn decode_cost() -> DecodeCost {
    let s = |i: usize| NANOS[i].load(Ordering::Relaxed) as f64 / 1e9;
    DecodeCost {
        read_s: s(0),
        decompress_s: s(1),
        check_s: s(2),
    }
}

/// The calling thread's CPU time, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Times the stages of one decode on the calling thread.
pub(super) struct StageClock(u64);

impl StageClock {
    pub(super) fn start() -> Self {
        StageClock(thread_cpu_ns())
    }

    /// Charge the CPU time since the last mark to `stage`.
    pub(super) fn mark(&mut self, stage: Stage) {
        let now = thread_cpu_ns();
        NANOS[stage as usize].fetch_add(now.saturating_sub(self.0), Ordering::Relaxed);
        self.0 = now;
    }
}
