//! Disks that follow their domain to another host at a group restore (docs/design-group.md
//! "Storage"):
//!
//! ```text
//! every host   serve_for_others: each snapshot it holds of a member restored elsewhere,
//!              served read-only; a copy record per disk in the shared store   barrier(Served)
//!              member_disks: local snapshots cloned as on one host; a remote one gets a
//!              local overlay backed by its export; the domain is made paused  barrier(Restored)
//!              unpaused: the domains run, reading missing blocks on demand
//!              copy_all: each overlay's device model copies the rest; the records
//!              follow its progress until every disk is local                 barrier(DisksLocal)
//!              release: each server stops once no client reads it any more
//! ```
//!
//! [`Mover`] does the work: [`Nbd`] with stock `qemu-nbd`, `qemu-img` and QMP, fakes in tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{KeyOf, RestoreError};
use crate::disk::nbd::{create_overlay, CopyState, DiskCopy, Export, Server};
use crate::disk::{clone_for_restore, this_host, DiskOptions, DiskSnapshot};
use crate::group::copies::CopyRecord;
use crate::group::{GroupDir, GroupPoint};
use crate::libxl::qmp;
use crate::store::Store;

/// Serves, fetches and copies disks between hosts.
pub trait Mover: Sync {
    /// This host's name, as snapshots record it.
    fn host(&self) -> String;
    /// Serve `snap` read-only as export `name`.
    fn serve(&self, snap: &DiskSnapshot, name: &str) -> Result<Box<dyn Serving>, String>;
    /// A local overlay backed by `export`, for `chain`'s `vdev`; returns its path.
    fn overlay(&self, export: &Export, chain: &str, vdev: &str) -> Result<String, String>;
    /// Start copying `overlay` into itself in the device model of running domain `domain`.
    fn copy(&self, domain: &str, overlay: &str, vdev: &str) -> Result<Box<dyn Copying>, String>;
}

/// A served snapshot.
pub trait Serving: Send {
    /// Its export.
    fn export(&self) -> &Export;
    /// Clients connected now.
    fn clients(&self) -> usize;
}

/// A running copy.
pub trait Copying: Send {
    /// Where it stands.
    fn progress(&self) -> Result<CopyState, String>;
}

impl Serving for Server {
    fn export(&self) -> &Export {
        Server::export(self)
    }
    fn clients(&self) -> usize {
        Server::clients(self)
    }
}

impl Copying for DiskCopy {
    fn progress(&self) -> Result<CopyState, String> {
        DiskCopy::progress(self)
    }
}

/// The real [`Mover`]: `qemu-nbd`, `qemu-img`, and QMP `block-stream` in the domain's device
/// model.
#[derive(Debug, Clone)]
pub struct Nbd {
    /// Where local overlays go (created 0700).
    pub overlay_dir: PathBuf,
    /// libxl's QMP socket directory.
    pub qmp_dir: PathBuf,
    /// A bound on each copy's rate, bytes per second.
    pub rate: Option<u64>,
    /// Time limit of starting a server or creating an overlay.
    pub limit: Duration,
}

impl Default for Nbd {
    fn default() -> Self {
        Nbd {
            overlay_dir: PathBuf::from("/var/lib/xckpt/disks"),
            qmp_dir: DiskOptions::default().qmp_dir,
            rate: None,
            limit: Duration::from_secs(30),
        }
    }
}

impl Mover for Nbd {
    fn host(&self) -> String {
        this_host()
    }

    fn serve(&self, snap: &DiskSnapshot, name: &str) -> Result<Box<dyn Serving>, String> {
        let format = snap.image_format();
        Server::start(
            &snap.snapshot,
            format,
            "0.0.0.0",
            &self.host(),
            name,
            self.limit,
        )
        .map(|s| Box::new(s) as Box<dyn Serving>)
    }

    fn overlay(&self, export: &Export, chain: &str, vdev: &str) -> Result<String, String> {
        crate::store::ensure_private_dir(&self.overlay_dir).map_err(|e| e.to_string())?;
        let path = self
            .overlay_dir
            .join(format!("{chain}-{vdev}-{}.qcow2", crate::store::unix_ms()));
        create_overlay(export, &path, self.limit)?;
        Ok(path.display().to_string())
    }

    fn copy(&self, domain: &str, overlay: &str, vdev: &str) -> Result<Box<dyn Copying>, String> {
        // The domain was just restored under its name; its QMP socket is named by its id.
        let domid = crate::backend::xen::domid_of(domain).map_err(|e| e.to_string())?;
        let copy = DiskCopy {
            qmp: qmp::socket_path(&self.qmp_dir, domid),
            overlay: overlay.to_string(),
            job: format!("xckpt-copy-{vdev}"),
            rate: self.rate,
        };
        copy.start()?;
        Ok(Box::new(copy))
    }
}

