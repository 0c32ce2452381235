//! `xckpt bench --sim`: capture throughput, layer sizes and downtime on a simulated domain, with
//! every layer restored into a fresh sim and compared with the ground truth at its pause instant.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use xckpt::backend::sim::{
    AccessPattern, ContentSpec, SimConfig, SimDomain, TruthMode, WorkloadSpec,
};
use xckpt::capture::{CaptureReport, SoloStop};
use xckpt::hv::{GuestType, PAGE_SIZE};
use xckpt::store::Store;

use super::size::parse_size;
use super::{limits, print_json, CaptureArgs};

/// Workload of the simulated guest.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Workload {
    /// Uniformly random pages.
    Uniform,
    /// 10% of the pages get 90% of the writes.
    Hot,
    /// A sequential sweep.
    Sequential,
}

/// `xckpt bench --sim`
#[derive(Debug, Args)]
pub struct BenchCmd {
    /// Use the simulated back-end (the only one the bench drives).
    #[arg(long)]
    sim: bool,
    /// Guest memory, e.g. 1G or 512M.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    mem: u64,
    /// Dirty rate of the workload per second, e.g. 100M.
    #[arg(long, default_value = "100M", value_parser = parse_size)]
    dirty_rate: u64,
    /// Access pattern of the workload.
    #[arg(long, value_enum, default_value_t = Workload::Uniform)]
    workload: Workload,
    /// Checkpoints to take (the first is the base).
    #[arg(long, default_value_t = 5)]
    checkpoints: u32,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Store directory (a fresh temporary one under /var/tmp by default).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    capture: CaptureArgs,
}

/// One layer's figures.
#[derive(Debug, Serialize)]
struct LayerFigures {
    kind: String,
    dirty_pages: u64,
    stored_pages: u64,
    sent_pages: u64,
    layer_bytes: u64,
    downtime_ms: f64,
    rounds: usize,
    /// Page copies written but superseded by a later round (dead space in the file).
    dead_pages: u64,
    /// Page copies dropped before encoding because a later round re-sent them.
    superseded_pages: u64,
    /// Frames compressed / stored raw, and the mode (`--compress`).
    encoding: Option<xckpt::layer::EncodingUsed>,
    /// Thread seconds per stage of this capture.
    stages: xckpt::layer::StageTimes,
    round_detail: Vec<xckpt::capture::RoundReport>,
    /// Wall time of the checkpoint, less `observer_ms`.
    capture_s: f64,
    /// The sim's ground-truth snapshot inside the pause (a digest of every page, for
    /// `verified`): the bench's own pass over memory, not xckpt's, taken out of `capture_s`
    /// and `downtime_ms`.
    observer_ms: f64,
    /// 1.1 x dirty_pages x 4096 x the base's compressed/raw ratio (incrementals only).
    bound_bytes: Option<u64>,
}

/// The bench's result.
#[derive(Debug, Serialize)]
struct BenchResult {
    mem_bytes: u64,
    dirty_rate_bytes: u64,
    workload: String,
    threads: usize,
    compress: String,
    /// Wall time of a base checkpoint, everything `xckpt checkpoint` does, less the sim's
    /// ground-truth snapshot in its pause: the median of `full_capture_samples_s`.
    full_capture_s: f64,
    /// The chain's base (`layers[0]`), then a base on a new chain after each later xl-like
    /// save, the workload writing throughout.
    full_capture_samples_s: Vec<f64>,
    full_capture_gbps: f64,
    /// The same memory written raw to a file on the store's file system and fsynced (what
    /// `xl save` does): the median of `xl_like_save_samples_s`, each taken right before a
    /// base of `full_capture_samples_s`.
    xl_like_save_s: f64,
    xl_like_save_samples_s: Vec<f64>,
    /// Thread seconds per GB of guest memory of each stage of the chain's base capture.
    cpu_s_per_gb: CpuPerGb,
    /// full_capture_s <= 1.0 x xl_like_save_s (medians of three interleaved samples a side);
    /// false when a sample is not a number of seconds above zero.
    capture_within_xl_like: bool,
    /// Dead copies <= 5% of every layer's pages.
    dead_within_5pct: bool,
    limit_gbps: f64,
    limits: limits::Limits,
    capture_over_limit: f64,
    base_compressed_over_raw: f64,
    layers: Vec<LayerFigures>,
    incrementals_within_bound: bool,
    verified: bool,
    verify_failures: Vec<String>,
    /// The restore of the latest point beside the xl-like read-back (restore_s, ...).
    #[serde(flatten)]
    restore: super::bench_restore::RestoreFigures,
    /// `restore_s` <= 1.5 x `xl_like_restore_s` (medians of three interleaved samples a
    /// side); false when a sample is not a number of seconds above zero.
    restore_within_bound: bool,
}

