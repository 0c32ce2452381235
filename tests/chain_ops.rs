//! merge and prune on chains captured from the simulated domain: every kept point restores
//! byte-identical, merged layers hold one copy of each page, the retention policy picks the
//! right points, and one writer per chain (two processes).

mod chain_util;
mod layer_util;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain_util::{assert_kept_points_equal, assert_no_leftovers, lock_free, points};
use layer_util::{config, fill, meta, state, Put};
use xckpt::backend::sim::{AccessPattern, SimConfig, SimDomain, WorkloadSpec};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::layer::LayerKind;
use xckpt::store::{Chain, RetentionPolicy, RewriteError, Store};

fn opts() -> CaptureOptions {
    CaptureOptions {
        compress_level: 1,
        threads: 2,
        frame_pages: 16,
        ..Default::default()
    }
}

/// A sim with a running workload, so live rounds re-send pages (dead slots in the layers).
fn busy_sim() -> Arc<SimDomain> {
    let mut cfg = SimConfig::small(2048);
    cfg.workload = WorkloadSpec {
        pattern: AccessPattern::HotSet {
            hot_fraction: 0.1,
            hot_probability: 0.9,
        },
        rate_mib_s: 40.0,
    };
    Arc::new(SimDomain::new(cfg).unwrap())
}

/// A base and `incrementals` incrementals taken while the workload runs.
fn captured_chain(store: &Store, incrementals: usize) -> (Chain, Arc<SimDomain>) {
    let chain = store.chain("g").unwrap();
    let dom = busy_sim();
    dom.start_workload().unwrap();
    for _ in 0..=incrementals {
        checkpoint(&dom, &chain, &opts()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    dom.stop_workload();
    (chain, dom)
}

fn ids(chain: &Chain) -> Vec<u64> {
    chain
        .manifest()
        .unwrap()
        .layers
        .iter()
        .map(|r| r.id)
        .collect()
}

#[test]
fn merge_squashes_into_one_compact_base_and_every_remaining_point_is_byte_identical() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (chain, _dom) = captured_chain(&store, 6);
    let before = points(&chain);
    let slots_before: u64 = (1..=4)
        .map(|id| chain.open_layer(id).unwrap().slot_count())
        .sum();
    let dead_before: u64 = (1..=7)
        .map(|id| chain.open_layer(id).unwrap().figures().dead_slots)
        .sum();
    assert!(
        dead_before > 0,
        "the workload re-sent no page: no dead slots to drop"
    );
    let old4 = chain.manifest().unwrap().layers[3].clone();
    let lock = lock_free(&chain);
    let report = chain.merge(&lock, 4).unwrap();
    drop(lock);
    assert_eq!(report.dropped, [1, 2, 3]);
    assert_eq!(report.rewritten.len(), 1);
    assert_eq!(ids(&chain), [4, 5, 6, 7]);
    assert_eq!(
        assert_kept_points_equal(&chain, &before, "merge --upto 4"),
        4
    );
    let base = chain.open_layer(4).unwrap();
    let f = base.figures();
    assert_eq!(base.meta().kind, LayerKind::Base);
    assert_eq!(base.meta().parent, None);
    assert_eq!(
        f.dead_slots, 0,
        "the merged base holds one copy of each page"
    );
    assert!(f.slots < slots_before, "{} !< {slots_before}", f.slots);
    // Header, vCPU state and config of layer 4 carried over.
    let m = chain.manifest().unwrap();
    assert_eq!(m.layers[0].file, "layer-000004.r1.xcl");
    assert_eq!(base.meta().created_unix_ms, old4.created_unix_ms);
    assert_eq!(m.layers[0].stats.downtime_us, old4.stats.downtime_us);
    let report = chain.verify_deep(None).unwrap();
    assert_eq!(report.points.len(), 4);
    assert_eq!(report.path, [4, 5, 6, 7]);
    let reopened = store.chain("g").unwrap();
    assert_no_leftovers(&reopened, "after merge");
    // The chain goes on: the tracking state still points at the newest layer.
    assert_eq!(m.tracking.as_ref().unwrap().since_layer, 7);
}

#[test]
fn merge_of_a_single_layer_compacts_it() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = store.chain("g").unwrap();
    // A base where pfns 3 and 5 were sent three times (two dead copies each), then a child.
    let puts: Vec<(u64, Put)> = (0..20)
        .map(|p| (p, Put::Data(1)))
        .chain([3, 5, 3, 5].map(|p| (p, Put::Data(p + 10))))
        .collect();
    let (w, i) = fill(chain.begin_layer().unwrap(), 32, &puts, 4, 3);
    chain
        .commit_layer(w, &meta(1, None, 32), &i, &state(1), &config(1))
        .unwrap();
    let child: Vec<(u64, Put)> = vec![(7, Put::Data(2))];
    let (w, i) = fill(chain.begin_layer().unwrap(), 32, &child, 4, 3);
    chain
        .commit_layer(w, &meta(2, Some(1), 32), &i, &state(2), &config(2))
        .unwrap();
    assert_eq!(chain.open_layer(1).unwrap().figures().dead_slots, 4);
    let before = points(&chain);
    let lock = lock_free(&chain);
    // 4 dead of 24 slots: below a 20% bar nothing is rewritten (what a checkpoint does).
    assert!(chain.compact_dead(&lock, 1, 0.2).unwrap().is_none());
    let r = chain
        .compact_dead(&lock, 1, 0.1)
        .unwrap()
        .expect("4 of 24 slots dead is over 10%");
    assert_eq!(
        (r.rewritten[0].slots_before, r.rewritten[0].slots_after),
        (24, 20)
    );
    assert_eq!(chain.open_layer(1).unwrap().figures().dead_slots, 0);
    assert_kept_points_equal(&chain, &before, "compact");
    // Again, through merge: a second rewrite gets the next revision name.
    chain.merge(&lock, 1).unwrap();
    assert_eq!(
        chain.manifest().unwrap().layers[0].file,
        "layer-000001.r2.xcl"
    );
    drop(lock);
    assert_no_leftovers(&store.chain("g").unwrap(), "compact twice");
    chain.verify_deep(None).unwrap();
}

