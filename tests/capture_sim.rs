//! The capture engine on the simulated domain: every layer restores byte-equal to the memory at
//! its pause instant, incrementals hold exactly what was dirtied, and no path leaves the domain
//! paused or loses dirty bits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use xckpt::backend::sim::{AccessPattern, SimConfig, SimDomain, TruthMode, WorkloadSpec};
use xckpt::capture::{checkpoint, spot, CaptureError, CaptureOptions};
use xckpt::compose::{Image, PageState};
use xckpt::hv::{DirtyLog, Domain, HvError, Pfn, PfnBitmap, PAGE_SIZE};
use xckpt::layer::{LayerKind, PageEntry};
use xckpt::store::Store;

fn sim(pages: u64, pattern: AccessPattern, rate_mib_s: f64) -> Arc<SimDomain> {
    let mut cfg = SimConfig::small(pages);
    cfg.workload = WorkloadSpec {
        pattern,
        rate_mib_s,
    };
    cfg.auto_truth = Some(TruthMode::Full);
    Arc::new(SimDomain::new(cfg).unwrap())
}

/// An empty chain "g" in a new store under a temporary directory (kept alive by the caller).
fn new_chain() -> (tempfile::TempDir, xckpt::store::Chain) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    (dir, chain)
}

fn opts(level: i32) -> CaptureOptions {
    CaptureOptions {
        compress_level: level,
        threads: 2,
        frame_pages: 16,
        ..Default::default()
    }
}

/// Restore layer `id` into a fresh sim and compare it byte for byte with truth `t`.
fn assert_restores(chain: &xckpt::store::Chain, dom: &SimDomain, id: u64, t: usize) {
    let truth = &dom.truths()[t];
    let image = chain.compose(Some(id)).unwrap();
    let restored = SimDomain::from_image(&image).unwrap();
    let bad = truth.differing(&restored.digests());
    assert!(
        bad.is_empty(),
        "layer {id}: {} pages differ, first {:#x}",
        bad.len(),
        bad[0]
    );
    let mem = truth.memory.as_ref().expect("full truth");
    let mut buf = vec![0u8; PAGE_SIZE];
    for pfn in 0..image.pfn_count() {
        image.read_page(pfn, &mut buf).unwrap();
        assert_eq!(
            &buf[..],
            &mem[pfn as usize * PAGE_SIZE..][..PAGE_SIZE],
            "layer {id} pfn {pfn:#x}"
        );
    }
}

#[test]
fn layers_restore_byte_equal_under_each_workload_with_and_without_compression() {
    let patterns = [
        AccessPattern::Uniform,
        AccessPattern::HotSet {
            hot_fraction: 0.1,
            hot_probability: 0.9,
        },
        AccessPattern::Sequential,
    ];
    for pattern in patterns {
        for level in [0, 1] {
            let (_dir, chain) = new_chain();
            let dom = sim(4096, pattern, 40.0);
            dom.start_workload().unwrap();
            let mut ids = Vec::new();
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(30));
                let r = checkpoint(&dom, &chain, &opts(level)).unwrap();
                assert!(!dom.info().unwrap().paused, "domain left paused");
                ids.push(r.layer.id);
            }
            dom.stop_workload();
            for (t, id) in ids.into_iter().enumerate() {
                assert_restores(&chain, &dom, id, t);
            }
        }
    }
}

