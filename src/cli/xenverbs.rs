//! Verbs on real Xen domains: `checkpoint`, `restore`, `export`, `import`, `untrack`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use xckpt::capture::{checkpoint_with, CaptureReport, SoloStop};
use xckpt::compose::ComposedImage;
use xckpt::hv::xen::XenDomain;
use xckpt::hv::{pause, DirtyLog, Domain};
use xckpt::store::Store;
use xckpt::stream::{write_save_file, StreamOptions};

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
    pub(super) wait: WaitArg,
    #[command(flatten)]
    pub(super) evict: EvictArgs,
    #[command(flatten)]
    pub(super) key: KeyArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// Keep the layer as written, dead page copies included (by default a layer whose page
    /// copies are more than 5% dead, from pages re-sent by later pre-copy rounds, is rewritten
    /// compactly after the domain has resumed).
    #[arg(long)]
    pub(super) no_compact: bool,
}

/// Which pages a checkpoint need not store (docs/eviction.md).
#[derive(Debug, Args)]
pub struct EvictArgs {
    /// Eviction policies: zero, unpopulated, free, cache, balloon (comma-separated). `free`,
    /// `cache` and `balloon` need xckpt-agent in the guest; without an answer they are skipped
    /// and the summary says why.
    #[arg(long, default_value = "zero,unpopulated,free")]
    evict: xckpt::evict::EvictSet,
    /// Milliseconds to wait for the guest agent's report.
    #[arg(long, default_value_t = 3000)]
    agent_timeout_ms: u64,
    /// Seconds the guest may take to balloon down (`balloon`) before the old target is put back.
    #[arg(long, default_value_t = 20)]
    balloon_timeout_s: u64,
    /// The guest kernel's System.map or ISF JSON profile: without an agent, `free` reads the
    /// guest's free pages from its memory (PVH/HVM Linux guests; docs/eviction.md).
    #[arg(long, value_name = "FILE")]
    guest_profile: Option<std::path::PathBuf>,
}

