//! Crash safety of `checkpoint` (with the compaction a CLI checkpoint runs after it), `merge`,
//! `prune` and `compact_dead`: a child process is killed at every failpoint it reaches (learned
//! from a traced run, `XCKPT_FAILPOINT_LOG`), and after each kill the chain still verifies
//! (deep), lists exactly the points it listed before the operation or exactly those it lists
//! after a good run of it (switching once, at a manifest rename), every listed point restores
//! byte-equal in full to what it restores in those runs, and the next checkpoint holds every
//! page dirtied since the last good layer.
//!
//! The hypervisor must outlive the killed process, as Xen does: the guest's memory and its
//! log-dirty bitmap live in files of the test directory. The child builds a sim from them, and
//! its CLEAN clears the bitmap file before returning the bits, so bits fetched by a run that is
//! then killed are gone, as on Xen.

mod chain_util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chain_util::{assert_no_leftovers, point, Point};
use xckpt::backend::sim::{SimConfig, SimDomain};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::hv::{DirtyLog, Pfn, PfnBitmap, PAGE_SIZE};
use xckpt::store::{Chain, RetentionPolicy, Store};

const PAGES: u64 = 2048;

fn opts() -> CaptureOptions {
    CaptureOptions {
        compress_level: 1,
        threads: 2,
        frame_pages: 64,
        ..Default::default()
    }
}

fn populated() -> Vec<Pfn> {
    SimConfig::small(PAGES)
        .populated
        .into_iter()
        .flatten()
        .collect()
}

/// The "hypervisor": guest memory and log-dirty bitmap in files of `dir`.
struct Hv {
    dir: PathBuf,
}

impl Hv {
    fn mem_path(&self) -> PathBuf {
        self.dir.join("guest.mem")
    }
    fn bits_path(&self) -> PathBuf {
        self.dir.join("hv-dirty.bits")
    }
    fn store(&self) -> Store {
        Store::open(&self.dir.join("store")).unwrap()
    }
    fn chain(&self) -> Chain {
        self.store().chain("g").unwrap()
    }
    /// A fresh hypervisor with the sim's initial memory and no dirty bits.
    fn create(dir: &Path) -> Hv {
        let hv = Hv {
            dir: dir.to_path_buf(),
        };
        let sim = SimDomain::new(SimConfig::small(PAGES)).unwrap();
        let mut mem = vec![0u8; PAGES as usize * PAGE_SIZE];
        for pfn in populated() {
            sim.read_page(pfn, &mut mem[pfn as usize * PAGE_SIZE..][..PAGE_SIZE])
                .unwrap();
        }
        std::fs::write(hv.mem_path(), mem).unwrap();
        hv.set_bits(&vec![0u8; PAGES as usize]);
        hv
    }
    fn memory(&self) -> Vec<u8> {
        std::fs::read(self.mem_path()).unwrap()
    }
    fn bits(&self) -> Vec<u8> {
        std::fs::read(self.bits_path()).unwrap()
    }
    fn set_bits(&self, bits: &[u8]) {
        let tmp = self.dir.join("hv-dirty.bits.tmp");
        std::fs::write(&tmp, bits).unwrap();
        std::fs::rename(tmp, self.bits_path()).unwrap();
    }
    /// The guest writes `count` pages (new content, tagged with `tag`); marks them dirty.
    fn guest_writes(&self, tag: u64, count: usize) {
        let mut mem = self.memory();
        let mut bits = self.bits();
        let pop = populated();
        let mut rng = fastrand::Rng::with_seed(tag);
        for _ in 0..count {
            let pfn = pop[rng.usize(..pop.len())] as usize;
            let page = &mut mem[pfn * PAGE_SIZE..][..PAGE_SIZE];
            rng.fill(&mut page[..64]);
            page[64..72].copy_from_slice(&tag.to_le_bytes());
            bits[pfn] = 1;
        }
        std::fs::write(self.mem_path(), mem).unwrap();
        self.set_bits(&bits);
    }
    /// A sim (the first of this process, so its identity is the same in every child) holding
    /// the memory, with log-dirty on and exactly the dirty bits of the files.
    fn domain(&self) -> Arc<SimDomain> {
        let sim = SimDomain::new(SimConfig::small(PAGES)).unwrap();
        let mem = self.memory();
        let write = |pfn: Pfn| {
            sim.write_page(pfn, &mem[pfn as usize * PAGE_SIZE..][..PAGE_SIZE])
                .unwrap()
        };
        populated().into_iter().for_each(write);
        sim.logdirty_enable().unwrap();
        let bits = self.bits();
        let mut clean = PfnBitmap::new();
        sim.logdirty_clean(&mut clean).unwrap();
        (0..PAGES)
            .filter(|&p| bits[p as usize] == 1)
            .for_each(write);
        // CLEAN clears the persisted bitmap, as Xen clears its own.
        let hv = Hv {
            dir: self.dir.clone(),
        };
        sim.faults()
            .after_clean(move || hv.set_bits(&vec![0u8; PAGES as usize]));
        Arc::new(sim)
    }
    /// Copy of the whole state (store included) into `to`.
    fn copy_to(&self, to: &Path) -> Hv {
        let st = Command::new("cp")
            .args(["-a", "--"])
            .arg(format!("{}/.", self.dir.display()))
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
        Hv {
            dir: to.to_path_buf(),
        }
    }
}

