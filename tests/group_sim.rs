//! Group checkpoints on the simulated back-end: every member is captured at one instant (the
//! instant every member is stopped), a failure of one member resumes all of them and commits
//! nothing, and disks are snapshotted under the group stop.

mod sim_util;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use xckpt::backend::sim::{SimAgent, SimDomain, TruthMode};
use xckpt::capture::CaptureOptions;
use xckpt::disk::nbd::CopyState;
use xckpt::disk::{Backend, BackendKind, DiskPlan, DiskSnapshot, DiskSpec};
use xckpt::evict::{EvictOptions, GuestAgent};
use xckpt::group::copies::CopyRecord;
use xckpt::group::{
    checkpoint_group, BarrierError, Coordinator, GroupDir, GroupError, LocalCoordinator, Member,
    Phase,
};
use xckpt::hv::Domain;
use xckpt::layer::EvictPolicy;
use xckpt::store::Store;

fn member(name: &str, seed: u64) -> Arc<SimDomain> {
    sim_util::uniform_sim(2048, name, seed, 30.0, None)
}

fn opts() -> CaptureOptions {
    sim_util::small_capture_options()
}

/// At the `Stopped` barrier: checks every member is paused, and records each one's memory.
struct Recorder {
    doms: Vec<Arc<SimDomain>>,
    all_paused_at_stop: bool,
    phases: Vec<Phase>,
}

impl Coordinator for Recorder {
    fn barrier(&mut self, phase: Phase, ok: bool) -> Result<bool, BarrierError> {
        self.phases.push(phase);
        if phase == Phase::Stopped {
            self.all_paused_at_stop = self.doms.iter().all(|d| d.info().unwrap().paused);
            for d in &self.doms {
                d.record_truth("group-instant", TruthMode::Digest);
            }
        }
        Ok(ok)
    }
}

fn members(store: &Store, doms: &[Arc<SimDomain>]) -> Vec<Member<SimDomain>> {
    sim_util::group_members(store, doms)
}

#[test]
fn every_member_is_captured_at_the_one_group_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let doms = vec![member("a", 1), member("b", 2)];
    let ms = members(&store, &doms);
    for id in 1..=2 {
        let mut rec = Recorder {
            doms: doms.clone(),
            all_paused_at_stop: false,
            phases: Vec::new(),
        };
        let report = checkpoint_group("job", id, &ms, &opts(), &mut rec).unwrap();
        assert!(rec.all_paused_at_stop, "a member ran at the group instant");
        assert_eq!(
            rec.phases,
            [
                Phase::Converged,
                Phase::Stopped,
                Phase::Copied,
                Phase::Committed
            ]
        );
        assert_eq!(report.tag.id, id);
        for (m, d) in report.members.iter().zip(&doms) {
            // Each member's layer is its memory at the instant the group was stopped.
            let truth = d.truths().last().unwrap().clone();
            let chain = store.chain(&m.domain).unwrap();
            let restored =
                SimDomain::from_image(&chain.compose(Some(m.capture.layer.id)).unwrap()).unwrap();
            let bad = truth.differing(&restored.digests());
            assert!(bad.is_empty(), "{}: {} pages differ", m.domain, bad.len());
            // Both layers carry the same group tag, in the header and the manifest.
            let header = chain.open_layer(m.capture.layer.id).unwrap().meta().clone();
            assert_eq!(header.group.as_ref(), Some(&report.tag));
            assert_eq!(m.capture.layer.group.as_ref(), Some(&report.tag));
            assert!(!d.info().unwrap().paused, "{} left paused", m.domain);
        }
        let point = report.point();
        assert_eq!(point.members.len(), 2);
        assert_eq!(point.skew_us, report.skew.as_micros() as u64);
    }
}

