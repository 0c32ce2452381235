//! Disks consistent with memory: a crash-consistent snapshot of each writable disk of a domain,
//! taken while the domain is stopped for its checkpoint, and a writable clone of it for a
//! restore.
//!
//! ```text
//! before pre-copy  plan: pick a back-end per disk (or the override); a disk none can
//!                  snapshot fails the checkpoint here, before any pause (unless --no-disk)
//! under stop       snapshot every planned disk (named xckpt-<chain>-<layer>-<vdev>)
//! commit           the snapshots are recorded in the layer header (LayerMeta::disks)
//! restore          clone each snapshot writable; the config in the stream points at the
//!                  clones; the snapshot and the original disk are never written
//! ```
//!
//! Back-ends: [`reflink`] (file on XFS/btrfs), [`lvm`] (logical volume), [`qcow2`] (qdisk
//! image, through QMP), [`hook`] (a user script).

pub mod command;
pub mod hook;
pub mod lvm;
pub mod nbd;
pub mod qcow2;
pub mod reflink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

// The disk as libxl's config describes it: read out of that config in `libxl::config`.
pub use crate::libxl::config::DiskSpec;
use crate::libxl::config::{writable_disks, DiskConfigError};

/// A snapshot back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// QMP `blockdev-snapshot-sync` of a qcow2 image on qdisk.
    Qcow2,
    /// `lvcreate --snapshot`.
    Lvm,
    /// `FICLONE` of a file on XFS/btrfs.
    Reflink,
    /// A user script.
    Hook,
}

impl BackendKind {
    /// Every back-end, in the order the automatic choice tries them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Qcow2,
        BackendKind::Lvm,
        BackendKind::Reflink,
        BackendKind::Hook,
    ];
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Qcow2 => "qcow2",
            BackendKind::Lvm => "lvm",
            BackendKind::Reflink => "reflink",
            BackendKind::Hook => "hook",
        })
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("unknown disk back-end {s:?} (reflink, lvm, qcow2 or hook)"))
    }
}

/// One disk snapshot, as the layer records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSnapshot {
    /// The guest device.
    pub vdev: String,
    /// The disk the snapshot is of (the config's `pdev_path`).
    pub source: String,
    /// The back-end that took it.
    pub backend: BackendKind,
    /// Where the snapshot is: a file, a volume, or whatever the hook printed.
    pub snapshot: String,
    /// The hook script, for `hook` snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// The host that holds the snapshot (its host name), where the back-end keeps it on that
    /// host: a restore on another host fetches it from there ([`nbd`]). None: layers from
    /// before this field, or a `hook` snapshot, which any host reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The snapshot's image format (`raw`, `qcow2`), as `qemu-nbd` opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl DiskSnapshot {
    /// The snapshot's image format: as recorded, else what its back-end makes.
    pub fn image_format(&self) -> &str {
        match (&self.format, self.backend) {
            (Some(f), _) => f,
            (None, BackendKind::Qcow2) => "qcow2",
            (None, _) => "raw",
        }
    }
}

/// This host's name (the kernel's), as the other hosts of a cluster reach it.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A snapshot back-end. Errors are one line saying why.
pub trait Backend: Send + Sync {
    /// Which back-end this is.
    fn kind(&self) -> BackendKind;
    /// Whether it can snapshot `disk` (checked before any pause); `Err` says why not.
    fn check(&self, disk: &DiskSpec) -> Result<(), String>;
    /// Take a snapshot named `name` (the domain is stopped); returns where it is.
    fn snapshot(&self, disk: &DiskSpec, name: &str) -> Result<String, String>;
    /// A writable clone named `name` of `snap`; returns the path for the domain config.
    fn clone_writable(&self, snap: &DiskSnapshot, name: &str) -> Result<String, String>;
    /// Remove a snapshot that no layer refers to.
    fn discard(&self, snap: &DiskSnapshot) -> Result<(), String>;
    /// The script behind a `hook` back-end (recorded with its snapshots).
    fn script(&self) -> Option<String> {
        None
    }
}

/// How disks are snapshotted.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Back-end per vdev; the key `*` applies to every disk without its own entry.
    pub backend: BTreeMap<String, BackendKind>,
    /// The hook script, if any.
    pub hook: Option<PathBuf>,
    /// Time limit of a hook or LVM/qemu-img call.
    pub limit: Duration,
    /// Copy-on-write size of a thick LVM snapshot.
    pub lvm_snapshot_size: String,
    /// libxl's QMP socket directory.
    pub qmp_dir: PathBuf,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            backend: BTreeMap::new(),
            hook: None,
            limit: Duration::from_secs(30),
            lvm_snapshot_size: "20%ORIGIN".into(),
            qmp_dir: PathBuf::from("/var/run/xen"),
        }
    }
}