/// Where the disks of a group restore across hosts come from.
pub struct Fetch<'a> {
    /// This restore (the job step), named in its copy records.
    pub restore: &'a str,
    /// The group (its copy records).
    pub gdir: &'a GroupDir,
    /// The mover.
    pub mover: &'a dyn Mover,
}

fn fetch_error(chain: &str, vdev: &str, reason: impl Into<String>) -> RestoreError {
    RestoreError::DiskFetch {
        chain: chain.to_string(),
        vdev: vdev.to_string(),
        reason: reason.into(),
    }
}

/// The disk snapshots of `chain`'s layer `layer`.
pub fn snapshots_of(
    store: &Store,
    chain: &str,
    layer: u64,
    key_of: &mut KeyOf<'_>,
) -> Result<Vec<DiskSnapshot>, RestoreError> {
    let key = key_of(chain).map_err(|source| RestoreError::Key {
        chain: chain.to_string(),
        source,
    })?;
    let reader = store.chain(chain)?.with_key(key).open_layer(layer)?;
    Ok(reader.meta().disks.clone())
}

/// Whether `snap` is held by another host than `here` (a `hook` snapshot, or one from before
/// snapshots named their host, is reachable from every host).
fn elsewhere(snap: &DiskSnapshot, here: &str) -> bool {
    snap.host.as_deref().is_some_and(|h| h != here)
}

/// Serve every snapshot this host holds of the members of `point` restored on other hosts
/// (those not in `mine`), each with its copy record.
pub fn serve_for_others(
    store: &Store,
    point: &GroupPoint,
    mine: &[String],
    key_of: &mut KeyOf<'_>,
    fetch: &Fetch<'_>,
) -> Result<Vec<Box<dyn Serving>>, RestoreError> {
    let here = fetch.mover.host();
    let mut servers = Vec::new();
    for m in point.members.iter().filter(|m| !mine.contains(&m.chain)) {
        for s in snapshots_of(store, &m.chain, m.layer, key_of)? {
            if s.host.as_deref() != Some(here.as_str()) {
                continue;
            }
            let server = fetch
                .mover
                .serve(&s, &format!("{}-{}", m.chain, s.vdev))
                .map_err(|e| fetch_error(&m.chain, &s.vdev, e))?;
            let mut record = CopyRecord::served(
                fetch.restore,
                &m.chain,
                &s.vdev,
                &here,
                server.export().clone(),
            );
            fetch.gdir.write_copy(&mut record)?;
            servers.push(server);
        }
    }
    Ok(servers)
}

/// The disks of a member restored here: vdev -> path for its config, and the vdevs that are
/// overlays of a disk on another host. Local snapshots are cloned; a remote one is fetched
/// through its export (`fetch`), or refused without one.
pub fn member_disks(
    snaps: &[DiskSnapshot],
    chain: &str,
    fetch: Option<&Fetch<'_>>,
) -> Result<(BTreeMap<String, String>, BTreeSet<String>), RestoreError> {
    let here = fetch.map_or_else(this_host, |f| f.mover.host());
    let (remote, local): (Vec<DiskSnapshot>, Vec<DiskSnapshot>) =
        snaps.iter().cloned().partition(|s| elsewhere(s, &here));
    let mut overlays = BTreeSet::new();
    let mut paths = BTreeMap::new();
    for s in &remote {
        let holder = s.host.as_deref().unwrap_or("?");
        let Some(f) = fetch else {
            return Err(fetch_error(
                chain,
                &s.vdev,
                format!(
                    "its snapshot {} is on host {holder}, not on this host ({here}): restore it \
                     there, or restore the group across hosts with --slurm with a task on \
                     {holder}, which then serves it",
                    s.snapshot
                ),
            ));
        };
        let record = f.gdir.copy(chain, &s.vdev)?;
        // A record of an earlier restore names an export that is gone.
        let Some(mut record) = record.filter(|r| r.restore == f.restore && r.from == holder) else {
            return Err(fetch_error(
                chain,
                &s.vdev,
                format!(
                    "its snapshot is on host {holder}, which serves it to no host of this \
                     restore: run the restore with a task on {holder}"
                ),
            ));
        };
        let path = f
            .mover
            .overlay(&record.export, chain, &s.vdev)
            .map_err(|e| fetch_error(chain, &s.vdev, e))?;
        record.to = Some(here.clone());
        f.gdir.write_copy(&mut record)?;
        paths.insert(s.vdev.clone(), path);
        overlays.insert(s.vdev.clone());
    }
    let tag = format!("restore-{}", crate::store::unix_ms());
    let clones = clone_for_restore(&local, &tag, &DiskOptions::default()).map_err(|source| {
        RestoreError::Disks {
            chain: chain.to_string(),
            source: Box::new(source),
        }
    })?;
    paths.extend(clones);
    Ok((paths, overlays))
}