#[test]
fn incremental_holds_exactly_the_dirtied_pages_less_zero_pages() {
    let (_dir, chain) = new_chain();
    let dom = sim(2048, AccessPattern::Uniform, 0.0);
    let base = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(base.layer.kind, LayerKind::Base);
    let data_pfns: Vec<Pfn> = (0..40).map(|i| i * 37 % 1500).collect();
    let zero_pfns: Vec<Pfn> = vec![3, 1000, 1499, 1700];
    let mut page = vec![0xabu8; PAGE_SIZE];
    for &p in &data_pfns {
        page[..8].copy_from_slice(&p.to_le_bytes());
        dom.write_page(p, &page).unwrap();
    }
    for &p in &zero_pfns {
        dom.write_page(p, &[0u8; PAGE_SIZE]).unwrap();
    }
    let inc = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(inc.layer.kind, LayerKind::Incremental);
    let layer = chain.open_layer(inc.layer.id).unwrap();
    for pfn in 0..2048u64 {
        let want = if zero_pfns.contains(&pfn) {
            Some(PageEntry::Zero)
        } else if data_pfns.contains(&pfn) {
            Some(PageEntry::Data)
        } else {
            None
        };
        assert_eq!(layer.entry(pfn), want, "pfn {pfn}");
    }
    assert_eq!(inc.layer.stats.data_pages, data_pfns.len() as u64);
    assert_eq!(inc.layer.stats.zero_pages, zero_pfns.len() as u64);
    assert_restores(&chain, &dom, inc.layer.id, 1);
}

#[test]
fn composing_layer_n_of_ten_equals_truth_at_n() {
    let (_dir, chain) = new_chain();
    let dom = sim(
        4096,
        AccessPattern::HotSet {
            hot_fraction: 0.2,
            hot_probability: 0.7,
        },
        30.0,
    );
    dom.start_workload().unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(20));
        ids.push(checkpoint(&dom, &chain, &opts(1)).unwrap().layer.id);
    }
    dom.stop_workload();
    for (t, id) in ids.into_iter().enumerate() {
        assert_restores(&chain, &dom, id, t);
    }
}

#[test]
fn ballooned_pages_become_unpopulated_in_the_next_layer() {
    let (_dir, chain) = new_chain();
    let dom = sim(1024, AccessPattern::Uniform, 0.0);
    let first = checkpoint(&dom, &chain, &opts(1)).unwrap();
    dom.balloon_out(100..164).unwrap();
    let inc = checkpoint(&dom, &chain, &opts(1)).unwrap();
    let image = chain.compose(Some(inc.layer.id)).unwrap();
    assert!((100..164).all(|p| image.page_state(p) == PageState::Unpopulated));
    assert_restores(&chain, &dom, inc.layer.id, 1);

    // A base of the ballooned guest leaves the frames uncovered; its figures still count them.
    let full = CaptureOptions {
        full: true,
        ..opts(1)
    };
    let base = checkpoint(&dom, &chain, &full).unwrap();
    let s = &base.layer.stats;
    assert_eq!(base.layer.kind, LayerKind::Base);
    let before = first.layer.stats.unpopulated_pages;
    assert_eq!(s.unpopulated_pages, before + 64, "{s:?}");
    assert_eq!(
        s.dirty_pages, 1024,
        "a base covers the whole pfn space: {s:?}"
    );
}

/// A balloon driver that gives frames back between the capture's page-type query and its map
/// (as a guest still coming down to a balloon target does): the frames are recorded as
/// unpopulated, where a copy of them would fail.
#[test]
fn frames_that_leave_between_type_query_and_map_are_unpopulated() {
    let (_dir, chain) = new_chain();
    let dom = sim(1024, AccessPattern::Uniform, 0.0);
    let weak = Arc::downgrade(&dom);
    let once = std::sync::atomic::AtomicBool::new(false);
    dom.faults().before_map(move || {
        if let (false, Some(d)) = (once.swap(true, Ordering::SeqCst), weak.upgrade()) {
            d.balloon_out(100..164).unwrap();
        }
    });
    let base = checkpoint(&dom, &chain, &opts(1)).unwrap();
    let image = chain.compose(Some(base.layer.id)).unwrap();
    assert!((100..164).all(|p| image.page_state(p) == PageState::Unpopulated));
    assert_restores(&chain, &dom, base.layer.id, 0);
}

