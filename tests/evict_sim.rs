//! Page eviction on the simulated domain with a fake guest agent: reported-free pages are
//! evicted unless they were written after tracking was armed, and a silent agent only costs
//! the `free` policy (with a note saying why).

mod sim_util;

use std::sync::Arc;

use xckpt::backend::sim::{SimAgent, SimConfig, SimDomain, TruthMode};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::compose::{Image, PageState};
use xckpt::evict::{EvictOptions, GuestAgent};
use xckpt::hv::{Domain, PAGE_SIZE};
use xckpt::layer::EvictPolicy;
use xckpt::store::Store;

use sim_util::assert_restores_except_evicted;

fn idle_sim(pages: u64) -> Arc<SimDomain> {
    let mut cfg = SimConfig::small(pages);
    cfg.auto_truth = Some(TruthMode::Full);
    Arc::new(SimDomain::new(cfg).unwrap())
}

fn opts(agent: Option<Arc<dyn GuestAgent>>, list: &str) -> CaptureOptions {
    CaptureOptions {
        threads: 2,
        frame_pages: 16,
        evict: EvictOptions {
            set: list.parse().unwrap(),
            agent,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn page(fill: u8) -> Vec<u8> {
    vec![fill; PAGE_SIZE]
}

/// An agent reporting 100..200 and 250..300 free. The guest writes 120..124 after arming but
/// before the report (a stale report), and allocates 150..160 and 250..252 right after it.
fn racing_agent(dom: &Arc<SimDomain>) -> SimAgent {
    let (d1, d2) = (dom.clone(), dom.clone());
    SimAgent {
        free: vec![(100, 100), (250, 50)],
        before: Some(Box::new(move || {
            (120..124).for_each(|p| d1.write_page(p, &page(0x11)).unwrap())
        })),
        after: Some(Box::new(move || {
            (150..160)
                .chain(250..252)
                .for_each(|p| d2.write_page(p, &page(0x22)).unwrap())
        })),
        ..Default::default()
    }
}

#[test]
fn a_page_reported_free_but_written_after_arming_is_never_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    let dom = idle_sim(1024);
    for pfn in 100..300 {
        dom.write_page(pfn, &page(0x5a)).unwrap();
    }
    for run in 0..2 {
        let o = opts(Some(Arc::new(racing_agent(&dom))), "zero,unpopulated,free");
        let r = checkpoint(&dom, &chain, &o).unwrap();
        let image = chain.compose(Some(r.layer.id)).unwrap();
        for pfn in (120..124).chain(150..160).chain(250..252) {
            assert!(
                matches!(image.page_state(pfn), PageState::Data(_)),
                "run {run}: pfn {pfn} written after arming is {:?}",
                image.page_state(pfn)
            );
        }
        assert_eq!(image.page_state(100), PageState::Evicted(EvictPolicy::Free));
        assert_restores_except_evicted(&chain, &dom, r.layer.id, dom.truths().len() - 1);
        if run == 0 {
            let evicted = r.layer.stats.evicted.get(&EvictPolicy::Free).copied();
            assert_eq!(evicted, Some(150 - 4 - 10 - 2), "{:?}", r.layer.stats);
            assert!(
                r.layer
                    .stats
                    .notes
                    .iter()
                    .any(|n| n.contains("150 free pages")),
                "{:?}",
                r.layer.stats.notes
            );
        }
    }
}

#[test]
fn pages_written_while_the_guest_runs_are_saved_and_cache_counts_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    let mut cfg = SimConfig::small(4096);
    cfg.auto_truth = Some(TruthMode::Full);
    cfg.workload.rate_mib_s = 20.0;
    let dom = Arc::new(SimDomain::new(cfg).unwrap());
    dom.start_workload().unwrap();
    // Report nearly everything free: only what the workload does not write after arming may
    // be evicted, and the restore must still equal the truth on every other page.
    let agent = SimAgent {
        free: vec![(0, 2048)],
        cache: vec![(2048, 2048)],
        ..Default::default()
    };
    let r = checkpoint(
        &dom,
        &chain,
        &opts(Some(Arc::new(agent)), "zero,unpopulated,free,cache"),
    )
    .unwrap();
    dom.stop_workload();
    let s = &r.layer.stats;
    assert!(
        s.evicted.get(&EvictPolicy::Free).is_some_and(|&n| n > 0),
        "{s:?}"
    );
    assert!(
        s.evicted.get(&EvictPolicy::Cache).is_some_and(|&n| n > 0),
        "{s:?}"
    );
    assert_restores_except_evicted(&chain, &dom, r.layer.id, dom.truths().len() - 1);
}

#[test]
fn without_an_agent_answer_the_capture_goes_on_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    let dom = idle_sim(1024);
    let silent = SimAgent {
        silent: true,
        ..Default::default()
    };
    let r = checkpoint(
        &dom,
        &chain,
        &opts(Some(Arc::new(silent)), "zero,unpopulated,free"),
    )
    .unwrap();
    assert!(r.layer.stats.evicted.is_empty());
    assert!(
        r.layer
            .stats
            .notes
            .iter()
            .any(|n| n.starts_with("free: skipped, the xckpt-agent did not answer")),
        "{:?}",
        r.layer.stats.notes
    );
    let r = checkpoint(&dom, &chain, &opts(None, "zero,unpopulated,free")).unwrap();
    assert!(r
        .layer
        .stats
        .notes
        .iter()
        .any(|n| n.contains("no guest agent")));
    assert_restores_except_evicted(&chain, &dom, r.layer.id, dom.truths().len() - 1);
}

