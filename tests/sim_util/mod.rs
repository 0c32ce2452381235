//! Helpers of the tests that run a simulated domain's writers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Poll `cond` until it holds; fail the test after a minute, naming `what`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every pfn of `layer` reads as the truth at its pause, except evicted ones, which read zero.
pub fn assert_restores_except_evicted(
    chain: &xckpt::store::Chain,
    dom: &xckpt::backend::sim::SimDomain,
    layer: u64,
    t: usize,
) {
    use xckpt::compose::Image;
    let truth = &dom.truths()[t];
    let mem = truth.memory.as_ref().unwrap();
    let image = chain.compose(Some(layer)).unwrap();
    let mut buf = vec![0u8; xckpt::hv::PAGE_SIZE];
    for pfn in 0..image.pfn_count() {
        image.read_page(pfn, &mut buf).unwrap();
        if let xckpt::compose::PageState::Evicted(_) = image.page_state(pfn) {
            assert!(buf.iter().all(|&b| b == 0), "evicted pfn {pfn:#x} not zero");
        } else {
            assert_eq!(
                &buf[..],
                &mem[pfn as usize * xckpt::hv::PAGE_SIZE..][..xckpt::hv::PAGE_SIZE],
                "pfn {pfn:#x}"
            );
        }
    }
}

/// A small simulated domain of `pages` pages, its workload writing uniformly at `rate_mib_s`
/// (started unless 0), recording the truth at each pause when `truth` is given.
pub fn uniform_sim(
    pages: u64,
    name: &str,
    seed: u64,
    rate_mib_s: f64,
    truth: Option<xckpt::backend::sim::TruthMode>,
) -> std::sync::Arc<xckpt::backend::sim::SimDomain> {
    use xckpt::backend::sim::{AccessPattern, SimConfig, SimDomain, WorkloadSpec};
    let mut cfg = SimConfig::small(pages);
    cfg.name = name.into();
    cfg.seed = seed;
    cfg.auto_truth = truth;
    cfg.workload = WorkloadSpec {
        pattern: AccessPattern::Uniform,
        rate_mib_s,
    };
    let sim = SimDomain::new(cfg).unwrap();
    if rate_mib_s > 0.0 {
        sim.start_workload().unwrap();
    }
    std::sync::Arc::new(sim)
}

/// Capture options of the small sim tests: two workers, 16-page frames.
pub fn small_capture_options() -> xckpt::capture::CaptureOptions {
    xckpt::capture::CaptureOptions {
        threads: 2,
        frame_pages: 16,
        ..Default::default()
    }
}

/// A port free on the loopback now (for a hub that must bind a known port).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Host `slot` of a group of `size` hosts meeting on the loopback at `port`.
pub fn rendezvous(
    port: u16,
    slot: u32,
    size: u32,
    hub: bool,
    stop_timeout: Duration,
) -> xckpt::group::rendezvous::Rendezvous {
    xckpt::group::rendezvous::Rendezvous {
        job: "7.0".into(),
        slot,
        size,
        hub,
        hub_addr: format!("127.0.0.1:{port}"),
        listen_addr: format!("127.0.0.1:{port}"),
        host: format!("h{slot}"),
        timeout: Duration::from_secs(30),
        stop_timeout,
    }
}

/// Group members of `doms`, memory only, each with its chain in `store` (created on first use).
pub fn group_members<'a>(
    store: &xckpt::store::Store,
    doms: impl IntoIterator<Item = &'a std::sync::Arc<xckpt::backend::sim::SimDomain>>,
) -> Vec<xckpt::group::Member<xckpt::backend::sim::SimDomain>> {
    use xckpt::hv::Domain;
    doms.into_iter()
        .map(|d| xckpt::group::Member {
            dom: d.clone(),
            chain: store.chain(&d.name()).unwrap(),
            disks: Default::default(),
            evict: Default::default(),
        })
        .collect()
}