#[test]
fn failures_under_pause_unpause_and_keep_dirty_bits_for_the_next_run() {
    let (_dir, chain, dom) = chain_with_a_base();
    let head = chain.manifest().unwrap().layers.len();

    // Dirty some pages, then fail under pause in two ways.
    let page = vec![0x5au8; PAGE_SIZE];
    for p in [5u64, 700, 1200] {
        dom.write_page(p, &page).unwrap();
    }
    dom.faults().fail_save_state.store(true, Ordering::SeqCst);
    let e = checkpoint(&dom, &chain, &opts(1)).unwrap_err();
    assert!(matches!(e, CaptureError::Hv(_)), "{e}");
    assert!(
        !dom.info().unwrap().paused,
        "left paused after a state failure"
    );
    assert_eq!(
        sessions_open(&dom),
        0,
        "the stop's session outlived a state failure"
    );
    dom.faults().fail_save_state.store(false, Ordering::SeqCst);

    // What the state needs cannot be opened before the stop: nothing is paused.
    dom.faults()
        .fail_ready_for_stop
        .store(true, Ordering::SeqCst);
    let e = checkpoint(&dom, &chain, &opts(1)).unwrap_err();
    assert!(e.to_string().contains("ready for stop"), "{e}");
    assert!(!dom.info().unwrap().paused);
    dom.faults()
        .fail_ready_for_stop
        .store(false, Ordering::SeqCst);

    // The pause itself fails: the session opened for it is released.
    dom.faults().fail_pause.store(true, Ordering::SeqCst);
    assert!(checkpoint(&dom, &chain, &opts(1)).is_err());
    assert!(!dom.info().unwrap().paused);
    assert_eq!(
        sessions_open(&dom),
        0,
        "the stop's session outlived a failed pause"
    );
    dom.faults().fail_pause.store(false, Ordering::SeqCst);

    for p in [9u64, 701] {
        dom.write_page(p, &page).unwrap();
    }
    dom.faults()
        .fail_map_when_paused
        .store(true, Ordering::SeqCst);
    // Non-live, so the dirty pages are mapped under pause.
    let paused_capture = CaptureOptions {
        live: false,
        ..opts(1)
    };
    assert!(checkpoint(&dom, &chain, &paused_capture).is_err());
    assert!(
        !dom.info().unwrap().paused,
        "left paused after a map failure"
    );
    dom.faults()
        .fail_map_when_paused
        .store(false, Ordering::SeqCst);
    assert_eq!(
        chain.manifest().unwrap().layers.len(),
        head,
        "a failed run must not add a layer"
    );

    // The next run stores every page dirtied since the last good layer.
    let inc = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(inc.layer.kind, LayerKind::Incremental);
    assert_eq!(
        sessions_open(&dom),
        0,
        "a run that succeeded kept its stop's session"
    );
    let layer = chain.open_layer(inc.layer.id).unwrap();
    for p in [5u64, 700, 1200, 9, 701] {
        assert_eq!(layer.entry(p), Some(PageEntry::Data), "pfn {p} lost");
    }
    // And the chain restores the domain's whole memory (no workload runs: it is still as
    // the capture saw it), not only the pages written above.
    let restored = SimDomain::from_image(&chain.compose(None).unwrap()).unwrap();
    let bad = restored
        .digests()
        .iter()
        .zip(dom.digests())
        .filter(|(a, b)| *a != b)
        .count();
    assert_eq!(bad, 0, "{bad} pages differ after the failed runs");
    let mut buf = vec![0u8; PAGE_SIZE];
    chain
        .compose(None)
        .unwrap()
        .read_page(700, &mut buf)
        .unwrap();
    assert_eq!(buf, page);
}

#[test]
fn lost_tracking_takes_a_resync_that_stores_only_what_differs() {
    let (_dir, chain, dom) = chain_with_a_base();
    dom.logdirty_disable().unwrap();
    let page = vec![0x77u8; PAGE_SIZE];
    for p in [1u64, 2, 3] {
        dom.write_page(p, &page).unwrap();
    }
    let r = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(r.layer.kind, LayerKind::Resync);
    assert!(r
        .resync_reason
        .unwrap()
        .contains("log-dirty was turned off"));
    assert_eq!(
        r.layer.stats.data_pages, 3,
        "a resync stores only pages that differ"
    );
    assert_restores(&chain, &dom, r.layer.id, 1);
    // Tracking is armed again: the next layer is an incremental.
    dom.write_page(4, &page).unwrap();
    let r = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(r.layer.kind, LayerKind::Incremental);
}