/// One checkpoint the bench took: xckpt's report, the wall time, and how much of it the sim's
/// ground-truth snapshot took inside the pause.
struct Taken {
    report: CaptureReport,
    wall: Duration,
    observer: Duration,
}

impl Taken {
    /// `d` (the wall time, or the downtime: both hold the snapshot) less the snapshot.
    fn net(&self, d: Duration) -> Duration {
        d.saturating_sub(self.observer)
    }
}

/// What the bench measured beside the checkpoints: the machine's limits and the xl-like
/// baselines with the restore.
struct Measured {
    limits: limits::Limits,
    /// The xl-like saves and the bases on new chains after the chain's own, interleaved.
    xl_like_save_samples_s: Vec<f64>,
    more_capture_samples_s: Vec<f64>,
    restore: super::bench_restore::RestoreFigures,
}

/// Samples of each side of the capture check (the chain's base is the first xckpt sample).
const CAPTURE_SAMPLES: usize = 3;

/// Thread seconds per GB of guest memory, per capture stage.
#[derive(Debug, Serialize)]
struct CpuPerGb {
    copy: f64,
    zero_check: f64,
    digest: f64,
    compress: f64,
    write: f64,
}

/// Write the sim's memory raw to a file in `dir` and fsync it, as `xl save` writes a save
/// image: one copy out of the guest, one write. Returns the seconds taken.
fn xl_like_save(dom: &SimDomain, dir: &std::path::Path) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join(".xl-like-save");
    let t = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut buf = vec![0u8; 256 * PAGE_SIZE];
    let pfns = dom.sim_config().pfn_count;
    let mut pfn = 0;
    while pfn < pfns {
        let n = (pfns - pfn).min(256) as usize;
        for (i, page) in buf[..n * PAGE_SIZE].chunks_exact_mut(PAGE_SIZE).enumerate() {
            dom.read_page(pfn + i as u64, page)?;
        }
        f.write_all(&buf[..n * PAGE_SIZE])?;
        pfn += n as u64;
    }
    f.sync_all()?;
    let took = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(took)
}