impl EvictArgs {
    /// The library's options for domain `domid`.
    pub(super) fn options(&self, domid: u32) -> anyhow::Result<xckpt::evict::EvictOptions> {
        let agent: Option<Arc<dyn xckpt::evict::GuestAgent>> = if self.evict.needs_agent() {
            let a = xckpt::hv::xen::agent::XenAgent::connect(domid)
                .context("connecting to xenstored to reach the guest agent")?;
            Some(Arc::new(a))
        } else {
            None
        };
        let balloon: Option<Arc<dyn xckpt::evict::BalloonTarget>> = if self.evict.balloon {
            let b = xckpt::hv::xen::agent::XenBalloon::connect(domid)
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
        let wait = Duration::from_secs(self.wait.wait);
        if let Some(group) = &self.group {
            return super::group::checkpoint(&self, group);
        }
        let [domain] = &self.domains[..] else {
            bail!("one domain per checkpoint; for several at one instant, use --group NAME");
        };
        let dom = Arc::new(XenDomain::open(domain)?);
        let name = dom.info()?.identity.name;
        let store = Store::open(&self.store.store)?;
        let chain = store.chain(&name)?.with_key(self.key.key(&name)?);
        let lock = chain.lock_exclusive(wait)?;
        // Disks are checked before anything else happens: a refusal leaves the domain untouched.
        let mut stop = SoloStop::new(dom.clone(), self.disks.plan(&dom)?);
        let mut opts = self.capture.options();
        opts.evict = self.evict.options(dom.domid())?;
        let mut report = checkpoint_with(&dom, &chain, &opts, &mut stop).with_context(|| {
            format!(
                "checkpoint of domain {name} into {}",
                self.store.store.display()
            )
        })?;
        // The domain runs again; drop the layer's dead page copies if there are many.
        if !self.no_compact {
            compact_new_layer(&chain, &lock, &mut report);
        }
        if self.json {
            print_json(&report)?;
        } else {
            print_summary(&name, &report);
            for d in &report.disks {
                println!("  disk {}: {} snapshot {}", d.vdev, d.backend, d.snapshot);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Share of dead page copies in a new layer above which the checkpoint compacts it.
const COMPACT_DEAD: f64 = 0.05;

/// Rewrite the just-committed layer without its dead copies (see `Chain::compact_dead`). The
/// layer is already committed, so a failure here is a warning, not a failed checkpoint.
pub(super) fn compact_new_layer(
    chain: &xckpt::store::Chain,
    lock: &xckpt::store::ChainLock,
    r: &mut CaptureReport,
) {
    let id = r.layer.id;
    match chain.compact_dead(lock, id, COMPACT_DEAD) {
        Ok(None) => {}
        Ok(Some(_)) => {
            if let Ok(m) = chain.manifest() {
                if let Some(rec) = m.layer(id) {
                    // The rewritten layer's notes say it was compacted; add the sizes.
                    let note = format!("compacted from {} bytes", r.layer.bytes);
                    r.layer = rec.clone();
                    r.layer.stats.notes.push(note);
                }
            }
        }
        Err(e) => eprintln!(
            "xckpt: warning: layer {id} of {} is committed but could not be compacted: {e}; \
             `xckpt merge` can do it later",
            chain.name()
        ),
    }
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
}

/// The verified, composed image at `target` (the chain's newest layer without `@N`).
pub fn open_point(
    store: &StoreArg,
    target: &Target,
    key: &KeyArg,
) -> anyhow::Result<(ComposedImage, u64)> {
    let store = Store::open(&store.store)?;
    let chain = store.chain(&target.name)?.with_key(key.key(&target.name)?);
    let m = chain.manifest()?;
    let id = match target.layer {
        Some(id) if m.layers.iter().any(|l| l.id == id) => id,
        Some(id) => bail!(
            "chain {} has no layer {id} (layers: {}): see `xckpt list {}`",
            target.name,
            m.layers
                .iter()
                .map(|l| l.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            target.name
        ),
        None => m.layers.last().map(|l| l.id).with_context(|| {
            format!(
                "chain {} has no layers: take one with `xckpt checkpoint {}`",
                target.name, target.name
            )
        })?,
    };
    // Every byte of every layer up to the point is checked before anything reaches Xen.
    chain.verify(Some(id))?;
    Ok((chain.compose(Some(id))?, id))
}

impl RestoreCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if let Some(group) = &self.group {
            return super::group::restore(&self.store.store, group, &self.xl, &self.key);
        }
        let target = self
            .target
            .as_ref()
            .context("a chain to restore is needed")?;
        let (image, id) = open_point(&self.store, target, &self.key)?;
        let disks = image.top().meta().disks.clone();
        let opts = StreamOptions {
            rename: self.name.clone(),
            disk_paths: super::group::disk_clones(&disks, &target.name)?,
            ..Default::default()
        };
        let what = format!("{}@{id}", target.name);
        let stats = super::group::xl_restore(&self.xl, &image, &opts, self.paused, &what)?;
        let name = self.name.as_deref().unwrap_or(&target.name);
        println!(
            "restored {}@{id} as domain {name} ({} pages, {} bytes streamed)",
            target.name, stats.pages, stats.bytes
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
}

impl ExportCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        use std::os::unix::fs::OpenOptionsExt;
        let (image, id) = open_point(&self.store, &self.target, &self.key)?;
        let opts = StreamOptions {
            rename: self.name.clone(),
            ..Default::default()
        };
        let tmp = self.output.with_extension("partial");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let res = write_save_file(&image, &opts, &mut out)
            .map_err(anyhow::Error::from)
            .and_then(|s| {
                let f = out.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
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
}

impl ImportCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = Store::open(&self.store.store)?;
        let chain = store.chain(&self.name)?.with_key(self.key.key(&self.name)?);
        let _lock = chain.lock_exclusive(Duration::ZERO)?;
        let rec = xckpt::import::import_file(&self.file, &chain, self.compress_level)
            .with_context(|| {
                format!("importing {} into chain {}", self.file.display(), self.name)
            })?;
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
        let reports = xckpt::hv::suite::run_observe(&dom, self.rounds)
            .map_err(|e| anyhow::anyhow!("domain {}: {e}", self.domain))?;
        for r in reports {
            println!("{r}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
