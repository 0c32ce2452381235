//! Verbs on real Xen domains: `checkpoint`, `restore`, `export`, `import`, `untrack`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use xckpt::backend::xen::XenDomain;
use xckpt::capture::{checkpoint_with, CaptureReport, SoloStop};
use xckpt::hv::{pause, DirtyLog, Domain};
use xckpt::store::Store;
use xckpt::stream::StreamOptions;

use super::target::Target;
use super::{print_json, CaptureArgs, KeyArg, StoreArg};

/// How long to wait for another writer of the same chain.
#[derive(Debug, Clone, Args)]
pub struct WaitArg {
    /// Seconds to wait for another checkpoint/merge/prune of the same chain to finish.
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
}

/// `xckpt checkpoint DOM`, `xckpt checkpoint --group NAME DOM...`
#[derive(Debug, Args)]
pub struct CheckpointCmd {
    #[command(flatten)]
    pub(super) store: StoreArg,
    /// Domain name, id or uuid (with --group: the members).
    #[arg(required_unless_present = "group_file")]
    pub(super) domains: Vec<String>,
    /// Checkpoint the domains as one group, at one instant.
    #[arg(long, value_name = "NAME")]
    pub(super) group: Option<String>,
    /// Members of the group, one domain per line (with --group).
    #[arg(long, requires = "group")]
    pub(super) group_file: Option<PathBuf>,
    #[command(flatten)]
    pub(super) capture: CaptureArgs,
    #[command(flatten)]
    pub(super) disks: super::group::DiskArgs,
    #[command(flatten)]
    pub(super) hosts: super::group::HostsArgs,
    #[command(flatten)]
    pub(super) wait: WaitArg,
    #[command(flatten)]
    pub(super) evict: EvictArgs,
    #[command(flatten)]
    pub(super) key: KeyArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// Prometheus node_exporter textfile to update after the run, success or failure
    /// (default: `metrics_file` in the config file; none if unset).
    #[arg(long, value_name = "PATH")]
    pub(super) metrics_file: Option<PathBuf>,
    /// Checkpoint a simulated domain of this size (with a writing workload) instead of a Xen
    /// domain: for tests of the command itself.
    #[arg(long, hide = true, value_name = "SIZE", value_parser = super::size::parse_size)]
    pub(super) sim: Option<u64>,
}

/// Which pages a checkpoint need not store (docs/eviction.md).
#[derive(Debug, Args)]
pub struct EvictArgs {
    /// Eviction policies: zero, unpopulated, free, cache, balloon (comma-separated). `cache`
    /// and `balloon` need xckpt-agent in the guest; `free` asks it first and otherwise reads a
    /// Linux PVH/HVM guest's memory. What cannot be done is skipped and the summary says why.
    #[arg(long, default_value = "zero,unpopulated,free")]
    evict: xckpt::evict::EvictSet,
    /// Milliseconds to wait for the guest agent's report.
    #[arg(long, default_value_t = 3000)]
    agent_timeout_ms: u64,
    /// Seconds the guest may take to balloon down (`balloon`) before the old target is put back.
    #[arg(long, default_value_t = 20)]
    balloon_timeout_s: u64,
    /// The guest kernel's System.map or ISF JSON profile. Without an agent, `free` reads a
    /// PVH/HVM Linux guest's free pages from its memory, with the symbols of the guest's own
    /// kallsyms, or of this file if given (docs/eviction.md).
    #[arg(long, value_name = "FILE")]
    guest_profile: Option<std::path::PathBuf>,
}

impl EvictArgs {
    /// The library's options for domain `domid`.
    pub(super) fn options(&self, domid: u32) -> anyhow::Result<xckpt::evict::EvictOptions> {
        let agent: Option<Arc<dyn xckpt::evict::GuestAgent>> = if self.evict.needs_agent() {
            let a = xckpt::backend::xen::agent::XenAgent::connect(domid)
                .context("connecting to xenstored to reach the guest agent")?;
            Some(Arc::new(a))
        } else {
            None
        };
        let balloon: Option<Arc<dyn xckpt::evict::BalloonTarget>> = if self.evict.balloon {
            let b = xckpt::backend::xen::agent::XenBalloon::connect(domid)
                .context("connecting to xenstored to reach the guest's balloon target")?;
            Some(Arc::new(b))
        } else {
            None
        };
        Ok(xckpt::evict::EvictOptions {
            set: self.evict,
            agent,
            agent_timeout: Duration::from_millis(self.agent_timeout_ms),
            balloon,
            balloon_timeout: Duration::from_secs(self.balloon_timeout_s),
            guest_profile: match &self.guest_profile {
                Some(p) => Some(Arc::new(
                    xckpt::evict::vmi::Profile::load(p).context("--guest-profile")?,
                )),
                None => None,
            },
            vmi_limits: Default::default(),
        })
    }
}

