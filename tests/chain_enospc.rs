//! A full disk (ENOSPC) during `checkpoint`, `merge` and `prune`, on a small tmpfs made for the
//! test: each failure is one clear error, the chain still verifies, every kept point restores
//! byte-equal, nothing is left behind, and once space is back the next checkpoint holds every
//! page dirtied since the last good layer. Needs root (to mount); skipped otherwise.

mod chain_util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chain_util::{assert_kept_points_equal, assert_no_leftovers, lock_free, points, Point};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::hv::sim::{SimConfig, SimDomain};
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

/// After a failed operation: verifies deep, kept points equal, no leftovers.
fn check_intact(store: &Store, before: &BTreeMap<u64, Point>, what: &str) {
    let chain = store.chain("g").unwrap();
    assert_no_leftovers(&chain, what);
    chain
        .verify_deep(None)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_kept_points_equal(&chain, before, what);
}

/// Space back: the next checkpoint restores the domain's memory exactly.
fn next_checkpoint_is_complete(fs: &SmallFs, dom: &Arc<SimDomain>, chain: &Chain, what: &str) {
    fs.free_all();
    checkpoint(dom, chain, &opts()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let restored = SimDomain::from_image(&chain.compose(None).unwrap()).unwrap();
    assert_eq!(restored.digests(), dom.digests(), "{what}: pages lost");
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
        for op in ["checkpoint", "merge", "prune"] {
            let what = format!("{op} with {free} bytes free");
            dirty_some(&dom, i as u64 * 10 + op.len() as u64);
            let before = points(&chain);
            let newest = chain.manifest().unwrap().last().unwrap().id;
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
                _ => {
                    let lock = lock_free(&chain);
                    let keep = RetentionPolicy {
                        keep_last: Some(2),
                        ..Default::default()
                    }
                    .select(&chain.manifest().unwrap().layers);
                    chain
                        .retain(&lock, &keep, None)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            };
            if let Err(msg) = result {
                assert!(msg.contains("No space left on device"), "{what}: {msg}");
                assert_eq!(msg.lines().count(), 1, "{what}: {msg}");
                *failed.entry(op).or_default() += 1;
                fs.free_all();
                check_intact(&store, &before, &what);
            }
            next_checkpoint_is_complete(&fs, &dom, &chain, &what);
        }
    }
    println!("ENOSPC failures per operation: {failed:?}");
    for op in ["checkpoint", "merge", "prune"] {
        assert!(
            failed.get(op).copied().unwrap_or(0) >= 2,
            "{op} never hit the full disk: {failed:?}"
        );
    }
}