/// One operation run in a child process.
#[derive(Debug, Clone, Copy)]
enum Op {
    Checkpoint,
    /// What a CLI `xckpt checkpoint` runs: the capture, then `compact_dead` on the new layer
    /// (forced here with a threshold of 0, so that the rewrite always runs and is walked).
    CheckpointCompact,
    /// `compact_dead` of layer N alone, as `merge` and `prune` use it.
    Compact(u64),
    Merge(u64),
    PruneKeepLast(u32),
    Retain(&'static [u64]),
}

impl Op {
    fn arg(self) -> String {
        match self {
            Op::Checkpoint => "checkpoint".into(),
            Op::CheckpointCompact => "checkpoint-compact".into(),
            Op::Compact(n) => format!("compact:{n}"),
            Op::Merge(n) => format!("merge:{n}"),
            Op::PruneKeepLast(n) => format!("prune:{n}"),
            Op::Retain(ids) => format!(
                "retain:{}",
                ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            ),
        }
    }
}

/// Helper run in a child process: the operation `XCKPT_CRASH_OP` on the state in
/// `XCKPT_CRASH_DIR`. Does nothing when run normally.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(op)) = (
        std::env::var("XCKPT_CRASH_DIR"),
        std::env::var("XCKPT_CRASH_OP"),
    ) else {
        return;
    };
    let hv = Hv {
        dir: PathBuf::from(dir),
    };
    let chain = hv.chain();
    let lock = chain.lock_exclusive(Duration::from_secs(10)).unwrap();
    let (verb, arg) = op.split_once(':').unwrap_or((&op, ""));
    match verb {
        "checkpoint" => {
            checkpoint(&hv.domain(), &chain, &opts()).unwrap();
        }
        "checkpoint-compact" => {
            let report = checkpoint(&hv.domain(), &chain, &opts()).unwrap();
            let done = chain.compact_dead(&lock, report.layer.id, 0.0).unwrap();
            assert!(done.is_some(), "the compaction did not run");
        }
        "compact" => {
            let done = chain
                .compact_dead(&lock, arg.parse().unwrap(), 0.0)
                .unwrap();
            assert!(done.is_some(), "the compaction did not run");
        }
        "merge" => {
            chain.merge(&lock, arg.parse().unwrap()).unwrap();
        }
        "prune" => {
            let policy = RetentionPolicy {
                keep_last: Some(arg.parse().unwrap()),
                ..Default::default()
            };
            let keep = policy.select(&chain.manifest().unwrap().layers);
            chain.retain(&lock, &keep, None).unwrap();
        }
        "retain" => {
            let keep = arg.split(',').map(|s| s.parse().unwrap()).collect();
            chain.retain(&lock, &keep, None).unwrap();
        }
        _ => panic!("unknown op {op}"),
    }
    std::process::exit(0);
}