impl CheckpointCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        pause::install_handlers()?;
        super::cputime::mark("command");
        if let Some(group) = &self.group {
            return super::group::checkpoint(&self, group);
        }
        let [domain] = &self.domains[..] else {
            bail!("one domain per checkpoint; for several at one instant, use --group NAME");
        };
        let mut name = domain.clone();
        let result = match self.sim {
            Some(bytes) => self.capture_sim(bytes, &name),
            None => self.capture_xen(&mut name),
        };
        super::cputime::mark("captured");
        self.record_run(&name, &result);
        super::cputime::mark("recorded");
        let report = result?;
        super::progress::clear();
        if self.json {
            print_json(&CheckpointJson {
                domain: &name,
                downtime_ms: report.downtime.as_secs_f64() * 1e3,
                cpu_s: super::cputime::cpu_json(),
                faults: super::cputime::faults_json(),
                since_start_s: super::cputime::since_start_s(),
                setup_s: super::cputime::marks_json(),
                report: &report,
            })?;
        } else {
            print_summary(&name, &report);
            for d in &report.disks {
                println!("  disk {}: {} snapshot {}", d.vdev, d.backend, d.snapshot);
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// One checkpoint of Xen domain `name` (a name, id or uuid; set to the domain's name).
    fn capture_xen(&self, name: &mut String) -> anyhow::Result<CaptureReport> {
        let dom = Arc::new(XenDomain::open(name)?);
        *name = dom.info()?.identity.name;
        super::cputime::mark("xen_open");
        // Disks are checked before anything else happens: a refusal leaves the domain untouched.
        let stop = SoloStop::new(dom.clone(), self.disks.plan(&dom)?);
        super::cputime::mark("disk_plan");
        let mut opts = self.capture.options_for(Some(name));
        opts.evict = self.evict.options(dom.domid())?;
        super::cputime::mark("options");
        self.capture_into(&dom, name, &opts, stop)
    }

    /// One checkpoint of a simulated domain of `bytes` named `name`, its workload writing.
    fn capture_sim(&self, bytes: u64, name: &str) -> anyhow::Result<CaptureReport> {
        use xckpt::backend::sim::{SimConfig, SimDomain, WorkloadSpec};
        let mut cfg = SimConfig::small(bytes / xckpt::hv::PAGE_SIZE as u64);
        cfg.name = name.to_string();
        cfg.workload = WorkloadSpec {
            rate_mib_s: 32.0,
            ..Default::default()
        };
        let dom = Arc::new(SimDomain::new(cfg)?);
        dom.start_workload()?;
        let stop = SoloStop::new(dom.clone(), Default::default());
        let mut opts = self.capture.options_for(Some(name));
        // The sim has no guest agent: only the policies that need none.
        opts.evict.set = "zero,unpopulated".parse().map_err(anyhow::Error::msg)?;
        let result = self.capture_into(&dom, name, &opts, stop);
        dom.stop_workload();
        result
    }

    fn capture_into<D: xckpt::hv::Checkpointable + 'static>(
        &self,
        dom: &Arc<D>,
        name: &str,
        opts: &xckpt::capture::CaptureOptions,
        mut stop: SoloStop,
    ) -> anyhow::Result<CaptureReport> {
        let store = Store::open(&self.store.store)?;
        let chain = store.chain(name)?.with_key(self.key.key(name)?);
        let _lock = chain.lock_exclusive(Duration::from_secs(self.wait.wait))?;
        super::cputime::mark("locked");
        take_checkpoint(dom, &chain, opts, &mut stop).with_context(|| {
            format!(
                "checkpoint of domain {name} into {}",
                self.store.store.display()
            )
        })
    }

    /// Leave the run's figures for monitoring: the textfile (if one is configured) and the
    /// journal. A failure here is a warning: the checkpoint itself is done (or failed) already.
    fn record_run(&self, name: &str, result: &anyhow::Result<CaptureReport>) {
        let outcome = match result {
            Ok(r) => super::metrics::Outcome::Success(r),
            Err(e) => super::metrics::Outcome::Failure(e),
        };
        let manifest = Store::open(&self.store.store)
            .and_then(|s| s.chain(name)?.manifest())
            .ok();
        super::metrics::journal(name, &outcome, manifest.as_ref());
        let path = self
            .metrics_file
            .clone()
            .or_else(|| super::settings::config().metrics_file.clone());
        if let Some(path) = path {
            if let Err(e) = super::metrics::record(&path, name, &outcome, manifest.as_ref()) {
                eprintln!(
                    "xckpt: warning: metrics of domain {name} not written to {}: {e:#}",
                    path.display()
                );
            }
        }
    }
}