#[test]
fn each_member_evicts_with_its_own_agent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let doms = vec![member("a", 5), member("b", 6)];
    let mut ms = members(&store, &doms);
    let with_agent = |agent: Option<SimAgent>| EvictOptions {
        set: "zero,unpopulated,free".parse().unwrap(),
        agent: agent.map(|a| Arc::new(a) as Arc<dyn GuestAgent>),
        ..Default::default()
    };
    ms[0].evict = with_agent(Some(SimAgent {
        free: vec![(1024, 512)],
        ..Default::default()
    }));
    ms[1].evict = with_agent(Some(SimAgent {
        silent: true,
        ..Default::default()
    }));
    let report = checkpoint_group("job", 1, &ms, &opts(), &mut LocalCoordinator).unwrap();
    let stats = |i: usize| report.members[i].capture.layer.stats.clone();
    // The workload writes some of a's reported pages after tracking was armed: those stay.
    let a_free = stats(0)
        .evicted
        .get(&EvictPolicy::Free)
        .copied()
        .unwrap_or(0);
    assert!(a_free > 0 && a_free <= 512, "a evicted {a_free} free pages");
    assert!(
        stats(1).evicted.is_empty(),
        "b has no agent: {:?}",
        stats(1).evicted
    );
    assert!(
        stats(1)
            .notes
            .iter()
            .any(|n| n.starts_with("free: skipped")),
        "{:?}",
        stats(1).notes
    );
}

/// Runs the xckpt binary; (exit code, stdout, stderr).
fn xckpt(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xckpt"))
        .args(args)
        .output()
        .expect("run xckpt");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn a_prune_that_drops_a_member_layer_breaks_that_group_point_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let doms = vec![member("a", 3), member("b", 4)];
    let ms = members(&store, &doms);
    let gdir = GroupDir::open(dir.path(), "job").unwrap();
    for id in 1..=2 {
        let report = checkpoint_group("job", id, &ms, &opts(), &mut LocalCoordinator).unwrap();
        gdir.record(report.point()).unwrap();
    }
    let root = dir.path().to_str().unwrap();
    let (rc, out, err) = xckpt(&["prune", "--store", root, "a", "--keep-last", "1"]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("group checkpoint job@1 can no longer be restored"),
        "{out}"
    );

    // Point 1 lost member a's layer; point 2 is whole.
    let m = gdir.manifest().unwrap();
    let missing = m.points[0].missing(&store).unwrap();
    assert_eq!(missing.len(), 1);
    assert_eq!((missing[0].chain.as_str(), missing[0].layer), ("a", 1));
    assert!(m.points[1].missing(&store).unwrap().is_empty());
    let (rc, out, _) = xckpt(&["list", "--store", root, "--group", "job"]);
    assert_eq!(rc, 0);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        rows[0].contains(" no ") && rows[0].contains("(gone: a@1)"),
        "{out}"
    );
    assert!(rows[1].contains(" yes "), "{out}");
    // A restore across hosts copying a disk: list shows how far it is, JSON too.
    let export = xckpt::disk::nbd::Export {
        host: "xhost1".into(),
        port: 10809,
        name: "b-xvda".into(),
    };
    let mut copy = CopyRecord::served("7.0", "b", "xvda", "xhost1", export);
    copy.to = Some("xhost2".into());
    copy.state = Some(CopyState::Copying {
        done: 64 << 20,
        len: 256 << 20,
    });
    gdir.write_copy(&mut copy).unwrap();
    let (_, out, _) = xckpt(&["list", "--store", root, "--group", "job"]);
    assert!(
        out.contains("disk xvda of b: xhost1 -> xhost2: copying 25% (64 of 256 MiB)"),
        "{out}"
    );
    let (_, out, _) = xckpt(&["list", "--store", root, "--group", "job", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["disk_copies"][0]["state"]["done"], 64 << 20);

    // Restoring the broken point is refused before anything is created (no Xen needed).
    let (rc, _, err) = xckpt(&["restore", "--store", root, "--group", "job@1"]);
    assert_ne!(rc, 0);
    assert!(
        err.contains("member a's layer 1 is no longer in its chain")
            && err.contains("Restorable checkpoints of job: 2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

fn assert_all_running_and_unchanged(store: &Store, doms: &[Arc<SimDomain>], layers: usize) {
    for d in doms {
        assert!(!d.info().unwrap().paused, "{} left paused", d.name());
        let open = d.faults().stop_sessions_open.load(Ordering::SeqCst);
        assert_eq!(open, 0, "{} kept its stop's session", d.name());
        let m = store.chain(&d.name()).unwrap().manifest().unwrap();
        assert_eq!(m.layers.len(), layers, "{} committed a layer", d.name());
    }
}

#[test]
fn a_failure_of_one_member_resumes_all_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let doms = vec![member("a", 1), member("b", 2)];
    let ms = members(&store, &doms);
    checkpoint_group("job", 1, &ms, &opts(), &mut LocalCoordinator).unwrap();

    // b's state cannot be saved under the stop: a was stopped too, and both resume.
    doms[1]
        .faults()
        .fail_save_state
        .store(true, Ordering::SeqCst);
    let e = checkpoint_group("job", 2, &ms, &opts(), &mut LocalCoordinator).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("domain b") && text.contains("save state"),
        "{text}"
    );
    assert!(matches!(e, GroupError::Failed { ref committed, .. } if committed.is_empty()));
    assert_all_running_and_unchanged(&store, &doms, 1);

    // b cannot be paused: a, already paused, is resumed.
    doms[1]
        .faults()
        .fail_save_state
        .store(false, Ordering::SeqCst);
    doms[1].faults().fail_pause.store(true, Ordering::SeqCst);
    let e = checkpoint_group("job", 2, &ms, &opts(), &mut LocalCoordinator).unwrap_err();
    assert!(e.to_string().contains("pause"), "{e}");
    assert_all_running_and_unchanged(&store, &doms, 1);

    // Another host's member failing at the stop barrier resumes this host's members.
    doms[1].faults().fail_pause.store(false, Ordering::SeqCst);
    struct RemoteFails;
    impl Coordinator for RemoteFails {
        fn barrier(&mut self, phase: Phase, ok: bool) -> Result<bool, BarrierError> {
            Ok(ok && phase != Phase::Stopped)
        }
    }
    let e = checkpoint_group("job", 2, &ms, &opts(), &mut RemoteFails).unwrap_err();
    assert!(e.to_string().contains("another host"), "{e}");
    assert_all_running_and_unchanged(&store, &doms, 1);

    // The next group checkpoint works, and stores what the failed ones fetched.
    let r = checkpoint_group("job", 2, &ms, &opts(), &mut LocalCoordinator).unwrap();
    assert_all_running_and_unchanged(&store, &doms, 2);
    assert_eq!(r.members.len(), 2);
}

#[test]
fn a_member_listed_twice_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = member("a", 1);
    let ms = members(&store, &[a.clone(), a.clone()]);
    let e = checkpoint_group("job", 1, &ms, &opts(), &mut LocalCoordinator).unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    assert_all_running_and_unchanged(&store, &[a], 0);
}