/// Run `op` in a child on `hv`, killed at `failpoint` if given, tracing to `log` if given.
fn run_child(hv: &Hv, op: Op, failpoint: Option<&str>, log: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("XCKPT_CRASH_DIR", &hv.dir)
        .env("XCKPT_CRASH_OP", op.arg())
        .env_remove("XCKPT_FAILPOINT")
        .env_remove("XCKPT_FAILPOINT_LOG");
    if let Some(f) = failpoint {
        cmd.env("XCKPT_FAILPOINT", f);
    }
    if let Some(l) = log {
        cmd.env("XCKPT_FAILPOINT_LOG", l);
    }
    cmd.output().unwrap()
}

fn good(hv: &Hv, op: Op) {
    let out = run_child(hv, op, None, None);
    assert!(
        out.status.success(),
        "{op:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The failpoints `op` reaches on (a copy of) `hv`, as `name:N` in the order reached, and every
/// point of the chain after that good run.
fn trace(hv: &Hv, op: Op) -> (Vec<String>, BTreeMap<u64, Point>) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = hv.copy_to(tmp.path());
    let log = tmp.path().join("failpoints.log");
    let out = run_child(&copy, op, None, Some(&log));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let fps = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|name| {
            let n = seen.entry(name.to_string()).or_default();
            *n += 1;
            format!("{name}:{n}")
        })
        .collect();
    (fps, points(&copy.chain()))
}

fn points(chain: &Chain) -> BTreeMap<u64, Point> {
    chain_util::points(chain)
}