impl DiskOptions {
    /// The back-end of `kind` with these options; `None` for `hook` without a script.
    pub fn backend(&self, kind: BackendKind) -> Option<Box<dyn Backend>> {
        Some(match kind {
            BackendKind::Reflink => Box::new(reflink::Reflink),
            BackendKind::Lvm => Box::new(lvm::Lvm {
                snapshot_size: self.lvm_snapshot_size.clone(),
                limit: self.limit,
            }),
            BackendKind::Qcow2 => Box::new(qcow2::Qcow2 {
                qmp_dir: self.qmp_dir.clone(),
                limit: self.limit,
            }),
            BackendKind::Hook => Box::new(hook::Hook {
                script: self.hook.clone()?,
                limit: self.limit,
            }),
        })
    }

    /// The back-end that took `snap`.
    fn backend_of(&self, snap: &DiskSnapshot) -> Option<Box<dyn Backend>> {
        let mut o = self.clone();
        if let Some(h) = &snap.hook {
            o.hook = Some(PathBuf::from(h));
        }
        o.backend(snap.backend)
    }
}

/// Errors of disk snapshots, naming the domain, the disk and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The config could not be read.
    #[error("domain {domain}: {source}")]
    Config {
        /// Domain name.
        domain: String,
        /// The cause.
        source: DiskConfigError,
    },
    /// No back-end can snapshot a disk.
    #[error("domain {domain}: disk {vdev} ({path}) cannot be snapshotted: {reasons}; nothing was paused. Put it on XFS/btrfs, LVM or qcow2, give --disk-hook SCRIPT, or take a memory-only checkpoint with --no-disk")]
    Unsnapshottable {
        /// Domain name.
        domain: String,
        /// Guest device.
        vdev: String,
        /// Disk path.
        path: String,
        /// Why each back-end refused.
        reasons: String,
    },
    /// Taking a snapshot under stop failed.
    #[error("domain {domain}: {backend} snapshot of disk {vdev} ({path}) failed: {reason}; the domain was resumed and the chain is unchanged")]
    Snapshot {
        /// Domain name.
        domain: String,
        /// Guest device.
        vdev: String,
        /// Disk path.
        path: String,
        /// The back-end.
        backend: BackendKind,
        /// Why.
        reason: String,
    },
    /// Making a writable clone for a restore failed.
    #[error("disk {vdev}: cannot clone {backend} snapshot {snapshot} for the restore: {reason}; nothing was restored")]
    Clone {
        /// Guest device.
        vdev: String,
        /// The snapshot.
        snapshot: String,
        /// The back-end.
        backend: BackendKind,
        /// Why.
        reason: String,
    },
}

/// The disks of one domain and the back-end chosen for each.
#[derive(Default)]
pub struct DiskPlan {
    disks: Vec<(DiskSpec, Box<dyn Backend>)>,
    /// The host recorded as holding the snapshots (None: this one, by its name).
    host: Option<String>,
}

impl std::fmt::Debug for DiskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.disks.iter().map(|(d, b)| (&d.vdev, b.kind())))
            .finish()
    }
}

impl DiskPlan {
    /// Pick a back-end for every writable disk of `config` (libxl JSON): the override for its
    /// vdev (or `*`) if given, else the first of [`BackendKind::ALL`] whose check passes.
    pub fn new(
        domain: &str,
        config: &[u8],
        domid: u32,
        opts: &DiskOptions,
    ) -> Result<DiskPlan, DiskError> {
        let disks = writable_disks(config, domid).map_err(|source| DiskError::Config {
            domain: domain.to_string(),
            source,
        })?;
        let available = |k| opts.backend(k);
        Self::choose(domain, disks, &opts.backend, available)
    }

    /// [`DiskPlan::new`] with the back-ends given by `available` (tests use fakes).
    pub fn choose(
        domain: &str,
        disks: Vec<DiskSpec>,
        overrides: &BTreeMap<String, BackendKind>,
        available: impl Fn(BackendKind) -> Option<Box<dyn Backend>>,
    ) -> Result<DiskPlan, DiskError> {
        let mut plan = DiskPlan::default();
        for disk in disks {
            let forced = overrides.get(&disk.vdev).or_else(|| overrides.get("*"));
            let kinds = forced.map_or(BackendKind::ALL.to_vec(), |k| vec![*k]);
            let mut reasons = Vec::new();
            let mut chosen = None;
            for k in kinds {
                let Some(b) = available(k) else {
                    reasons.push(format!("{k}: no --disk-hook given"));
                    continue;
                };
                match b.check(&disk) {
                    Ok(()) => {
                        chosen = Some(b);
                        break;
                    }
                    Err(why) => reasons.push(format!("{k}: {why}")),
                }
            }
            match chosen {
                Some(b) => plan.disks.push((disk, b)),
                None => {
                    return Err(DiskError::Unsnapshottable {
                        domain: domain.to_string(),
                        vdev: disk.vdev,
                        path: disk.pdev_path,
                        reasons: reasons.join("; "),
                    })
                }
            }
        }
        Ok(plan)
    }