impl BenchCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if !self.sim {
            bail!("the bench drives the simulated back-end only: add --sim (real-Xen figures come from the test bed)");
        }
        let opts = self.capture.options();
        let tmp;
        let store_dir = match &self.store {
            Some(p) => p.clone(),
            None => {
                tmp = tempfile::Builder::new()
                    .prefix("xckpt-bench-")
                    .tempdir_in("/var/tmp")?;
                tmp.path().join("store")
            }
        };
        let store = Store::open(&store_dir)?;
        let chain = store.chain("bench")?;
        let dom = Arc::new(SimDomain::new(self.sim_config())?);
        let limits = limits::measure(
            &sample(&dom)?,
            opts.encoding().level().max(1),
            opts.threads,
            &store_dir,
        )
        .with_context(|| format!("measuring limits in {}", store_dir.display()))?;
        let xl_like = |n: usize| {
            xl_like_save(&dom, &store_dir)
                .with_context(|| format!("xl-like save {n} into {}", store_dir.display()))
        };
        let take = |chain: &xckpt::store::Chain, what: &str| {
            let observed = dom.auto_truth_time();
            let t = Instant::now();
            // Exactly what `xckpt checkpoint` runs.
            let mut stop = SoloStop::new(dom.clone(), xckpt::disk::DiskPlan::default());
            let report = super::xenverbs::take_checkpoint(&dom, chain, &opts, &mut stop)
                .with_context(|| what.to_string())?;
            anyhow::Ok(Taken {
                report,
                wall: t.elapsed(),
                observer: dom.auto_truth_time().saturating_sub(observed),
            })
        };
        dom.start_workload()?;
        let mut xl_like_save_samples_s = vec![xl_like(1)?];
        let mut reports = Vec::new();
        for i in 0..self.checkpoints {
            if i > 0 {
                std::thread::sleep(Duration::from_secs_f64(self.interval));
            }
            reports.push(take(&chain, &format!("checkpoint {}", i + 1))?);
        }
        // The capture check's later samples, interleaved: an xl-like save, then a base on a
        // chain of its own, the workload still writing. Those chains are removed after the
        // restore's samples, which freeing their blocks meanwhile would disturb.
        let mut more_capture_samples_s = Vec::new();
        let mut samples_chains = Vec::new();
        for n in 2..=CAPTURE_SAMPLES {
            xl_like_save_samples_s.push(xl_like(n)?);
            let name = format!("bench-sample-{n}");
            let taken = take(&store.chain(&name)?, &format!("base sample {n}"))?;
            more_capture_samples_s.push(taken.net(taken.wall).as_secs_f64());
            samples_chains.push(store_dir.join(&name));
        }
        dom.stop_workload();
        let failures = verify_layers(&dom, &store, &reports)?;
        let mem = dom.sim_config().pfn_count * PAGE_SIZE as u64;
        let restore = super::bench_restore::measure(&store, "bench", mem)?;
        for dir in samples_chains {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let measured = Measured {
            limits,
            xl_like_save_samples_s,
            more_capture_samples_s,
            restore,
        };
        let result = self.result(&dom, measured, &reports, failures, &opts);
        if self.json {
            print_json(&result)?;
        } else {
            print_table(&result);
        }
        if let Err(e) = result.restore.check() {
            eprintln!("xckpt: {e}");
        }
        if let Err(e) = capture_samples(
            &result.full_capture_samples_s,
            &result.xl_like_save_samples_s,
        ) {
            eprintln!("xckpt: {e}");
        }
        Ok(if !result.verified {
            ExitCode::from(2)
        } else if !(result.capture_within_xl_like
            && result.dead_within_5pct
            && result.restore_within_bound)
        {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn sim_config(&self) -> SimConfig {
        let pages = (self.mem / PAGE_SIZE as u64).max(16);
        let pattern = match self.workload {
            Workload::Uniform => AccessPattern::Uniform,
            Workload::Hot => AccessPattern::HotSet {
                hot_fraction: 0.1,
                hot_probability: 0.9,
            },
            Workload::Sequential => AccessPattern::Sequential,
        };
        SimConfig {
            name: "bench".into(),
            pfn_count: pages,
            populated: std::iter::once(0..pages).collect(),
            vcpus: 2,
            guest_type: GuestType::Pvh,
            workload: WorkloadSpec {
                pattern,
                rate_mib_s: self.dirty_rate as f64 / (1 << 20) as f64,
            },
            writers: 1,
            content: ContentSpec::default(),
            seed: 42,
            auto_truth: Some(TruthMode::Digest),
            disks: Vec::new(),
        }
    }

    fn result(
        &self,
        dom: &SimDomain,
        measured: Measured,
        reports: &[Taken],
        failures: Vec<String>,
        opts: &xckpt::capture::CaptureOptions,
    ) -> BenchResult {
        let Measured {
            limits,
            xl_like_save_samples_s,
            more_capture_samples_s,
            restore,
        } = measured;
        let mem_bytes = dom.sim_config().pfn_count * PAGE_SIZE as u64;
        let base = &reports[0].report;
        let mut full_capture_samples_s = vec![reports[0].net(reports[0].wall).as_secs_f64()];
        full_capture_samples_s.extend(more_capture_samples_s);
        let median = super::bench_restore::median;
        let full_capture_s = median(&full_capture_samples_s);
        let xl_like_save_s = median(&xl_like_save_samples_s);
        let capture_within_xl_like =
            capture_samples(&full_capture_samples_s, &xl_like_save_samples_s).is_ok()
                && full_capture_s <= xl_like_save_s;
        let full_capture_gbps = mem_bytes as f64 / full_capture_s / 1e9;
        // The base's compression: encoded bytes over raw bytes of the pages it wrote.
        let ratio = base.stored_bytes as f64 / base.raw_bytes.max(1) as f64;
        let layers: Vec<LayerFigures> = reports
            .iter()
            .enumerate()
            .map(|(i, taken)| {
                let r = &taken.report;
                let s = &r.layer.stats;
                LayerFigures {
                    kind: format!("{:?}", r.layer.kind).to_lowercase(),
                    dirty_pages: s.dirty_pages,
                    stored_pages: s.data_pages,
                    sent_pages: s.sent_pages,
                    layer_bytes: r.layer.bytes,
                    downtime_ms: taken.net(r.downtime).as_secs_f64() * 1e3,
                    rounds: r.rounds.len(),
                    dead_pages: (r.raw_bytes / PAGE_SIZE as u64).saturating_sub(s.data_pages),
                    superseded_pages: r.superseded_pages,
                    encoding: s.encoding.clone(),
                    stages: r.stages,
                    round_detail: r.rounds.clone(),
                    capture_s: taken.net(taken.wall).as_secs_f64(),
                    observer_ms: taken.observer.as_secs_f64() * 1e3,
                    bound_bytes: (i > 0)
                        .then_some((1.1 * s.dirty_pages as f64 * PAGE_SIZE as f64 * ratio) as u64),
                }
            })
            .collect();
        let within = layers
            .iter()
            .all(|l| l.bound_bytes.is_none_or(|b| l.layer_bytes <= b));
        let dead_ok = layers
            .iter()
            .all(|l| l.dead_pages as f64 <= 0.05 * l.stored_pages as f64);
        let gb = mem_bytes as f64 / 1e9;
        let st = base.stages;
        let cpu_s_per_gb = CpuPerGb {
            copy: st.copy_s / gb,
            zero_check: st.zero_check_s / gb,
            digest: st.digest_s / gb,
            compress: st.compress_s / gb,
            write: st.write_s / gb,
        };
        BenchResult {
            mem_bytes,
            dirty_rate_bytes: self.dirty_rate,
            workload: format!("{:?}", self.workload).to_lowercase(),
            threads: opts.threads,
            compress: opts.encoding().to_string(),
            full_capture_s,
            full_capture_samples_s,
            full_capture_gbps,
            xl_like_save_s,
            xl_like_save_samples_s,
            cpu_s_per_gb,
            capture_within_xl_like,
            dead_within_5pct: dead_ok,
            limit_gbps: limits.limit_gbps,
            capture_over_limit: full_capture_gbps / limits.limit_gbps,
            limits,
            base_compressed_over_raw: ratio,
            layers,
            incrementals_within_bound: within,
            verified: failures.is_empty(),
            verify_failures: failures,
            restore_within_bound: restore.check().unwrap_or(false),
            restore,
        }
    }
}

/// `Err` naming a sample of the capture check that is not a number of seconds above zero.
fn capture_samples(full_capture_s: &[f64], xl_like_save_s: &[f64]) -> Result<(), String> {
    super::bench_restore::numbers_of_seconds(
        "capture",
        [
            ("full_capture_samples_s", full_capture_s),
            ("xl_like_save_samples_s", xl_like_save_s),
        ],
    )
}

/// Representative guest memory for the zstd measurement: the first 64 MiB of the sim.
fn sample(dom: &SimDomain) -> anyhow::Result<Vec<u8>> {
    let pages = dom.sim_config().pfn_count.min(16384);
    let mut out = vec![0u8; pages as usize * PAGE_SIZE];
    for (pfn, page) in out.chunks_exact_mut(PAGE_SIZE).enumerate() {
        dom.read_page(pfn as u64, page)?;
    }
    Ok(out)
}

/// Restore every layer into a fresh sim and compare it with the truth at its pause instant.
fn verify_layers(dom: &SimDomain, store: &Store, reports: &[Taken]) -> anyhow::Result<Vec<String>> {
    let truths = dom.truths();
    let chain = store.chain("bench")?;
    let mut failures = Vec::new();
    for (i, r) in reports.iter().map(|t| &t.report).enumerate() {
        let Some(truth) = truths.get(i) else {
            failures.push(format!("layer {}: no ground truth recorded", r.layer.id));
            continue;
        };
        let image = chain.compose(Some(r.layer.id))?;
        let restored = SimDomain::from_image(&image)?;
        let bad = truth.differing(&restored.digests());
        if !bad.is_empty() {
            failures.push(format!(
                "layer {}: {} pages differ (first pfn {:#x})",
                r.layer.id,
                bad.len(),
                bad[0]
            ));
        }
    }
    Ok(failures)
}

fn print_table(r: &BenchResult) {
    println!(
        "sim bench: {} MiB, {} workload at {} MiB/s, compress {} x {} threads",
        r.mem_bytes >> 20,
        r.workload,
        r.dirty_rate_bytes >> 20,
        r.compress,
        r.threads
    );
    let l = &r.limits;
    println!(
        "limits: memcpy {:.2} GB/s, zstd {:.2} GB/s (ratio {:.2}), write {:.2} GB/s -> {:.2} GB/s ({})",
        l.memcpy_gbps, l.zstd_gbps, l.zstd_ratio, l.write_gbps, l.limit_gbps, l.bound_by
    );
    let (clo, chi) = super::bench_restore::range(&r.full_capture_samples_s);
    let (xlo, xhi) = super::bench_restore::range(&r.xl_like_save_samples_s);
    println!(
        "full capture: median {:.2} s ({clo:.2}-{chi:.2}), {:.2} GB/s = {:.2} of the limit; \
         xl-like save median {:.2} s ({xlo:.2}-{xhi:.2}); {} samples each (within: {})",
        r.full_capture_s,
        r.full_capture_gbps,
        r.capture_over_limit,
        r.xl_like_save_s,
        r.full_capture_samples_s.len(),
        r.capture_within_xl_like
    );
    let c = &r.cpu_s_per_gb;
    println!(
        "cpu s/GB: copy {:.3}, zero check {:.3}, digest {:.3}, compress {:.3}, write {:.3}",
        c.copy, c.zero_check, c.digest, c.compress, c.write
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>7} {:>12} {:>12} {:>9} {:>6}",
        "KIND", "DIRTY", "STORED", "SENT", "DEAD", "BYTES", "BOUND", "DOWNTIME", "ROUNDS"
    );
    for x in &r.layers {
        let bound = x.bound_bytes.map_or("-".into(), |b| b.to_string());
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>7} {:>12} {:>12} {:>7.2}ms {:>6}",
            x.kind,
            x.dirty_pages,
            x.stored_pages,
            x.sent_pages,
            x.dead_pages,
            x.layer_bytes,
            bound,
            x.downtime_ms,
            x.rounds
        );
    }
    println!(
        "incrementals within bound: {}; dead copies within 5%: {}; verified: {}",
        r.incrementals_within_bound, r.dead_within_5pct, r.verified
    );
    for f in &r.verify_failures {
        println!("  {f}");
    }
    super::bench_restore::print(&r.restore, r.restore_within_bound);
}