#[test]
fn log_dirty_turned_off_during_a_capture_fails_it_and_the_next_run_resyncs() {
    let (_dir, chain) = new_chain();
    let dom = sim(2048, AccessPattern::Uniform, 50.0);
    checkpoint(&dom, &chain, &opts(1)).unwrap();
    let head = chain.manifest().unwrap().layers.len();
    // Another tool ends its save between this run's first and second CLEAN.
    let first = dom.faults().cleans.load(Ordering::SeqCst) + 1;
    dom.faults()
        .disable_logdirty_at_clean
        .store(first + 1, Ordering::SeqCst);
    let e = checkpoint(&dom, &chain, &opts(1)).unwrap_err();
    assert!(
        matches!(e, CaptureError::Hv(HvError::TrackingLost { .. })),
        "{e}"
    );
    assert!(
        e.to_string().contains("next checkpoint will be a resync"),
        "{e}"
    );
    assert!(!dom.info().unwrap().paused, "left paused");
    assert_eq!(chain.manifest().unwrap().layers.len(), head);
    let r = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(r.layer.kind, LayerKind::Resync);
    let last = dom.truths().len() - 1;
    assert_restores(&chain, &dom, r.layer.id, last);
}

#[test]
fn non_live_capture_restores_byte_equal() {
    let (_dir, chain) = new_chain();
    let dom = sim(2048, AccessPattern::Uniform, 20.0);
    dom.start_workload().unwrap();
    let o = CaptureOptions {
        live: false,
        ..opts(1)
    };
    let a = checkpoint(&dom, &chain, &o).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let b = checkpoint(&dom, &chain, &o).unwrap();
    dom.stop_workload();
    assert_eq!(b.rounds.len(), 1, "a non-live capture is one paused round");
    assert_restores(&chain, &dom, a.layer.id, 0);
    assert_restores(&chain, &dom, b.layer.id, 1);
}

/// A base of a sparse space (a PVH guest's: RAM from pfn 0, a few pages at the top) asks the
/// types at the two ends only, live or paused, and every layer still restores byte-equal.
#[test]
fn a_sparse_space_is_probed_from_its_ends_and_restores_byte_equal() {
    for live in [true, false] {
        let (_dir, chain) = new_chain();
        let mut cfg = SimConfig::small(16_384);
        cfg.populated = vec![0..2048, 16_376..16_384];
        cfg.workload.rate_mib_s = 20.0;
        cfg.auto_truth = Some(TruthMode::Full);
        let dom = Arc::new(SimDomain::new(cfg).unwrap());
        dom.start_workload().unwrap();
        let o = CaptureOptions { live, ..opts(1) };
        let base = checkpoint(&dom, &chain, &o).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let inc = checkpoint(&dom, &chain, &o).unwrap();
        dom.stop_workload();
        let p = base.probe.as_ref().expect("a sparse base probes");
        assert!(p.counted && p.populated == 2056, "live {live}: {p:?}");
        assert!(p.asked <= 2048 + 3 * 1024, "live {live}: {p:?}");
        assert!(inc.probe.is_none(), "an incremental reads its dirty set");
        assert_restores(&chain, &dom, base.layer.id, 0);
        assert_restores(&chain, &dom, inc.layer.id, 1);
    }
}

/// A chain "g" in a new store holding a base of a quiet 2048-page sim guest.
fn chain_with_a_base() -> (tempfile::TempDir, xckpt::store::Chain, Arc<SimDomain>) {
    let (dir, chain) = new_chain();
    let dom = sim(2048, AccessPattern::Uniform, 0.0);
    checkpoint(&dom, &chain, &opts(1)).unwrap();
    (dir, chain, dom)
}