#[test]
fn prune_folds_dropped_inner_layers_into_their_children() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (chain, dom) = captured_chain(&store, 6);
    let before = points(&chain);
    let lock = lock_free(&chain);
    // Keep 2, 5 and 7: 1 folds into 2 (a new base), 3 and 4 into 5, 6 into 7.
    let keep: BTreeSet<u64> = [2, 5, 7].into();
    let r = chain.retain(&lock, &keep, None).unwrap();
    assert_eq!(r.dropped, [1, 3, 4, 6]);
    assert_eq!(
        r.rewritten.iter().map(|w| w.id).collect::<Vec<_>>(),
        [2, 5, 7]
    );
    let m = chain.manifest().unwrap();
    let links: Vec<(u64, Option<u64>, LayerKind)> =
        m.layers.iter().map(|r| (r.id, r.parent, r.kind)).collect();
    assert_eq!(links[0], (2, None, LayerKind::Base));
    assert_eq!((links[1].0, links[1].1), (5, Some(2)));
    assert_eq!((links[2].0, links[2].1), (7, Some(5)));
    assert_eq!(assert_kept_points_equal(&chain, &before, "retain 2,5,7"), 3);
    chain.verify_deep(None).unwrap();
    // Then by policy: the 2 newest.
    let keep = RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    }
    .select(&m.layers);
    chain.retain(&lock, &keep, None).unwrap();
    assert_eq!(ids(&chain), [5, 7]);
    assert_kept_points_equal(&chain, &before, "keep-last 2");
    drop(lock);
    assert_no_leftovers(&store.chain("g").unwrap(), "prune");
    // The chain goes on: the next checkpoint is an incremental on 7.
    let next = checkpoint(&dom, &chain, &opts()).unwrap();
    assert_eq!((next.layer.id, next.layer.parent), (8, Some(7)));
    assert_eq!(next.layer.kind, LayerKind::Incremental);
    let restored = SimDomain::from_image(&chain.compose(Some(8)).unwrap()).unwrap();
    assert_eq!(
        restored.digests(),
        dom.digests(),
        "point 8 restores the domain's memory"
    );
}

#[test]
fn the_newest_layer_is_always_kept_and_unknown_layers_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (chain, _dom) = captured_chain(&store, 2);
    let lock = lock_free(&chain);
    let err = chain.retain(&lock, &[1, 2].into(), None).unwrap_err();
    assert!(
        matches!(err, RewriteError::NewestDropped { id: 3, .. }),
        "{err}"
    );
    let err = chain.merge(&lock, 9).unwrap_err();
    assert!(
        matches!(err, RewriteError::NoSuchLayer { id: 9, .. }),
        "{err}"
    );
    assert_eq!(ids(&chain), [1, 2, 3]);
}

/// The xckpt binary on the store at `root`.
fn xckpt(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xckpt"))
        .args(args)
        .env("XCKPT_STORE", root)
        .output()
        .unwrap()
}

#[test]
fn a_second_writer_waits_for_the_lock_or_fails_clearly_two_processes() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (chain, _dom) = captured_chain(&store, 3);
    let held = lock_free(&chain);
    // Without --wait: fails at once, naming the chain and the lock file.
    for args in [
        &["merge", "g", "--upto", "2"][..],
        &["prune", "g", "--keep-last", "2"][..],
    ] {
        let out = xckpt(root.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("chain g is locked by another xckpt process") && err.contains("lock"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_eq!(ids(&chain), [1, 2, 3, 4]);
    // With --wait: it runs once the holder lets go.
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_xckpt"))
        .args(["prune", "g", "--keep-last", "2", "--wait", "30"])
        .env("XCKPT_STORE", root.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ids(&chain), [1, 2, 3, 4], "pruned while the lock was held");
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(ids(&chain), [3, 4]);
    // Readers (list, verify) do not need the lock.
    let _held = lock_free(&chain);
    let out = xckpt(root.path(), &["list", "g", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert!(xckpt(root.path(), &["verify", "g", "--deep"])
        .status
        .success());
}

#[test]
fn list_inspect_and_verify_json() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (_chain, _dom) = captured_chain(&store, 2);
    let out = xckpt(root.path(), &["list", "g", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for key in [
        "id",
        "parent",
        "kind",
        "file",
        "created_unix_ms",
        "bytes",
        "data_pages",
        "zero_pages",
        "unpopulated_pages",
        "evicted_pages",
        "evicted",
        "downtime_ms",
        "compression_ratio",
    ] {
        assert!(layers[0].get(key).is_some(), "list --json lacks {key}");
    }
    assert_eq!(layers[0]["kind"], "base");
    let out = xckpt(root.path(), &["inspect", "g@2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["frames"]["dead_slots"].is_u64(), "{v}");
    assert!(v["compression_ratio"].as_f64().unwrap() > 0.0);
    let out = xckpt(root.path(), &["list", "--offline", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chains"][0]["name"], "g");
    let out = xckpt(root.path(), &["verify", "g", "--deep", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["points"].as_array().unwrap().len(), 3);
}