/// `checkpoint --json`: the capture report, with the domain and the downtime in ms.
#[derive(serde::Serialize)]
struct CheckpointJson<'a> {
    domain: &'a str,
    downtime_ms: f64,
    /// CPU seconds of xckpt and of the commands it ran.
    cpu_s: Option<serde_json::Value>,
    /// Page faults of xckpt and of the commands it ran.
    faults: Option<serde_json::Value>,
    /// Seconds from the process's start to this report (setup and the capture's `total_ms`).
    since_start_s: Option<f64>,
    /// Seconds from the process's start to each step of the setup before the capture.
    setup_s: serde_json::Value,
    #[serde(flatten)]
    report: &'a CaptureReport,
}

/// Everything `xckpt checkpoint` does to take one checkpoint, the bench included (so the bench
/// times exactly this). The layer is written once, during the capture: there is no rewrite
/// after the resume.
pub(super) fn take_checkpoint<D: xckpt::hv::Checkpointable + 'static>(
    dom: &Arc<D>,
    chain: &xckpt::store::Chain,
    opts: &xckpt::capture::CaptureOptions,
    stop: &mut dyn xckpt::capture::StopControl,
) -> anyhow::Result<CaptureReport> {
    Ok(checkpoint_with(dom, chain, opts, stop)?)
}

/// One line per checkpoint, plus its notes.
pub fn print_summary(name: &str, r: &CaptureReport) {
    let s = &r.layer.stats;
    println!(
        "{name}: layer {} ({:?}) {} bytes; {} pages covered: {} data, {} zero, {} unpopulated, {} evicted{}; \
         {} rounds ({:?}), downtime {:.2} ms",
        r.layer.id,
        r.layer.kind,
        r.layer.bytes,
        s.dirty_pages,
        s.data_pages,
        s.zero_pages,
        s.unpopulated_pages,
        s.evicted.values().sum::<u64>(),
        evicted_by_policy(&s.evicted),
        r.rounds.len(),
        r.stop,
        r.downtime.as_secs_f64() * 1e3
    );
    for n in &s.notes {
        println!("  note: {n}");
    }
}

/// ` (free N, cache M)` for the summary line, or nothing.
fn evicted_by_policy(by: &std::collections::BTreeMap<xckpt::layer::EvictPolicy, u64>) -> String {
    if by.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(p, n)| format!("{} {n}", format!("{p:?}").to_lowercase()))
        .collect();
    format!(" ({})", parts.join(", "))
}