/// Write `byte` over each page of `pfns`.
fn write_pages(dom: &SimDomain, pfns: std::ops::Range<u64>, byte: u8) {
    let page = vec![byte; PAGE_SIZE];
    for p in pfns {
        dom.write_page(p, &page).unwrap();
    }
}

/// Someone else fetches and clears the log (log-dirty stays on, the bits are gone): the next
/// checkpoint's spot check must catch it, and the run become a resync.
fn steal_the_log_then_expect_a_resync(
    dom: &Arc<SimDomain>,
    chain: &xckpt::store::Chain,
) -> xckpt::capture::CaptureReport {
    let mut stolen = PfnBitmap::new();
    dom.logdirty_clean(&mut stolen).unwrap();
    let r = checkpoint(dom, chain, &opts(1)).unwrap();
    assert_eq!(r.layer.kind, LayerKind::Resync, "{:?}", r.resync_reason);
    assert!(r
        .resync_reason
        .as_deref()
        .unwrap_or("")
        .contains("spot check"));
    r
}

#[test]
fn another_consumer_of_the_dirty_log_is_caught_by_the_spot_check() {
    let (_dir, chain, dom) = chain_with_a_base();
    write_pages(&dom, 0..1500, 0x3c);
    let r = steal_the_log_then_expect_a_resync(&dom, &chain);
    assert_restores(&chain, &dom, r.layer.id, 1);
}

/// Base, an incremental of 200 pages, then every page that incremental holds changes and the
/// log loses it: the next run must become a resync. `kept` says whether the spot-check sample
/// kept at the incremental's commit is used, or dropped (as from an older manifest) so the
/// parent layer is opened instead.
fn lost_writes_to_the_parent_layers_pages(kept: bool) {
    let (_dir, chain, dom) = chain_with_a_base();
    write_pages(&dom, 100..300, 0x5a);
    let parent = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(parent.layer.kind, LayerKind::Incremental);
    let mut tracking = chain.manifest().unwrap().tracking.unwrap();
    assert_eq!(tracking.since_layer, parent.layer.id);
    assert_eq!(tracking.spot.len(), spot::SAMPLES);
    assert!(tracking.spot.iter().all(|s| (100..300).contains(&s.pfn)));
    if !kept {
        tracking.spot.clear();
        chain.set_tracking(Some(tracking)).unwrap();
    }
    write_pages(&dom, 100..300, 0xa5);
    let r = steal_the_log_then_expect_a_resync(&dom, &chain);
    assert_restores(&chain, &dom, r.layer.id, 2);
}

#[test]
fn the_spot_check_reads_the_sample_kept_at_the_parents_commit() {
    lost_writes_to_the_parent_layers_pages(true);
}

#[test]
fn without_a_kept_sample_the_spot_check_draws_one_from_the_parent_layer() {
    lost_writes_to_the_parent_layers_pages(false);
}

/// A sample kept by an xckpt before format version 5 holds xxh3 digests and names no hash: the
/// next incremental compares the pages with xxh3, so unchanged pages do not look written (which
/// would turn every run into a resync), and lost writes are still caught.
#[test]
fn a_sample_kept_before_format_5_is_compared_with_its_own_hash() {
    let (_dir, chain, dom) = chain_with_a_base();
    write_pages(&dom, 100..300, 0x5a);
    checkpoint(&dom, &chain, &opts(1)).unwrap();
    let mut tracking = chain.manifest().unwrap().tracking.unwrap();
    let old = xckpt::layer::DigestKind::Xxh3.hash(&[0x5a; PAGE_SIZE]);
    for s in &mut tracking.spot {
        assert_eq!(
            s.hash,
            xckpt::layer::DigestKind::Xxh64,
            "kept as written now"
        );
        s.digest = old;
    }
    // The manifest as the older xckpt wrote it: no "hash" key.
    let mut m = serde_json::to_value(chain.manifest().unwrap()).unwrap();
    let spot: Vec<serde_json::Value> = tracking
        .spot
        .iter()
        .map(|s| serde_json::json!({ "pfn": s.pfn, "digest": s.digest }))
        .collect();
    m["tracking"]["spot"] = serde_json::Value::Array(spot);
    std::fs::write(chain.dir().join("manifest.json"), m.to_string()).unwrap();
    let spot = chain.manifest().unwrap().tracking.unwrap().spot;
    assert!(spot
        .iter()
        .all(|s| s.hash == xckpt::layer::DigestKind::Xxh3 && s.digest == old));
    let quiet = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(
        quiet.layer.kind,
        LayerKind::Incremental,
        "{:?}",
        quiet.resync_reason
    );
    assert_restores(&chain, &dom, quiet.layer.id, 2);
}

