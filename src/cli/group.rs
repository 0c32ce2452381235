//! `checkpoint --group` / `restore --group`, and the disk flags of `checkpoint`.
//!
//! One idea with `xenverbs.rs`, split for length: those verbs hand `--group` here, and this
//! file reuses their arguments and summary (modgraph: one idea with cli/xenverbs.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use xckpt::backend::xen::XenDomain;
use xckpt::disk::{BackendKind, DiskOptions, DiskPlan};
use xckpt::group::across::meet_checkpoint;
use xckpt::group::rendezvous::Rendezvous;
use xckpt::group::slurm::SlurmStep;
use xckpt::group::{
    checkpoint_group, Coordinator, GroupDir, GroupReport, LocalCoordinator, Member, Phase,
};
use xckpt::hv::{Domain, HvError};
use xckpt::store::{ChainLock, Store};

use super::print_json;
use super::target::Target;
use super::xenverbs::CheckpointCmd;

/// How the disks of a checkpoint are snapshotted.
#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// Memory only: take no disk snapshots (the restored domain uses its disks as they are then).
    #[arg(long)]
    pub no_disk: bool,
    /// Disk back-end, for every disk (`reflink`) or one (`xvdb=lvm`): reflink, lvm, qcow2, hook.
    #[arg(long = "disk-backend", value_name = "[VDEV=]KIND")]
    pub disk_backend: Vec<String>,
    /// Script for the `hook` back-end (`probe|snapshot|clone|delete ...`; see docs/design-group.md).
    #[arg(long)]
    pub disk_hook: Option<PathBuf>,
    /// Time limit of one hook, LVM or qemu-img call, seconds.
    #[arg(long, default_value_t = 30)]
    pub disk_timeout: u64,
    /// Copy-on-write size of a thick LVM snapshot (`20%ORIGIN`, `2G`).
    #[arg(long, default_value = "20%ORIGIN")]
    pub lvm_snapshot_size: String,
}

impl DiskArgs {
    /// The library's options.
    pub fn options(&self) -> anyhow::Result<DiskOptions> {
        let mut backend = BTreeMap::new();
        for b in &self.disk_backend {
            let (vdev, kind) = b.split_once('=').unwrap_or(("*", b));
            let kind: BackendKind = kind.parse().map_err(anyhow::Error::msg)?;
            backend.insert(vdev.to_string(), kind);
        }
        Ok(DiskOptions {
            backend,
            hook: self.disk_hook.clone(),
            limit: Duration::from_secs(self.disk_timeout),
            lvm_snapshot_size: self.lvm_snapshot_size.clone(),
            ..Default::default()
        })
    }

    /// The disk plan of `dom`: checked now, before any pause.
    pub fn plan(&self, dom: &XenDomain) -> anyhow::Result<DiskPlan> {
        if self.no_disk {
            return Ok(DiskPlan::default());
        }
        let config = dom.config_for_capture()?;
        Ok(DiskPlan::new(
            &dom.name(),
            &config,
            dom.domid(),
            &self.options()?,
        )?)
    }
}

/// A group across hosts: one xckpt per node of a Slurm job step.
#[derive(Debug, Clone, Args)]
pub struct HostsArgs {
    /// Run as one task of a Slurm job step with one task per node (`srun -N NODES
    /// --ntasks-per-node=1 xckpt ... --slurm`): the hosts meet and act as one group. A checkpoint
    /// takes the named domains that run on this node; a restore places each member on the
    /// node whose task rank the member's host had. The store must be shared by every node.
    #[arg(long, requires = "group")]
    pub slurm: bool,
    /// Where the hosts meet, HOST:PORT (default: the step's first node, on a port derived
    /// from the job and step ids).
    #[arg(long, requires = "slurm", value_name = "HOST:PORT")]
    pub rendezvous: Option<String>,
    /// Seconds to wait for the other hosts to meet, to converge, to commit, and in a restore
    /// to create their members.
    #[arg(long, default_value_t = 600, requires = "slurm")]
    pub group_timeout: u64,
    /// Seconds to wait for the other hosts while members are stopped (pause, disk snapshots,
    /// final round); past it, every host resumes its members.
    #[arg(long, default_value_t = 10, requires = "slurm")]
    pub group_stop_timeout: u64,
}

