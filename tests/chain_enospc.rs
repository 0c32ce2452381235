//! A full disk (ENOSPC) during `checkpoint`, `merge`, `prune` and `compact_dead`, on a small
//! tmpfs made for the test: each failure is one clear error, the chain lists exactly the points
//! it listed before (each success exactly the points it must), every listed point restores
//! byte-equal in full, nothing is left behind, and once space is back the next checkpoint holds
//! every page dirtied since the last good layer. Needs root (to mount); skipped otherwise.

mod chain_util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chain_util::{assert_no_leftovers, lock_free, point, points, Point};
use xckpt::backend::sim::{SimConfig, SimDomain};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::hv::PAGE_SIZE;
use xckpt::store::{Chain, RetentionPolicy, Store};

/// A tmpfs of `size`, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        if euid != 0 {
            println!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "xckpt-enospc",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs failed");
        Some(SmallFs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }
    /// Take space until only `free` bytes are left.
    fn leave_free(&self, free: u64) {
        let _ = std::fs::remove_file(self.filler());
        let st = rustix::fs::statvfs(self.path()).unwrap();
        let avail = st.f_bavail * st.f_frsize;
        let take = avail.saturating_sub(free) as usize;
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        let mut left = take;
        while left > 0 {
            let n = left.min(chunk.len());
            if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
                break;
            }
            left -= n;
        }
    }
    fn free_all(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn opts() -> CaptureOptions {
    CaptureOptions {
        compress_level: 0,
        threads: 2,
        frame_pages: 16,
        ..Default::default()
    }
}

fn dirty_some(dom: &SimDomain, tag: u64) {
    let mut rng = fastrand::Rng::with_seed(tag);
    let mut page = vec![0u8; PAGE_SIZE];
    for _ in 0..30 {
        rng.fill(&mut page);
        let pfn = rng.u64(0..700);
        dom.write_page(pfn, &page).unwrap();
    }
}

/// After an operation: verifies deep, lists exactly the points `want`, each of them that was
/// listed before restores as before (a new one is the caller's to check), no leftovers.
fn check_intact(store: &Store, before: &BTreeMap<u64, Point>, want: &BTreeSet<u64>, what: &str) {
    let chain = store.chain("g").unwrap();
    assert_no_leftovers(&chain, what);
    chain
        .verify_deep(None)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let ids: BTreeSet<u64> = chain_util::ids(&chain).into_iter().collect();
    assert_eq!(
        &ids, want,
        "{what}: the chain lists other points than it must"
    );
    for (id, want) in before.iter().filter(|(id, _)| want.contains(id)) {
        assert!(point(&chain, *id) == *want, "{what}: point {id} changed");
    }
}

/// Point `id` of `chain` restores the domain's memory now, in full.
fn point_is_domain(chain: &Chain, id: u64, dom: &SimDomain, what: &str) {
    let restored = SimDomain::from_image(&chain.compose(Some(id)).unwrap()).unwrap();
    assert_eq!(restored.digests(), dom.digests(), "{what}: pages lost");
}

/// Space back: the next checkpoint restores the domain's memory exactly.
fn next_checkpoint_is_complete(fs: &SmallFs, dom: &Arc<SimDomain>, chain: &Chain, what: &str) {
    fs.free_all();
    let r = checkpoint(dom, chain, &opts()).unwrap_or_else(|e| panic!("{what}: {e}"));
    point_is_domain(chain, r.layer.id, dom, what);
}

fn prune_policy() -> RetentionPolicy {
    RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    }
}

#[test]
fn full_disk_during_checkpoint_merge_and_prune_loses_nothing() {
    let Some(fs) = SmallFs::mount("16m") else {
        return;
    };
    let store = Store::open(&fs.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    let dom = Arc::new(SimDomain::new(SimConfig::small(1024)).unwrap());
    checkpoint(&dom, &chain, &opts()).unwrap();
    let frees: [u64; 9] = [
        0,
        4 << 10,
        16 << 10,
        64 << 10,
        160 << 10,
        512 << 10,
        1 << 20,
        2 << 20,
        3 << 20,
    ];
    let mut failed = BTreeMap::<&str, usize>::new();
    for (i, &free) in frees.iter().enumerate() {
        for op in ["checkpoint", "merge", "prune", "compact"] {
            let what = format!("{op} with {free} bytes free");
            dirty_some(&dom, i as u64 * 10 + op.len() as u64);
            let before = points(&chain);
            let layers = chain.manifest().unwrap().layers;
            let newest = layers.last().unwrap().id;
            let all: BTreeSet<u64> = before.keys().copied().collect();
            // The points each operation must leave when it succeeds.
            let want: BTreeSet<u64> = match op {
                "checkpoint" => all.iter().copied().chain([newest + 1]).collect(),
                "merge" => [newest].into(),
                "prune" => prune_policy().select(&layers),
                _ => all.clone(),
            };
            fs.leave_free(free);
            let result: Result<(), String> = match op {
                "checkpoint" => checkpoint(&dom, &chain, &opts())
                    .map(drop)
                    .map_err(|e| e.to_string()),
                "merge" => {
                    let lock = lock_free(&chain);
                    chain
                        .merge(&lock, newest)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                "prune" => {
                    let lock = lock_free(&chain);
                    let keep = prune_policy().select(&chain.manifest().unwrap().layers);
                    chain
                        .retain(&lock, &keep, None)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                _ => {
                    // As a CLI checkpoint compacts its new layer (threshold 0: always runs).
                    let lock = lock_free(&chain);
                    chain
                        .compact_dead(&lock, newest, 0.0)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            };
            fs.free_all();
            match result {
                Err(msg) => {
                    assert!(msg.contains("No space left on device"), "{what}: {msg}");
                    assert_eq!(msg.lines().count(), 1, "{what}: {msg}");
                    *failed.entry(op).or_default() += 1;
                    check_intact(&store, &before, &all, &what);
                }
                Ok(()) => {
                    check_intact(&store, &before, &want, &format!("{what} (done)"));
                    if op == "checkpoint" {
                        point_is_domain(&chain, newest + 1, &dom, &what);
                    }
                }
            }
            next_checkpoint_is_complete(&fs, &dom, &chain, &what);
        }
    }
    println!("ENOSPC failures per operation: {failed:?}");
    for op in ["checkpoint", "merge", "prune", "compact"] {
        assert!(
            failed.get(op).copied().unwrap_or(0) >= 2,
            "{op} never hit the full disk: {failed:?}"
        );
    }
}
