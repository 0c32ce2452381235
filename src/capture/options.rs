//! What a checkpoint is asked to do ([`CaptureOptions`]) and what it reports.

use std::time::Duration;

use super::policy::{PrecopyPolicy, StopReason};
use crate::store::LayerRecord;
use crate::usage::Usage;

/// Options of one checkpoint.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Take a base layer even if the chain could take an incremental.
    pub full: bool,
    /// Pre-copy while the guest runs (false: pause for the whole capture, like `xl save -c`).
    pub live: bool,
    /// When to stop pre-copy.
    pub policy: PrecopyPolicy,
    /// zstd level (0: store pages raw), unless `compress` says otherwise.
    pub compress_level: i32,
    /// How to encode frames (`--compress auto|none|LEVEL`); `None`: at `compress_level`.
    pub compress: Option<crate::layer::Encoding>,
    /// Compress worker threads.
    pub threads: usize,
    /// Pages per frame.
    pub frame_pages: u32,
    /// Which pages need not be stored ([`crate::evict`]).
    pub evict: crate::evict::EvictOptions,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            full: false,
            live: true,
            policy: PrecopyPolicy::default(),
            compress_level: 1,
            compress: None,
            threads: crate::layer::pipeline::default_workers(),
            frame_pages: crate::layer::DEFAULT_FRAME_PAGES,
            evict: Default::default(),
        }
    }
}

impl CaptureOptions {
    /// How frames are encoded.
    pub fn encoding(&self) -> crate::layer::Encoding {
        self.compress
            .unwrap_or(crate::layer::Encoding::Level(self.compress_level.max(0)))
    }
}

/// One round of a capture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundReport {
    /// 0-based round; the paused final round is marked `paused`.
    pub round: u32,
    /// Whether the round ran under pause.
    pub paused: bool,
    /// Pages read.
    pub pages: u64,
    /// Wall time of the round, ms.
    pub ms: f64,
}

/// The result of a checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureReport {
    /// The committed layer.
    pub layer: LayerRecord,
    /// Why the layer is a resync, if it is one.
    pub resync_reason: Option<String>,
    /// Why pre-copy stopped.
    pub stop: StopReason,
    /// Rounds, the paused one last.
    pub rounds: Vec<RoundReport>,
    /// Pause to resume, measured.
    pub downtime: Duration,
    /// Page copies written and their sizes.
    pub raw_bytes: u64,
    /// Encoded bytes of the frames written.
    pub stored_bytes: u64,
    /// Disk snapshots recorded in the layer.
    pub disks: Vec<crate::disk::DiskSnapshot>,
    /// Time per stage of the pipeline (copy, zero check, digest, compress, write).
    pub stages: crate::layer::StageTimes,
    /// Page copies dropped before encoding because a later round re-sent them.
    pub superseded_pages: u64,
    /// Wall time of each phase of the run.
    pub phases: PhaseTimes,
    /// This process's CPU time and minor faults in each phase of the run.
    pub phase_usage: PhaseUsage,
    /// How a base's first round found the populated pfns, when it probed (`probe`).
    pub probe: Option<super::ProbeReport>,
}

/// This process's CPU time and minor faults (all its threads) in each phase of [`PhaseTimes`]
/// but `prepare` and `spot` (parts of `arm`): whether a phase's wall time was work or waiting,
/// and how much fresh memory it touched (in a PV dom0 each minor fault is a trip through the
/// hypervisor). `checkpoint --json`'s `phase_usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PhaseUsage {
    /// See [`PhaseTimes::arm_ms`].
    pub arm: Usage,
    /// See [`PhaseTimes::free_ms`].
    pub free: Usage,
    /// From the end of `arm` to the end of the live rounds: [`PhaseTimes::precopy_ms`] and what
    /// it leaves out between them (the pipeline's start, a base's probe).
    pub precopy: Usage,
    /// See [`PhaseTimes::stopped_ms`].
    pub stopped: Usage,
    /// See [`PhaseTimes::write_behind_ms`].
    pub write_behind: Usage,
    /// See [`PhaseTimes::commit_ms`].
    pub commit: Usage,
}

/// The process's usage when the run started and at the end of each phase.
#[derive(Debug, Default)]
pub(super) struct UsageMarks {
    pub(super) start: Usage,
    /// Of the free-page search alone (inside `arm`'s span).
    pub(super) free: Usage,
    pub(super) armed: Usage,
    pub(super) precopied: Usage,
    pub(super) resumed: Usage,
    pub(super) written: Usage,
}

impl UsageMarks {
    /// Each phase's usage, the run committed at `committed`.
    pub(super) fn phases(&self, committed: Usage) -> PhaseUsage {
        PhaseUsage {
            arm: self.armed.since(self.start).since(self.free),
            free: self.free,
            precopy: self.precopied.since(self.armed),
            stopped: self.resumed.since(self.precopied),
            write_behind: self.written.since(self.resumed),
            commit: committed.since(self.written),
        }
    }
}

/// Wall time of each phase of one run, ms, in the order they run: where a checkpoint's time
/// goes (`checkpoint --json`'s `phases`; the test bed prints them beside `xl save`'s time).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseTimes {
    /// From the call to round 0: the plan, arming log-dirty, the spot check, the first fetch
    /// of the dirty log, the layer's file (the free-page search not included).
    pub arm_ms: f64,
    /// Of `arm_ms`: reading the manifest, the plan and the domain's preparation (the watchdog,
    /// QEMU's dirty log for HVM).
    pub prepare_ms: f64,
    /// Of `arm_ms`: the spot check of an incremental (opening the chain's layers, reading the
    /// sampled pages).
    pub spot_ms: f64,
    /// Finding free pages: the agent's answer or the introspection (0 without `free`).
    pub free_ms: f64,
    /// The live pre-copy rounds.
    pub precopy_ms: f64,
    /// From the end of pre-copy to the resume: the backlog written, the final round's buffers
    /// taken from the pool or faulted in, the stop, the final round, the state.
    pub stopped_ms: f64,
    /// After the resume: the paused round's pages encoded and written, the file synced.
    pub write_behind_ms: f64,
    /// The domain's config awaited and the layer committed (index, state, manifest).
    pub commit_ms: f64,
}
