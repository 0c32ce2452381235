//! `checkpoint --group` / `restore --group`, and the disk flags of `checkpoint`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use xckpt::disk::{BackendKind, DiskOptions, DiskPlan, DiskSnapshot};
use xckpt::group::{checkpoint_group, GroupDir, GroupReport, LocalCoordinator, Member};
use xckpt::hv::xen::XenDomain;
use xckpt::hv::{Domain, MachineState};
use xckpt::store::{ChainLock, Store};
use xckpt::stream::{write_save_file, StreamOptions};

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
        let config = dom.config()?;
        Ok(DiskPlan::new(
            &dom.name(),
            &config,
            dom.domid(),
            &self.options()?,
        )?)
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
/// run, record, compact, print. Each member gets the command's eviction, key and compaction
/// as a single checkpoint would.
pub fn checkpoint(cmd: &CheckpointCmd, group: &str) -> anyhow::Result<ExitCode> {
    let domains = group_members(&cmd.domains, cmd.group_file.as_ref())?;
    let wait = Duration::from_secs(cmd.wait.wait);
    let store_root = &cmd.store.store;
    let store = Store::open(store_root)?;
    let gdir = GroupDir::open(store_root, group)?;
    let _glock = gdir.lock(wait)?;
    let mut members = Vec::new();
    let mut locks: Vec<ChainLock> = Vec::new();
    for d in &domains {
        let dom = Arc::new(XenDomain::open(d)?);
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
    let id = gdir.manifest()?.next_id();
    let mut report = checkpoint_group(
        group,
        id,
        &members,
        &cmd.capture.options(),
        &mut LocalCoordinator,
    )?;
    gdir.record(report.point())?;
    // Every member runs again; drop each new layer's dead page copies if there are many.
    if !cmd.no_compact {
        for ((m, lock), r) in members.iter().zip(&locks).zip(&mut report.members) {
            super::xenverbs::compact_new_layer(&m.chain, lock, &mut r.capture);
        }
    }
    if cmd.json {
        print_json(&report)?;
    } else {
        print_group(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_group(r: &GroupReport) {
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
    println!(
        "group {}@{}: {} members at one instant; pause skew {:.2} ms; downtime ms {}",
        r.tag.name,
        r.tag.id,
        r.members.len(),
        r.skew.as_secs_f64() * 1e3,
        downtimes.join(" ")
    );
}

/// Writable clones of a layer's disk snapshots, for its restore (vdev -> path), printed.
pub fn disk_clones(
    disks: &[DiskSnapshot],
    chain: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let tag = format!("restore-{}", xckpt::store::unix_ms());
    let paths = xckpt::disk::clone_for_restore(disks, &tag, &DiskOptions::default())
        .with_context(|| format!("restoring the disks of {chain}"))?;
    for (vdev, path) in &paths {
        println!("{chain}: disk {vdev} restored from its snapshot as {path}");
    }
    Ok(paths)
}

/// Run `xl restore` (paused if asked) on the stream of `image`.
pub fn xl_restore(
    xl: &str,
    image: &xckpt::compose::ComposedImage,
    opts: &StreamOptions,
    paused: bool,
    what: &str,
) -> anyhow::Result<xckpt::stream::StreamStats> {
    use std::io::Write;
    let mut cmd = Command::new(xckpt::hv::xen::xl::resolve(std::path::Path::new(xl)));
    cmd.arg("restore");
    if paused {
        cmd.arg("-p");
    }
    // /proc/self/fd/0 rather than /dev/stdin: minimal dom0s have no /dev/stdin link.
    cmd.arg("/proc/self/fd/0").stdin(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!("cannot run {xl:?}: is this a Xen dom0 with xen-utils installed?")
    })?;
    let mut stdin = child.stdin.take().context("xl restore has no stdin")?;
    let written = write_save_file(image, opts, &mut stdin);
    let flushed = stdin.flush();
    drop(stdin);
    let status = child.wait()?;
    let stats = written.with_context(|| format!("streaming {what} into xl restore"))?;
    flushed?;
    if !status.success() {
        bail!("xl restore of {what} failed ({status}); see its messages above and /var/log/xen/");
    }
    Ok(stats)
}

/// `xckpt restore --group NAME[@N]`: every member created paused, then all unpaused.
pub fn restore(
    store_root: &std::path::Path,
    target: &Target,
    xl: &str,
    key: &super::settings::KeyArg,
) -> anyhow::Result<ExitCode> {
    let gdir = GroupDir::open(store_root, &target.name)?;
    let m = gdir.manifest()?;
    let point = m
        .point(target.layer)
        .cloned()
        .with_context(|| match target.layer {
            Some(id) => format!(
                "group {} has no checkpoint {id} (it has {})",
                target.name,
                m.points
                    .iter()
                    .map(|p| p.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("group {} has no checkpoints yet", target.name),
        })?;
    // Every member's layer must still be there (a prune or merge of a member chain may have
    // dropped it): refuse before creating anything.
    let store = Store::open(store_root)?;
    if let Some(gone) = point.missing(&store)?.first() {
        let restorable: Vec<String> = m
            .points
            .iter()
            .filter(|p| p.missing(&store).is_ok_and(|v| v.is_empty()))
            .map(|p| p.id.to_string())
            .collect();
        bail!(
            "group {}@{}: member {}'s layer {} is no longer in its chain (pruned or merged \
             away); nothing was created. Restorable checkpoints of {}: {}",
            target.name,
            point.id,
            gone.chain,
            gone.layer,
            target.name,
            if restorable.is_empty() {
                "none".to_string()
            } else {
                restorable.join(", ")
            }
        );
    }
    let store_arg = super::StoreArg {
        store: store_root.to_path_buf(),
    };
    let mut created: Vec<String> = Vec::new();
    let undo = |created: &[String]| {
        for name in created {
            let _ = Command::new(xl).args(["destroy", name]).status();
        }
    };
    for member in &point.members {
        let t = Target {
            name: member.chain.clone(),
            layer: Some(member.layer),
        };
        let step = super::xenverbs::open_point(&store_arg, &t, key).and_then(|(image, id)| {
            let disks = image.top().meta().disks.clone();
            let opts = StreamOptions {
                disk_paths: disk_clones(&disks, &member.chain)?,
                ..Default::default()
            };
            xl_restore(xl, &image, &opts, true, &format!("{}@{id}", member.chain))
        });
        if let Err(e) = step {
            undo(&created);
            return Err(e.context(format!(
                "group {}@{}: restoring member {}; the members restored before it were destroyed",
                target.name, point.id, member.chain
            )));
        }
        created.push(member.chain.clone());
    }
    // Every member exists, paused: let them all run at once.
    let unpaused: Vec<_> = created
        .iter()
        .map(|n| Command::new(xl).args(["unpause", n]).spawn())
        .collect();
    for (n, c) in created.iter().zip(unpaused) {
        let ok = c
            .and_then(|mut c| c.wait())
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!(
                "group {}@{}: `xl unpause {n}` failed; run it by hand",
                target.name,
                point.id
            );
        }
    }
    println!(
        "restored group {}@{} ({} members: {}), unpaused together",
        target.name,
        point.id,
        created.len(),
        created.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}