    /// Record `host` as the holder of the snapshots (tests that play several hosts).
    pub fn held_by(mut self, host: &str) -> DiskPlan {
        self.host = Some(host.to_string());
        self
    }

    /// The planned disks and their back-ends.
    pub fn disks(&self) -> impl Iterator<Item = (&DiskSpec, BackendKind)> {
        self.disks.iter().map(|(d, b)| (d, b.kind()))
    }

    /// Whether there is nothing to snapshot.
    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    /// Snapshot every disk (the domain is stopped) for layer `layer` of `chain`. On failure,
    /// the snapshots already taken are removed.
    pub fn snapshot_all(
        &self,
        domain: &str,
        chain: &str,
        layer: u64,
    ) -> Result<Vec<DiskSnapshot>, DiskError> {
        let mut taken = Vec::new();
        let host = self.host.clone().unwrap_or_else(this_host);
        for (disk, b) in &self.disks {
            let name = format!("xckpt-{chain}-{layer:06}-{}", disk.vdev);
            match b.snapshot(disk, &name) {
                Ok(snapshot) => taken.push(DiskSnapshot {
                    vdev: disk.vdev.clone(),
                    source: disk.pdev_path.clone(),
                    backend: b.kind(),
                    snapshot,
                    hook: b.script(),
                    host: (b.kind() != BackendKind::Hook).then(|| host.clone()),
                    format: Some(match b.kind() {
                        BackendKind::Qcow2 => "qcow2".to_string(),
                        BackendKind::Lvm => "raw".to_string(),
                        _ => disk.format.clone(),
                    }),
                }),
                Err(reason) => {
                    for (s, (_, b)) in taken.iter().zip(&self.disks) {
                        let _ = b.discard(s);
                    }
                    return Err(DiskError::Snapshot {
                        domain: domain.to_string(),
                        vdev: disk.vdev.clone(),
                        path: disk.pdev_path.clone(),
                        backend: b.kind(),
                        reason,
                    });
                }
            }
        }
        Ok(taken)
    }
}

/// Remove snapshots no layer will refer to (a failed checkpoint). Failures are reported on
/// stderr: the snapshot is then left behind, named after its chain and layer.
pub fn discard_all(snaps: Vec<DiskSnapshot>) {
    let opts = DiskOptions::default();
    for s in snaps {
        let gone = opts
            .backend_of(&s)
            .ok_or_else(|| "no hook script".to_string())
            .and_then(|b| b.discard(&s));
        if let Err(e) = gone {
            eprintln!(
                "xckpt: warning: could not remove disk snapshot {} of {} ({e}); remove it by hand",
                s.snapshot, s.vdev
            );
        }
    }
}