/// Disks that follow their domain to another host (restore across hosts).
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Where a restore across hosts puts the local copy (a qcow2 overlay) of each disk whose
    /// snapshot another host holds; that host serves it over NBD until the copy is complete.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/xckpt/disks",
        requires = "slurm"
    )]
    pub disk_dir: PathBuf,
    /// Bound each disk copy to this many MiB/s (default: as fast as it goes).
    #[arg(long, value_name = "MIB_PER_S", requires = "slurm")]
    pub disk_copy_rate: Option<u64>,
}

impl FetchArgs {
    /// The mover that serves, fetches and copies disks.
    pub fn mover(&self) -> xckpt::restore::fetch::Nbd {
        xckpt::restore::fetch::Nbd {
            overlay_dir: self.disk_dir.clone(),
            rate: self.disk_copy_rate.map(|m| m << 20),
            ..Default::default()
        }
    }
}

impl HostsArgs {
    /// Where this host meets the others (None: one host).
    pub fn rendezvous(&self) -> anyhow::Result<Option<Rendezvous>> {
        if !self.slurm {
            return Ok(None);
        }
        let step = SlurmStep::from_env(|k| std::env::var(k).ok())?;
        Ok(Some(step.rendezvous(
            self.rendezvous.as_deref(),
            Duration::from_secs(self.group_timeout),
            Duration::from_secs(self.group_stop_timeout),
        )?))
    }
}

/// The members of a group: the domains given, and those listed in `file` (one per line, `#`
/// comments).
pub fn group_members(domains: &[String], file: Option<&PathBuf>) -> anyhow::Result<Vec<String>> {
    let mut all = domains.to_vec();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read group file {}", f.display()))?;
        all.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    Ok(all)
}