/// `xckpt restore DOM[@N]`, `xckpt restore --group NAME[@N]`
#[derive(Debug, Args)]
pub struct RestoreCmd {
    #[command(flatten)]
    store: StoreArg,
    /// Chain and point (the newest layer if no @N).
    #[arg(required_unless_present = "group")]
    target: Option<Target>,
    /// Restore every member of a group checkpoint (the newest if no @N): all are created
    /// paused, then unpaused together.
    #[arg(long, value_name = "NAME[@N]", conflicts_with_all = ["target", "name", "paused"])]
    group: Option<Target>,
    /// Leave the restored domain paused.
    #[arg(long)]
    paused: bool,
    /// Restore under another name (and a fresh uuid), e.g. next to the running original.
    #[arg(long)]
    name: Option<String>,
    /// The `xl` command to run.
    #[arg(long, env = "XCKPT_XL", default_value = "xl")]
    xl: String,
    #[command(flatten)]
    key: KeyArg,
    #[command(flatten)]
    hosts: super::group::HostsArgs,
    #[command(flatten)]
    fetch: super::group::FetchArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// The composed image at `target` (the chain's newest layer without `@N`), its layers checked.
pub fn open_point(
    store: &StoreArg,
    target: &Target,
    key: &KeyArg,
) -> anyhow::Result<xckpt::restore::Point> {
    let store = Store::open(&store.store)?;
    let key = key.key(&target.name)?;
    Ok(xckpt::restore::open_point(
        &store,
        &target.name,
        target.layer,
        key,
    )?)
}

impl RestoreCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let xl = xckpt::restore::Xl {
            command: self.xl.clone(),
        };
        if let Some(group) = &self.group {
            return super::group::restore(
                &self.store.store,
                group,
                &xl,
                &self.key,
                &self.hosts,
                &self.fetch,
            );
        }
        let target = self
            .target
            .as_ref()
            .context("a chain to restore is needed")?;
        let started = std::time::Instant::now();
        super::cputime::mark("command");
        let store = Store::open(&self.store.store)?;
        let opts = xckpt::restore::RestoreOptions {
            rename: self.name.clone(),
            paused: self.paused,
        };
        let key = self.key.key(&target.name)?;
        let r = xckpt::restore::restore_point(&store, &target.name, target.layer, key, &opts, &xl)?;
        if self.json {
            print_json(&serde_json::json!({
                "chain": r.chain, "layer": r.id, "domain": r.name, "paused": self.paused,
                "stream": stream_json(&r.stats), "seconds": started.elapsed().as_secs_f64(),
                "cpu_s": super::cputime::cpu_json(), "faults": super::cputime::faults_json(),
                "since_start_s": super::cputime::since_start_s(),
                "setup_s": super::cputime::marks_json(),
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        super::group::print_disks(&r);
        println!(
            "restored {}@{} as domain {} ({} pages, {} bytes streamed)",
            r.chain, r.id, r.name, r.stats.pages, r.stats.bytes
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// `xckpt export DOM@N -o FILE`
#[derive(Debug, Args)]
pub struct ExportCmd {
    #[command(flatten)]
    store: StoreArg,
    /// Chain and point (the newest layer if no @N).
    target: Target,
    /// The `xl` save file to write (mode 0600).
    #[arg(short, long)]
    output: PathBuf,
    /// Rename the domain in the file (and give it a fresh uuid).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    key: KeyArg,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// A stream's figures for `--json`.
fn stream_json(s: &xckpt::stream::StreamStats) -> serde_json::Value {
    serde_json::json!({
        "bytes": s.bytes, "pages": s.pages, "data_pages": s.data_pages,
        "zero_pages": s.zero_pages, "filled_pages": s.filled_pages,
        "unpopulated_pfns": s.unpopulated_pfns, "records": s.records,
        "ms": {
            "open": s.timings.open_ms, "spawn": s.timings.spawn_ms,
            "prepare": s.timings.prepare_ms, "pages": s.timings.pages_ms, "drain": s.timings.drain_ms,
            "fill": s.timings.fill_ms, "fill_write": s.timings.fill_write_ms,
            "fill_begin": s.timings.fill_begin_ms,
            "xl_finish": s.timings.xl_finish_ms,
        }, "page_records": s.page_records,
        // This process's CPU (ms, all threads) and minor faults in each phase.
        "usage": phase_usage_json(&s.timings.usage),
        // CPU seconds the frames' decoding took, over every thread of this command.
        "decode_cpu_s": super::cputime::decode_cost(),
    })
}

fn phase_usage_json(u: &xckpt::stream::PhaseUsage) -> serde_json::Value {
    let one = |u: &xckpt::usage::Usage| {
        serde_json::json!({
            "user_ms": u.user_ms, "system_ms": u.system_ms, "minor_faults": u.minor_faults,
        })
    };
    serde_json::json!({
        "open": one(&u.open), "spawn": one(&u.spawn), "prepare": one(&u.prepare),
        "pages": one(&u.pages), "drain": one(&u.drain),
        "fill": one(&u.fill), "finish": one(&u.finish),
    })
}

impl ExportCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let started = std::time::Instant::now();
        let point = open_point(&self.store, &self.target, &self.key)?;
        let id = point.id;
        let opts = StreamOptions {
            rename: self.name.clone(),
            ..Default::default()
        };
        let tmp = self.output.with_extension("partial");
        let file = xckpt::fileio::create_private(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        // write_save_file buffers; the pages go to the file with vectored writes, no copy.
        let mut out = file;
        let res = xckpt::restore::write_point(&point, &opts, &mut out)
            .map_err(anyhow::Error::from)
            .and_then(|s| {
                out.sync_all()?;
                Ok(s)
            });
        let stats = match res {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("writing {}", self.output.display())));
            }
        };
        std::fs::rename(&tmp, &self.output)?;
        if self.json {
            print_json(&serde_json::json!({
                "chain": self.target.name, "layer": id, "file": self.output,
                "bytes": stats.bytes, "stream": stream_json(&stats),
                "seconds": started.elapsed().as_secs_f64(),
                "cpu_s": super::cputime::cpu_json(), "faults": super::cputime::faults_json(),
                "since_start_s": super::cputime::since_start_s(),
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "wrote {}@{id} to {} ({} bytes)",
            self.target.name,
            self.output.display(),
            stats.bytes
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// `xckpt import FILE --name DOM`
#[derive(Debug, Args)]
pub struct ImportCmd {
    #[command(flatten)]
    store: StoreArg,
    /// An `xl save` file.
    file: PathBuf,
    /// The chain to create.
    #[arg(long)]
    name: String,
    /// zstd level (0 stores pages raw).
    #[arg(long, default_value_t = 1)]
    compress_level: i32,
    #[command(flatten)]
    key: KeyArg,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl ImportCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = Store::open(&self.store.store)?;
        let chain = store.chain(&self.name)?.with_key(self.key.key(&self.name)?);
        let _lock = chain.lock_exclusive(Duration::ZERO)?;
        let started = std::time::Instant::now();
        let rec = xckpt::import::import_file(&self.file, &chain, self.compress_level)
            .with_context(|| {
                format!("importing {} into chain {}", self.file.display(), self.name)
            })?;
        if self.json {
            print_json(&serde_json::json!({
                "file": self.file, "chain": self.name, "layer": rec.id, "bytes": rec.bytes,
                "record": rec, "seconds": started.elapsed().as_secs_f64(),
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "imported {} as {}@{} ({} bytes)",
            self.file.display(),
            self.name,
            rec.id,
            rec.bytes
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// `xckpt untrack DOM`
#[derive(Debug, Args)]
pub struct UntrackCmd {
    #[command(flatten)]
    store: StoreArg,
    /// Domain name, id or uuid.
    domain: String,
}

impl UntrackCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let dom = XenDomain::open(&self.domain)?;
        let name = dom.name();
        dom.logdirty_disable()?;
        let store = Store::open(&self.store.store)?;
        let chain = store.chain(&name)?;
        let _lock = chain.lock_exclusive(Duration::ZERO)?;
        if let Some(mut t) = chain.manifest()?.tracking {
            t.armed = false;
            chain.set_tracking(Some(t))?;
        }
        println!("{name}: log-dirty tracking is off; the next checkpoint will be a resync");
        Ok(ExitCode::SUCCESS)
    }
}

/// `xckpt selftest DOM`: the hypervisor suite's observing checks on a running domain.
#[derive(Debug, Args)]
pub struct SelftestCmd {
    /// Domain name, id or uuid.
    domain: String,
    /// Pre-copy rounds of the pre-copy check.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

impl SelftestCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        pause::install_handlers()?;
        let dom = XenDomain::open(&self.domain)?;
        let reports = xckpt::backend::suite::run_observe(&dom, self.rounds)
            .map_err(|e| anyhow::anyhow!("domain {}: {e}", self.domain))?;
        for r in reports {
            println!("{r}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