/// After a crash: no leftovers, the chain verifies (deep), and it lists exactly the points of
/// `before` or exactly those of `after`, each restoring in full to what it restores there.
/// Returns whether the chain is in the `after` state (and that differs from `before`).
fn check_after_crash(
    hv: &Hv,
    before: &BTreeMap<u64, Point>,
    after: &BTreeMap<u64, Point>,
    what: &str,
) -> bool {
    let chain = hv.chain(); // opening removes the leftovers of the killed writer
    assert_no_leftovers(&chain, what);
    let ids = chain_util::ids(&chain);
    let was = |m: &BTreeMap<u64, Point>| m.keys().copied().collect::<Vec<u64>>();
    let state = if ids == was(before) {
        before
    } else if ids == was(after) {
        after
    } else {
        panic!(
            "{what}: the chain lists points {ids:?}, neither those before ({:?}) nor after ({:?})",
            was(before),
            was(after)
        )
    };
    if !ids.is_empty() {
        chain
            .verify_deep(None)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    for (id, want) in state {
        assert!(point(&chain, *id) == *want, "{what}: point {id} changed");
    }
    ids != was(before)
}

/// The newest point restores exactly the guest's memory now.
fn assert_newest_is_guest_memory(hv: &Hv, what: &str) {
    let chain = hv.chain();
    let id = chain.manifest().unwrap().last().unwrap().id;
    let got = point(&chain, id);
    let mem = hv.memory();
    if let Some(pfn) = got
        .memory
        .chunks(PAGE_SIZE)
        .zip(mem.chunks(PAGE_SIZE))
        .position(|(a, b)| a != b)
    {
        panic!("{what}: point {id} misses the write to pfn {pfn:#x}");
    }
}

/// Kill `op` at every point it reaches, starting each time from a copy of `template`.
/// Returns the number of points walked.
fn walk(template: &Hv, op: Op, tag: u64) -> usize {
    // Few pages, so that the capture's spot check (64 sampled pages) rarely sees them: the
    // run's own bookkeeping must keep them.
    template.guest_writes(tag, 3);
    let before = points(&template.chain());
    let (points_walked, after) = trace(template, op);
    assert!(!points_walked.is_empty(), "{op:?} reached no failpoint");
    // A good run changes no point it keeps.
    for (id, want) in &before {
        if let Some(got) = after.get(id) {
            assert!(got == want, "{op:?}: a good run changed point {id}");
        }
    }
    // The capture's own points are walked by `Op::Checkpoint`: after it, only those of what
    // follows (the compaction, which lists the same points as the capture left).
    let skip = match op {
        Op::CheckpointCompact => {
            let (capture, _) = trace(template, Op::Checkpoint);
            // The same points, though the writer threads may reach them in another order.
            let sorted = |v: &[String]| {
                let mut v = v.to_vec();
                v.sort();
                v
            };
            assert_eq!(
                sorted(&points_walked[..capture.len()]),
                sorted(&capture),
                "{op:?}: the capture's points differ"
            );
            capture.len()
        }
        _ => 0,
    };
    let mut switched_at: Option<&str> = (skip > 0).then_some("the capture's commit");
    for (k, fp) in points_walked.iter().enumerate().skip(skip) {
        let what = format!("{op:?} killed at {fp}");
        let tmp = tempfile::tempdir().unwrap();
        let hv = template.copy_to(tmp.path());
        let out = run_child(&hv, op, Some(fp), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = fp.split(':').next().unwrap();
        assert!(
            !out.status.success() && stderr.contains(&format!("failpoint {name}")),
            "{what}: the child was not killed there: {stderr}"
        );
        // The list changes once, at the manifest rename that commits the operation, and
        // never goes back.
        let is_after = check_after_crash(&hv, &before, &after, &what);
        match (switched_at, is_after) {
            (None, true) => {
                assert!(
                    fp.starts_with("manifest.rename.after:"),
                    "{what}: the chain changed at {fp}, not at a manifest rename"
                );
                switched_at = Some(fp);
            }
            (Some(at), false) => panic!("{what}: the chain went back to its points before {at}"),
            _ => {}
        }
        // The next checkpoint holds every page dirtied since the last good layer.
        hv.guest_writes(tag * 1000 + k as u64, 10);
        good(&hv, Op::Checkpoint);
        assert_newest_is_guest_memory(&hv, &what);
        hv.chain().verify_deep(None).unwrap();
    }
    if before.keys().ne(after.keys()) {
        assert!(
            switched_at.is_some(),
            "{op:?}: no kill saw the chain after it"
        );
    }
    println!(
        "{op:?}: walked {} failpoints, the chain switched at {switched_at:?}",
        points_walked.len() - skip
    );
    points_walked.len() - skip
}

/// A state with a base and `incrementals` incrementals, each after some guest writes.
fn template(dir: &Path, incrementals: u64) -> Hv {
    let hv = Hv::create(dir);
    good(&hv, Op::Checkpoint);
    for i in 0..incrementals {
        hv.guest_writes(100 + i, 15);
        good(&hv, Op::Checkpoint);
    }
    hv
}

#[test]
fn checkpoint_killed_at_every_write_point() {
    let dir = tempfile::tempdir().unwrap();
    // A base (from nothing), then an incremental.
    let fresh = Hv::create(dir.path());
    let base_points = walk(&fresh, Op::Checkpoint, 1);
    let dir2 = tempfile::tempdir().unwrap();
    let with_base = template(dir2.path(), 1);
    let inc_points = walk(&with_base, Op::Checkpoint, 2);
    println!("checkpoint: walked {base_points} base + {inc_points} incremental failpoints");
    assert!(base_points > 10 && inc_points > 10);
}

/// Everything a CLI checkpoint runs after the capture (today the compaction of the new
/// layer), killed at every point after the capture's own, from a base and from an incremental.
#[test]
fn checkpoint_then_compaction_killed_at_every_write_point() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Hv::create(dir.path());
    let base_points = walk(&fresh, Op::CheckpointCompact, 11);
    let dir2 = tempfile::tempdir().unwrap();
    let with_base = template(dir2.path(), 1);
    let inc_points = walk(&with_base, Op::CheckpointCompact, 12);
    println!("checkpoint+compact: walked {base_points} base + {inc_points} incremental failpoints");
    assert!(base_points > 5 && inc_points > 5);
}

#[test]
fn merge_and_prune_killed_at_every_write_point() {
    let dir = tempfile::tempdir().unwrap();
    let t = template(dir.path(), 4);
    let mut total = 0;
    for op in [
        Op::Merge(3),
        Op::Merge(1),
        Op::PruneKeepLast(2),
        Op::Retain(&[2, 4, 5]),
        Op::Compact(4),
    ] {
        total += walk(&t, op, 3 + total as u64);
        t.guest_writes(7 + total as u64, 5);
    }
    println!("merge/prune: walked {total} failpoints");
}