/// One overlay of a running domain.
pub struct Overlay {
    /// The domain (and chain).
    pub domain: String,
    /// The guest device.
    pub vdev: String,
    /// The overlay's path.
    pub path: String,
}

/// Copy every overlay of this host's restored domains until each is local or failed, keeping
/// their records up to date (about once a second). Returns the final records; `Err` names the
/// first failure (the domain still runs, reading the source for what was not copied).
pub fn copy_all(overlays: &[Overlay], fetch: &Fetch<'_>) -> (Vec<CopyRecord>, Option<String>) {
    let mut running = Vec::new();
    let mut records = Vec::new();
    let mut failure = None;
    for o in overlays {
        let Ok(Some(mut record)) = fetch.gdir.copy(&o.domain, &o.vdev) else {
            failure.get_or_insert(format!(
                "disk {} of {}: its copy record is gone",
                o.vdev, o.domain
            ));
            continue;
        };
        record.since_unix_ms = crate::store::unix_ms();
        match fetch.mover.copy(&o.domain, &o.path, &o.vdev) {
            Ok(c) => {
                record.state = Some(CopyState::Copying { done: 0, len: 0 });
                running.push((c, records.len()));
            }
            Err(e) => {
                record.state = Some(CopyState::Failed { why: e.clone() });
                failure.get_or_insert(format!("disk {} of {}: {e}", o.vdev, o.domain));
            }
        }
        let _ = fetch.gdir.write_copy(&mut record);
        records.push(record);
    }
    // Each running copy updates its own record (by index) until it is no longer copying.
    while !running.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        running.retain(|(c, i)| {
            let record = &mut records[*i];
            let state = c.progress().unwrap_or_else(|why| CopyState::Failed { why });
            let done = !matches!(state, CopyState::Copying { .. });
            if let CopyState::Failed { why } = &state {
                failure.get_or_insert(format!("disk {} of {}: {why}", record.vdev, record.chain));
            }
            record.state = Some(state);
            let _ = fetch.gdir.write_copy(record);
            !done
        });
    }
    (records, failure)
}

/// Stop serving: each server once no client reads it any more (a domain whose copy failed
/// still does, and keeps its source). Says so on stderr while it waits.
pub fn release(servers: Vec<Box<dyn Serving>>, poll: Duration) {
    let mut told: Option<Instant> = None;
    for s in servers {
        while s.clients() > 0 {
            if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                eprintln!(
                    "xckpt: still serving {} to {} client(s): a restored domain reads it; not \
                     stopping until it is done",
                    s.export().uri(),
                    s.clients()
                );
                told = Some(Instant::now());
            }
            std::thread::sleep(poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::BackendKind;

    fn snap(vdev: &str, host: Option<&str>) -> DiskSnapshot {
        DiskSnapshot {
            vdev: vdev.into(),
            source: format!("/d/{vdev}.img"),
            backend: BackendKind::Reflink,
            snapshot: format!("/d/{vdev}.snap"),
            hook: None,
            host: host.map(str::to_string),
            format: Some("raw".into()),
        }
    }

    /// A server whose last client leaves after a few polls.
    struct Leaving(Export, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Serving for Leaving {
        fn export(&self) -> &Export {
            &self.0
        }
        fn clients(&self) -> usize {
            use std::sync::atomic::Ordering::SeqCst;
            let left = self.1.load(SeqCst);
            self.1.store(left.saturating_sub(1), SeqCst);
            usize::from(left > 0)
        }
    }

    #[test]
    fn a_server_stops_only_once_no_client_reads_it() {
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(3));
        let export = Export {
            host: "h".into(),
            port: 1,
            name: "a-xvda".into(),
        };
        release(
            vec![Box::new(Leaving(export, polls.clone()))],
            Duration::from_millis(1),
        );
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_snapshot_on_another_host_is_refused_without_a_source_and_says_where() {
        let here = this_host();
        assert!(!elsewhere(&snap("a", None), &here));
        assert!(!elsewhere(&snap("a", Some(&here)), &here));
        assert!(elsewhere(&snap("a", Some("far-away")), &here));
        let e = member_disks(&[snap("xvda", Some("far-away"))], "web", None)
            .unwrap_err()
            .to_string();
        for part in ["disk xvda of web", "on host far-away", "--slurm"] {
            assert!(e.contains(part), "{part:?} missing from: {e}");
        }
    }
}