/// A disk back-end that records whether every member was paused when it snapshotted.
struct WitnessDisk {
    doms: Vec<Arc<SimDomain>>,
    seen_paused: Arc<Mutex<Vec<bool>>>,
    fail: bool,
    discarded: Arc<Mutex<Vec<String>>>,
}

impl Backend for WitnessDisk {
    fn kind(&self) -> BackendKind {
        BackendKind::Hook
    }
    fn check(&self, _disk: &DiskSpec) -> Result<(), String> {
        Ok(())
    }
    fn snapshot(&self, disk: &DiskSpec, name: &str) -> Result<String, String> {
        let all = self.doms.iter().all(|d| d.info().unwrap().paused);
        self.seen_paused.lock().unwrap().push(all);
        if self.fail && disk.vdev == "xvdb" {
            return Err("injected".into());
        }
        Ok(format!("snap:{name}"))
    }
    fn clone_writable(&self, _s: &DiskSnapshot, name: &str) -> Result<String, String> {
        Ok(name.into())
    }
    fn discard(&self, s: &DiskSnapshot) -> Result<(), String> {
        self.discarded.lock().unwrap().push(s.snapshot.clone());
        Ok(())
    }
}

fn disk_plan(name: &str, vdevs: &[&str], w: &WitnessDisk) -> DiskPlan {
    let specs = vdevs
        .iter()
        .map(|v| DiskSpec {
            vdev: v.to_string(),
            pdev_path: format!("/d/{name}-{v}.img"),
            backend: "phy".into(),
            format: "raw".into(),
            domid: 1,
        })
        .collect();
    let make = |_| {
        Some(Box::new(WitnessDisk {
            doms: w.doms.clone(),
            seen_paused: w.seen_paused.clone(),
            fail: w.fail,
            discarded: w.discarded.clone(),
        }) as Box<dyn Backend>)
    };
    DiskPlan::choose(name, specs, &BTreeMap::new(), make).unwrap()
}