/// Writable clones of `snaps`, named `<tag>-<vdev>` (next to the snapshot), for a restore.
/// Returns vdev -> path for the domain config. On failure the clones made are left (they are
/// copies, named with `tag`) and nothing is restored.
pub fn clone_for_restore(
    snaps: &[DiskSnapshot],
    tag: &str,
    opts: &DiskOptions,
) -> Result<BTreeMap<String, String>, DiskError> {
    let mut paths = BTreeMap::new();
    for s in snaps {
        let err = |reason: String| DiskError::Clone {
            vdev: s.vdev.clone(),
            snapshot: s.snapshot.clone(),
            backend: s.backend,
            reason,
        };
        let b = opts
            .backend_of(s)
            .ok_or_else(|| err("no hook script recorded".into()))?;
        let path = b
            .clone_writable(s, &format!("{tag}-{}", s.vdev))
            .map_err(err)?;
        paths.insert(s.vdev.clone(), path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A back-end that accepts the disks whose path starts with its prefix.
    struct Fake(BackendKind, &'static str);

    impl Backend for Fake {
        fn kind(&self) -> BackendKind {
            self.0
        }
        fn check(&self, disk: &DiskSpec) -> Result<(), String> {
            if disk.pdev_path.starts_with(self.1) {
                Ok(())
            } else {
                Err(format!("not under {}", self.1))
            }
        }
        fn snapshot(&self, _disk: &DiskSpec, name: &str) -> Result<String, String> {
            Ok(name.to_string())
        }
        fn clone_writable(&self, _s: &DiskSnapshot, name: &str) -> Result<String, String> {
            Ok(name.to_string())
        }
        fn discard(&self, _s: &DiskSnapshot) -> Result<(), String> {
            Ok(())
        }
    }

    fn available(hook: bool) -> impl Fn(BackendKind) -> Option<Box<dyn Backend>> {
        move |k| {
            let prefix = match k {
                BackendKind::Qcow2 => "/qcow/",
                BackendKind::Lvm => "/dev/vg/",
                BackendKind::Reflink => "/xfs/",
                BackendKind::Hook if hook => "/",
                BackendKind::Hook => return None,
            };
            Some(Box::new(Fake(k, prefix)) as Box<dyn Backend>)
        }
    }

    fn disk(vdev: &str, path: &str) -> DiskSpec {
        DiskSpec {
            vdev: vdev.into(),
            pdev_path: path.into(),
            backend: "phy".into(),
            format: "raw".into(),
            domid: 1,
        }
    }

    fn chosen(plan: &DiskPlan) -> Vec<(String, BackendKind)> {
        plan.disks().map(|(d, k)| (d.vdev.clone(), k)).collect()
    }

    #[test]
    fn picks_the_first_back_end_that_can_snapshot_each_disk() {
        let disks = vec![
            disk("xvda", "/xfs/a.img"),
            disk("xvdb", "/dev/vg/b"),
            disk("xvdc", "/qcow/c.qcow2"),
        ];
        let plan = DiskPlan::choose("d", disks, &BTreeMap::new(), available(false)).unwrap();
        assert_eq!(
            chosen(&plan),
            [
                ("xvda".into(), BackendKind::Reflink),
                ("xvdb".into(), BackendKind::Lvm),
                ("xvdc".into(), BackendKind::Qcow2)
            ]
        );
    }

    #[test]
    fn an_override_forces_the_back_end_per_disk_or_for_all() {
        let disks = || vec![disk("xvda", "/xfs/a.img"), disk("xvdb", "/xfs/b.img")];
        let one = BTreeMap::from([("xvdb".to_string(), BackendKind::Hook)]);
        let plan = DiskPlan::choose("d", disks(), &one, available(true)).unwrap();
        assert_eq!(
            chosen(&plan),
            [
                ("xvda".into(), BackendKind::Reflink),
                ("xvdb".into(), BackendKind::Hook)
            ]
        );
        // A forced back-end that cannot do it is an error, even if another could.
        let all = BTreeMap::from([("*".to_string(), BackendKind::Lvm)]);
        let e = DiskPlan::choose("d", disks(), &all, available(true)).unwrap_err();
        assert!(e.to_string().contains("lvm: not under /dev/vg/"), "{e}");
        // The hook is only a candidate with a script.
        let e = DiskPlan::choose("d", disks(), &one, available(false)).unwrap_err();
        assert!(e.to_string().contains("hook: no --disk-hook given"), "{e}");
    }

    #[test]
    fn an_unsnapshottable_disk_is_refused_with_every_reason_and_what_to_do() {
        let disks = vec![disk("xvda", "/xfs/a.img"), disk("xvdb", "/tmp/b.img")];
        let e = DiskPlan::choose("dom1", disks, &BTreeMap::new(), available(false)).unwrap_err();
        let text = e.to_string();
        for part in [
            "domain dom1",
            "disk xvdb (/tmp/b.img)",
            "qcow2: not under",
            "lvm: not under",
            "reflink: not under",
            "no --disk-hook",
            "nothing was paused",
            "--no-disk",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
    }

    #[test]
    fn snapshots_are_named_after_chain_layer_and_vdev_and_parse_back() {
        let plan = DiskPlan::choose(
            "d",
            vec![disk("xvda", "/xfs/a.img")],
            &BTreeMap::new(),
            available(false),
        )
        .unwrap();
        let snaps = plan.snapshot_all("d", "web1", 7).unwrap();
        assert_eq!(snaps[0].snapshot, "xckpt-web1-000007-xvda");
        assert_eq!(snaps[0].backend, BackendKind::Reflink);
        let json = serde_json::to_string(&snaps[0]).unwrap();
        assert!(
            json.contains("\"backend\":\"reflink\"") && !json.contains("hook"),
            "{json}"
        );
        // Where it is and how qemu-nbd opens it, for a restore on another host.
        assert_eq!(snaps[0].host.as_deref(), Some(this_host().as_str()));
        assert_eq!(snaps[0].image_format(), "raw");
        // A record from before these fields reads back, its format from its back-end.
        let old: DiskSnapshot = serde_json::from_str(
            r#"{"vdev":"xvdb","source":"/q/b.qcow2","backend":"qcow2","snapshot":"/q/b.qcow2"}"#,
        )
        .unwrap();
        assert_eq!((old.host.as_deref(), old.image_format()), (None, "qcow2"));
        assert_eq!("qcow2".parse::<BackendKind>(), Ok(BackendKind::Qcow2));
        assert!("zfs".parse::<BackendKind>().is_err());
    }
}