#[test]
fn without_zero_zero_pages_are_stored_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    let dom = idle_sim(256);
    let r = checkpoint(&dom, &chain, &opts(None, "unpopulated")).unwrap();
    assert_eq!(r.layer.stats.zero_pages, 0);
    let r2 = checkpoint(
        &dom,
        &store.chain("h").unwrap(),
        &opts(None, "zero,unpopulated"),
    )
    .unwrap();
    assert!(r2.layer.stats.zero_pages > 0);
    assert!(r.layer.bytes > r2.layer.bytes);
}

/// A guest balloon driver on the sim: follows the target by ballooning out the top pages, or
/// ignores it (`stuck`).
struct SimBalloon {
    dom: Arc<SimDomain>,
    target: std::sync::Mutex<u64>,
    stuck: bool,
    history: std::sync::Mutex<Vec<u64>>,
}

impl xckpt::evict::BalloonTarget for SimBalloon {
    fn target_kib(&self) -> std::io::Result<u64> {
        Ok(*self.target.lock().unwrap())
    }
    fn set_target_kib(&self, kib: u64) -> std::io::Result<()> {
        *self.target.lock().unwrap() = kib;
        self.history.lock().unwrap().push(kib);
        let pages = kib / 4;
        let n = self.dom.info().unwrap().pfn_count;
        if !self.stuck && pages < n {
            self.dom.balloon_out(pages..n).unwrap();
        }
        Ok(())
    }
}

#[test]
fn balloon_unpopulates_for_the_capture_and_gives_the_target_back_or_aborts_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // A 1 GiB guest (the fake agent's MemTotal) using 4 MiB: the target is 4 + 64 MiB margin.
    let pages = 262144;
    let dom = idle_sim(pages);
    let total_kib = pages * 4;
    for stuck in [false, true] {
        dom.populate(0..pages).unwrap();
        let balloon = Arc::new(SimBalloon {
            dom: dom.clone(),
            target: std::sync::Mutex::new(total_kib),
            stuck,
            history: Default::default(),
        });
        let agent = SimAgent {
            free: vec![(1024, pages - 1024)],
            ..Default::default()
        };
        let mut o = opts(Some(Arc::new(agent)), "zero,unpopulated,balloon");
        o.evict.balloon = Some(balloon.clone());
        o.evict.balloon_timeout = std::time::Duration::from_millis(300);
        let chain = store.chain(if stuck { "stuck" } else { "ok" }).unwrap();
        let r = checkpoint(&dom, &chain, &o).unwrap();
        let h = balloon.history.lock().unwrap().clone();
        // Down to used + margin, then back to the old target, whatever happened.
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h[0] < total_kib && h[1] == total_kib, "{h:?}");
        let notes = &r.layer.stats.notes;
        if stuck {
            assert!(
                notes.iter().any(|n| n.starts_with("balloon: aborted")),
                "{notes:?}"
            );
        } else {
            assert!(notes.iter().any(|n| n.contains("reached")), "{notes:?}");
            let image = chain.compose(Some(r.layer.id)).unwrap();
            assert_eq!(image.page_state(pages - 1), PageState::Unpopulated);
            assert!(dom.info().unwrap().populated_pages < pages);
        }
    }
}