/// `xckpt checkpoint --group NAME DOM...`: lock, plan disks (refusing before any pause),
/// run, record, print. Each member gets the command's eviction and key as a single checkpoint
/// would; each new layer is written once, during its capture.
pub fn checkpoint(cmd: &CheckpointCmd, group: &str) -> anyhow::Result<ExitCode> {
    let domains = group_members(&cmd.domains, cmd.group_file.as_ref())?;
    let wait = Duration::from_secs(cmd.wait.wait);
    let store_root = &cmd.store.store;
    let store = Store::open(store_root)?;
    let gdir = GroupDir::open(store_root, group)?;
    let hosts = cmd.hosts.rendezvous()?;
    // The host that records the group point holds the group's lock.
    let _glock = match &hosts {
        Some(r) if !r.hub => None,
        _ => Some(gdir.lock(wait)?),
    };
    let mut doms = Vec::new();
    for d in &domains {
        match XenDomain::open(d) {
            Ok(dom) => doms.push((d.clone(), Arc::new(dom))),
            // Across hosts, each host takes the group's domains that run on it.
            Err(HvError::NoSuchDomain(_)) if hosts.is_some() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (id, mut coord): (u64, Box<dyn Coordinator>) = match &hosts {
        Some(r) => {
            let here = doms.iter().map(|(d, _)| d.clone()).collect();
            let c = meet_checkpoint(r, &gdir, &domains, here)?;
            (c.welcome().id, Box::new(c))
        }
        None => (gdir.manifest()?.next_id(), Box::new(LocalCoordinator)),
    };
    let mut locks: Vec<ChainLock> = Vec::new();
    let members = match prepare(cmd, &store, doms, wait, &mut locks) {
        Ok(m) => m,
        Err(e) => {
            // Tell the other hosts: they resume and record nothing.
            let _ = coord.barrier(Phase::Converged, false);
            return Err(e);
        }
    };
    let report = checkpoint_group(group, id, &members, &cmd.capture.options(), &mut *coord)?;
    if let Some(point) = &report.record {
        gdir.record(point.clone())?;
    }
    if cmd.json {
        print_json(&report)?;
    } else {
        print_group(&report, hosts.as_ref());
    }
    Ok(ExitCode::SUCCESS)
}

/// Lock each member's chain and plan its disks (refusing before any pause).
fn prepare(
    cmd: &CheckpointCmd,
    store: &Store,
    doms: Vec<(String, Arc<XenDomain>)>,
    wait: Duration,
    locks: &mut Vec<ChainLock>,
) -> anyhow::Result<Vec<Member<XenDomain>>> {
    let mut members = Vec::new();
    for (_, dom) in doms {
        let name = dom.name();
        let chain = store.chain(&name)?.with_key(cmd.key.key(&name)?);
        locks.push(chain.lock_exclusive(wait)?);
        let plan = cmd.disks.plan(&dom)?;
        let evict = cmd.evict.options(dom.domid())?;
        members.push(Member {
            dom,
            chain,
            disks: plan,
            evict,
        });
    }
    Ok(members)
}

fn print_group(r: &GroupReport, hosts: Option<&Rendezvous>) {
    for m in &r.members {
        super::xenverbs::print_summary(&m.domain, &m.capture);
        for d in &m.capture.disks {
            println!("  disk {}: {} snapshot {}", d.vdev, d.backend, d.snapshot);
        }
    }
    let downtimes: Vec<String> = r
        .members
        .iter()
        .map(|m| format!("{}={:.2}", m.domain, m.capture.downtime.as_secs_f64() * 1e3))
        .collect();
    let members = match (hosts, &r.record) {
        (None, _) => format!("{} members", r.members.len()),
        (Some(h), Some(p)) => format!(
            "{} members on {} hosts (here: {} on {})",
            p.members.len(),
            h.size,
            r.members.len(),
            h.host
        ),
        (Some(h), None) => format!(
            "{} members on {} (recorded by the hub)",
            r.members.len(),
            h.host
        ),
    };
    println!(
        "group {}@{}: {members} at one instant; pause skew {:.2} ms; downtime ms {}",
        r.tag.name,
        r.tag.id,
        r.skew.as_secs_f64() * 1e3,
        downtimes.join(" ")
    );
}

/// One line per disk cloned for a restore.
pub fn print_disks(r: &xckpt::restore::Restored) {
    for (vdev, path) in &r.disks {
        println!(
            "{}: disk {vdev} restored from its snapshot as {path}",
            r.chain
        );
    }
}

/// `xckpt restore --group NAME[@N]`: every member created paused, then all unpaused.
pub fn restore(
    store_root: &std::path::Path,
    target: &Target,
    xl: &xckpt::restore::Xl,
    key: &super::settings::KeyArg,
    hosts: &HostsArgs,
    fetch: &FetchArgs,
) -> anyhow::Result<ExitCode> {
    let mut key_of = |chain: &str| key.key(chain).map_err(Into::into);
    let (name, id) = (&target.name, target.layer);
    let g = match hosts.rendezvous()? {
        Some(r) => {
            let mover = fetch.mover();
            xckpt::restore::restore_group_across(store_root, name, id, &mut key_of, xl, &r, &mover)?
        }
        None => xckpt::restore::restore_group(store_root, name, id, &mut key_of, xl)?,
    };
    for r in &g.members {
        for (vdev, path) in &r.disks {
            match g
                .copies
                .iter()
                .find(|c| c.chain == r.chain && &c.vdev == vdev)
            {
                Some(c) => println!(
                    "{}: disk {vdev} fetched from {} into the local overlay {path}",
                    r.chain, c.from
                ),
                None => println!(
                    "{}: disk {vdev} restored from its snapshot as {path}",
                    r.chain
                ),
            }
        }
    }
    let names: Vec<&str> = g.members.iter().map(|r| r.name.as_str()).collect();
    println!(
        "restored group {}@{} ({} members: {}), unpaused together; running after {:.2} s",
        g.group,
        g.id,
        names.len(),
        names.join(" "),
        g.running_after.as_secs_f64()
    );
    for c in &g.copies {
        println!("{}", c.describe());
    }
    if let Some(t) = g.local_after.filter(|_| !g.copies.is_empty()) {
        println!(
            "every disk of group {}@{} local after {:.2} s",
            g.group,
            g.id,
            t.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