#[test]
fn disks_are_snapshotted_while_every_member_is_stopped_and_recorded_in_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let doms = vec![member("a", 1), member("b", 2)];
    let w = WitnessDisk {
        doms: doms.clone(),
        seen_paused: Arc::new(Mutex::new(Vec::new())),
        fail: false,
        discarded: Arc::new(Mutex::new(Vec::new())),
    };
    let mut ms = members(&store, &doms);
    ms[0].disks = disk_plan("a", &["xvda"], &w);
    ms[1].disks = disk_plan("b", &["xvda", "xvdb"], &w);
    let r = checkpoint_group("job", 1, &ms, &opts(), &mut LocalCoordinator).unwrap();
    assert_eq!(*w.seen_paused.lock().unwrap(), vec![true; 3]);
    let b = &r.members[1];
    let header = store
        .chain("b")
        .unwrap()
        .open_layer(b.capture.layer.id)
        .unwrap()
        .meta()
        .clone();
    let names: Vec<_> = header.disks.iter().map(|d| d.snapshot.as_str()).collect();
    assert_eq!(
        names,
        ["snap:xckpt-b-000001-xvda", "snap:xckpt-b-000001-xvdb"]
    );
    assert_eq!(header.disks[1].source, "/d/b-xvdb.img");

    // A disk that fails under the stop: every member resumes, the snapshots taken are removed.
    let failing = WitnessDisk { fail: true, ..w };
    ms[1].disks = disk_plan("b", &["xvda", "xvdb"], &failing);
    let e = checkpoint_group("job", 2, &ms, &opts(), &mut LocalCoordinator).unwrap_err();
    assert!(
        e.to_string().contains("xvdb") && e.to_string().contains("injected"),
        "{e}"
    );
    assert_all_running_and_unchanged(&store, &doms, 1);
    assert!(failing
        .discarded
        .lock()
        .unwrap()
        .contains(&"snap:xckpt-b-000002-xvda".to_string()));
}

#[test]
fn a_single_checkpoint_snapshots_disks_under_its_pause_and_a_failed_one_resumes() {
    use xckpt::capture::{checkpoint_with, SoloStop};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = member("a", 1);
    let chain = store.chain("a").unwrap();
    let w = WitnessDisk {
        doms: vec![a.clone()],
        seen_paused: Arc::new(Mutex::new(Vec::new())),
        fail: false,
        discarded: Arc::new(Mutex::new(Vec::new())),
    };
    let mut stop = SoloStop::new(a.clone(), disk_plan("a", &["xvda"], &w));
    let r = checkpoint_with(&a, &chain, &opts(), &mut stop).unwrap();
    assert_eq!(*w.seen_paused.lock().unwrap(), [true]);
    assert_eq!(r.disks.len(), 1);
    assert!(r.layer.group.is_none());

    let failing = WitnessDisk { fail: true, ..w };
    let mut stop = SoloStop::new(a.clone(), disk_plan("a", &["xvda", "xvdb"], &failing));
    let e = checkpoint_with(&a, &chain, &opts(), &mut stop).unwrap_err();
    assert!(
        e.to_string().contains("disk xvdb") && e.to_string().contains("resumed"),
        "{e}"
    );
    assert_all_running_and_unchanged(&store, &[a], 1);
    assert_eq!(
        *failing.discarded.lock().unwrap(),
        ["snap:xckpt-a-000002-xvda".to_string()]
    );
}