/// An encrypted chain keeps no page digests in its plaintext manifest: its spot check opens
/// the parent layer with the key, and still catches lost writes.
#[test]
fn an_encrypted_chain_keeps_no_sample_and_still_catches_lost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let key = xckpt::layer::LayerKey::from_bytes([7; 32]);
    let chain = store.chain("g").unwrap().with_key(Some(key));
    let dom = sim(2048, AccessPattern::Uniform, 0.0);
    checkpoint(&dom, &chain, &opts(1)).unwrap();
    let tracking = chain.manifest().unwrap().tracking.unwrap();
    assert!(tracking.spot.is_empty(), "{:?}", tracking.spot);
    write_pages(&dom, 0..1500, 0x3c);
    steal_the_log_then_expect_a_resync(&dom, &chain);
}

#[test]
fn a_run_killed_after_fetching_dirty_bits_makes_the_next_run_a_resync() {
    let (_dir, chain) = new_chain();
    let dom = sim(1024, AccessPattern::Uniform, 0.0);
    checkpoint(&dom, &chain, &opts(1)).unwrap();
    // What a run killed with SIGKILL after its first fetch-and-clear leaves behind.
    let mut t = chain.manifest().unwrap().tracking.unwrap();
    assert!(!t.in_flight, "a finished run clears in_flight");
    t.in_flight = true;
    chain.set_tracking(Some(t)).unwrap();
    dom.write_page(7, &[9u8; PAGE_SIZE]).unwrap();
    let mut gone = PfnBitmap::new();
    dom.logdirty_clean(&mut gone).unwrap(); // the killed run's fetch
    let r = checkpoint(&dom, &chain, &opts(1)).unwrap();
    assert_eq!(r.layer.kind, LayerKind::Resync, "{:?}", r.resync_reason);
    assert_restores(&chain, &dom, r.layer.id, 1);
    assert!(!chain.manifest().unwrap().tracking.unwrap().in_flight);
}

/// The sim's count of stop preparations not yet released (a Xen HVM guest's QEMU session).
fn sessions_open(dom: &SimDomain) -> u64 {
    dom.faults().stop_sessions_open.load(Ordering::SeqCst)
}

/// The report's usage per phase covers the run and nothing else: its phases add up to at most
/// what the process used around the call (other tests run in the same process), and the
/// pre-copy, which faults in the chunk buffers, shows faults.
#[test]
fn phase_usage_adds_up_within_the_run() {
    use xckpt::usage::Usage;
    let (_dir, chain) = new_chain();
    let dom = sim(8192, AccessPattern::Uniform, 0.0);
    let before = Usage::now();
    let r = checkpoint(&dom, &chain, &opts(1)).unwrap();
    let around = Usage::now().since(before);
    let u = &r.phase_usage;
    let phases = [
        u.arm,
        u.free,
        u.precopy,
        u.stopped,
        u.write_behind,
        u.commit,
    ];
    let sum = |f: fn(&Usage) -> u64| phases.iter().map(f).sum::<u64>();
    assert!(
        sum(|p| p.minor_faults) <= around.minor_faults,
        "{u:?} {around:?}"
    );
    assert!(
        sum(|p| p.user_ms + p.system_ms) <= around.user_ms + around.system_ms,
        "{u:?} {around:?}"
    );
    assert!(u.precopy.minor_faults > 0, "{u:?}");
}
