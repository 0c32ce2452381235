//! The simulated domain: log-dirty exactness, no lost writes under concurrent writers, pause,
//! workloads, and the from_image round trip.

mod sim_util;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sim_util::wait_for;
use xckpt::backend::sim::{
    page_digest, AccessPattern, SimConfig, SimCpuState, SimDomain, TruthMode, WorkloadSpec,
    UNPOPULATED_DIGEST,
};
use xckpt::compose::{Image, PageState};
use xckpt::hv::{
    state_kind, DirtyLog, Domain, GuestMemory, MachineState, PageType, Pfn, PfnBitmap, StateBlob,
    PAGE_SIZE,
};
use xckpt::layer::{EvictPolicy, LayerReadError};

fn sim(pages: u64, pattern: AccessPattern, writers: usize) -> SimDomain {
    let mut cfg = SimConfig::small(pages);
    cfg.workload = WorkloadSpec {
        pattern,
        rate_mib_s: 0.0,
    };
    cfg.writers = writers;
    SimDomain::new(cfg).unwrap()
}

/// A copy of guest memory kept by the test, as the capture engine would keep one.
struct Copy {
    data: Vec<u8>,
    populated: Vec<bool>,
}

impl Copy {
    fn new(pages: u64) -> Self {
        Copy {
            data: vec![0; pages as usize * PAGE_SIZE],
            populated: vec![false; pages as usize],
        }
    }

    fn take(&mut self, d: &SimDomain, pfns: &[Pfn]) {
        let batch = d.map_batch(pfns).unwrap();
        for (i, &pfn) in pfns.iter().enumerate() {
            let dst = &mut self.data[pfn as usize * PAGE_SIZE..][..PAGE_SIZE];
            match batch.page(i) {
                Ok(p) => {
                    p.copy_to(dst);
                    self.populated[pfn as usize] = true;
                }
                Err(e) => {
                    assert_eq!(e, libc::ENOENT);
                    dst.fill(0);
                    self.populated[pfn as usize] = false;
                }
            }
        }
    }
}

fn ones(bits: &PfnBitmap) -> Vec<Pfn> {
    bits.iter_ones().map(|i| i as Pfn).collect()
}

#[test]
fn logdirty_every_write_in_exactly_the_next_clean() {
    let d = sim(1024, AccessPattern::Uniform, 0);
    let mut bits = PfnBitmap::new();
    assert!(matches!(
        d.logdirty_clean(&mut bits),
        Err(xckpt::hv::HvError::TrackingLost { .. })
    ));
    d.logdirty_enable().unwrap();
    assert_eq!(d.logdirty_clean(&mut bits).unwrap(), 0);
    assert_eq!(bits.len(), 1024);
    let mut rng = fastrand::Rng::with_seed(3);
    let populated: Vec<Pfn> = (0..1024).filter(|&p| !(768..832).contains(&p)).collect();
    for round in 0..20u8 {
        let mut want: Vec<Pfn> = (0..rng.usize(0..50))
            .map(|_| populated[rng.usize(..populated.len())])
            .collect();
        for &p in &want {
            d.write_page(p, &vec![round; PAGE_SIZE]).unwrap();
        }
        want.sort_unstable();
        want.dedup();
        assert_eq!(d.logdirty_clean(&mut bits).unwrap(), want.len() as u64);
        assert_eq!(ones(&bits), want, "round {round}");
    }
    assert_eq!(d.logdirty_clean(&mut bits).unwrap(), 0);
    assert!(
        d.write_page(800, &[0; PAGE_SIZE]).is_err(),
        "hole pfns cannot be written"
    );
}

#[test]
fn balloon_and_populate_are_dirty_and_change_types() {
    let d = sim(256, AccessPattern::Uniform, 0);
    d.logdirty_enable().unwrap();
    let mut bits = PfnBitmap::new();
    d.logdirty_clean(&mut bits).unwrap();
    d.balloon_out(10..14).unwrap();
    assert_eq!(ones(&bits_after(&d)), vec![10, 11, 12, 13]);
    let mut t = [PageType::Normal; 2];
    d.page_types(&[10, 14], &mut t).unwrap();
    assert_eq!(t, [PageType::Unpopulated, PageType::Normal]);
    let b = d.map_batch(&[10, 14, 999]).unwrap();
    assert_eq!(b.page(0).err(), Some(libc::ENOENT));
    assert!(b.page(1).is_ok());
    assert_eq!(b.page(2).err(), Some(libc::EINVAL));
    drop(b);
    d.populate(10..12).unwrap();
    assert_eq!(ones(&bits_after(&d)), vec![10, 11]);
    let mut buf = vec![1u8; PAGE_SIZE];
    assert!(d.read_page(10, &mut buf).unwrap());
    assert!(
        buf.iter().all(|&b| b == 0),
        "a re-populated page reads as zeros"
    );
    assert_eq!(d.info().unwrap().populated_pages, 256 - 16 - 2);
}

fn bits_after(d: &SimDomain) -> PfnBitmap {
    let mut bits = PfnBitmap::new();
    d.logdirty_clean(&mut bits).unwrap();
    bits
}

/// The core property of live capture: with writers running, repeated CLEAN + copy of the dirty
/// pages, then pause + CLEAN + copy, gives a copy byte-equal to memory.
#[test]
fn concurrent_writers_never_lose_a_write() {
    for (pattern, balloon) in [
        (AccessPattern::Uniform, false),
        (
            AccessPattern::HotSet {
                hot_fraction: 0.05,
                hot_probability: 0.9,
            },
            true,
        ),
        (AccessPattern::Sequential, false),
    ] {
        let pages = 2048;
        let d = sim(pages, pattern, 2);
        d.logdirty_enable().unwrap();
        let mut bits = PfnBitmap::new();
        d.logdirty_clean(&mut bits).unwrap();
        d.start_workload().unwrap();
        let mut copy = Copy::new(pages);
        copy.take(&d, &(0..pages).collect::<Vec<_>>());
        let mut sent = 0;
        for round in 0..30 {
            let g = d.generation();
            wait_for("writes", || d.generation() > g + 200);
            if balloon && round == 10 {
                d.balloon_out(100..164).unwrap();
            }
            d.logdirty_clean(&mut bits).unwrap();
            let dirty = ones(&bits);
            sent += dirty.len();
            copy.take(&d, &dirty);
        }
        d.pause().unwrap();
        d.logdirty_clean(&mut bits).unwrap();
        copy.take(&d, &ones(&bits));
        let mut buf = vec![0u8; PAGE_SIZE];
        for pfn in 0..pages {
            let populated = d.read_page(pfn, &mut buf).unwrap();
            assert_eq!(
                populated, copy.populated[pfn as usize],
                "{pattern:?}: pfn {pfn} population"
            );
            assert!(
                buf == copy.data[pfn as usize * PAGE_SIZE..][..PAGE_SIZE],
                "{pattern:?}: pfn {pfn} differs"
            );
        }
        assert!(
            sent > 0 && d.generation() > 6000,
            "{pattern:?}: the writers ran during pre-copy"
        );
        d.unpause().unwrap();
        assert!(d.stop_workload() > 0);
    }
}

#[test]
fn pause_stops_writers_and_nests() {
    let d = sim(1024, AccessPattern::Uniform, 2);
    d.start_workload().unwrap();
    wait_for("writes", || d.generation() > 100);
    d.pause().unwrap();
    d.pause().unwrap();
    assert!(d.info().unwrap().paused);
    let (g, digests) = (d.generation(), d.digests());
    std::thread::sleep(Duration::from_millis(30));
    d.unpause().unwrap();
    assert!(
        d.info().unwrap().paused,
        "one of two unpauses leaves it paused"
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(d.digests(), digests, "memory is stable while paused");
    let progress: u64 = d.writer_progress().iter().sum();
    assert_eq!(d.generation(), g, "no write starts while paused");
    d.unpause().unwrap();
    assert!(!d.info().unwrap().paused);
    assert!(matches!(
        d.unpause(),
        Err(xckpt::hv::HvError::Op { op: "unpause", .. })
    ));
    wait_for("writers to resume", || {
        d.writer_progress().iter().sum::<u64>() > progress + 100
    });
    d.stop_workload();
}

#[test]
fn auto_truth_records_each_outermost_pause() {
    let d = sim(512, AccessPattern::Uniform, 1);
    d.set_auto_truth(Some(TruthMode::Full));
    d.start_workload().unwrap();
    for _ in 0..3 {
        let g = d.generation();
        wait_for("writes", || d.generation() > g + 50);
        d.pause().unwrap();
        d.pause().unwrap();
        d.unpause().unwrap();
        let t = d.truths().pop().unwrap();
        assert_eq!(t.digests, d.digests());
        assert_eq!(t.generation, d.generation());
        let mut buf = vec![0u8; PAGE_SIZE];
        d.read_page(7, &mut buf).unwrap();
        assert_eq!(t.page(7).unwrap(), &buf[..]);
        d.unpause().unwrap();
    }
    let labels: Vec<String> = d.truths().into_iter().map(|t| t.label).collect();
    assert_eq!(labels, ["pause#0", "pause#1", "pause#2"]);
    assert_eq!(d.truths()[0].digests[400], UNPOPULATED_DIGEST);
    d.stop_workload();
}

#[test]
fn workloads_pick_the_right_pages() {
    let pages = 4096;
    let populated = (pages - pages / 16) as usize;
    let run = |pattern, writes: u64| {
        let d = sim(pages, pattern, 1);
        d.logdirty_enable().unwrap();
        d.start_workload().unwrap();
        wait_for("writes", || d.generation() >= writes);
        d.pause().unwrap();
        let written = d.generation();
        let bits = bits_after(&d);
        d.unpause().unwrap();
        d.stop_workload();
        (written, ones(&bits))
    };
    let (_, hot) = run(
        AccessPattern::HotSet {
            hot_fraction: 0.05,
            hot_probability: 1.0,
        },
        3000,
    );
    assert!(
        hot.len() <= (populated as f64 * 0.05).ceil() as usize,
        "{} pages outside the hot set",
        hot.len()
    );
    let (written, seq) = run(AccessPattern::Sequential, 100);
    let hole = (pages * 3 / 4)..(pages * 3 / 4 + pages / 16);
    let want: Vec<Pfn> = (0..pages)
        .filter(|p| !hole.contains(p))
        .take(written as usize)
        .collect();
    assert_eq!(seq, want, "one sequential writer dirties a prefix");
    let (_, uniform) = run(AccessPattern::Uniform, 3000);
    assert!(
        uniform.len() > hot.len() * 4,
        "uniform writes spread ({} pages)",
        uniform.len()
    );
}

#[test]
fn rate_limit_is_roughly_respected() {
    let d = sim(1024, AccessPattern::Uniform, 2);
    let spec = WorkloadSpec {
        pattern: AccessPattern::Uniform,
        rate_mib_s: 4.0,
    };
    let start = Instant::now();
    d.start_workload_with(&spec, 2).unwrap();
    wait_for("writes", || d.generation() > 10);
    std::thread::sleep(Duration::from_millis(200));
    let written = d.stop_workload();
    let allowed = 4.0 * 256.0 * start.elapsed().as_secs_f64();
    // Only an upper bound: a slow machine writes less, never more than the limit (+ bursts).
    assert!(
        (written as f64) <= allowed * 1.5 + 64.0,
        "{written} pages written, {allowed} allowed"
    );
}

/// An image held in memory, built from a paused sim.
struct MemImage {
    states: Vec<PageState>,
    data: Vec<u8>,
    blobs: Vec<StateBlob>,
    config: Vec<u8>,
}

impl MemImage {
    fn of(d: &SimDomain, evict: Pfn) -> Self {
        let n = d.info().unwrap().pfn_count;
        let mut data = vec![0u8; n as usize * PAGE_SIZE];
        let states = (0..n)
            .map(|pfn| {
                let buf = &mut data[pfn as usize * PAGE_SIZE..][..PAGE_SIZE];
                match d.read_page(pfn, buf).unwrap() {
                    false => PageState::Unpopulated,
                    true if pfn == evict => PageState::Evicted(EvictPolicy::Free),
                    true if buf.iter().all(|&b| b == 0) => PageState::Zero,
                    true => PageState::Data(0),
                }
            })
            .collect();
        MemImage {
            states,
            data,
            blobs: d.save_state().unwrap(),
            config: d.config().unwrap(),
        }
    }
}

impl Image for MemImage {
    fn pfn_count(&self) -> u64 {
        self.states.len() as u64
    }
    fn guest_type(&self) -> xckpt::hv::GuestType {
        xckpt::hv::GuestType::Pvh
    }
    fn vcpus(&self) -> u32 {
        2
    }
    fn page_state(&self, pfn: Pfn) -> PageState {
        self.states[pfn as usize]
    }
    fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError> {
        match self.states[pfn as usize] {
            PageState::Data(_) => {
                buf.copy_from_slice(&self.data[pfn as usize * PAGE_SIZE..][..PAGE_SIZE])
            }
            _ => buf.fill(0),
        }
        Ok(())
    }
    fn state_blobs(&self) -> &[StateBlob] {
        &self.blobs
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
}

#[test]
fn from_image_round_trip() {
    let d = sim(1024, AccessPattern::Uniform, 2);
    d.start_workload().unwrap();
    wait_for("writes", || d.generation() > 500);
    d.pause().unwrap();
    d.balloon_out(5..9).unwrap();
    let at = d.record_truth("checkpoint", TruthMode::Digest);
    let truth = d.truths()[at].clone();
    assert_eq!(truth.label, "checkpoint");
    let zero = page_digest(&[0; PAGE_SIZE]);
    let evict = truth
        .digests
        .iter()
        .position(|&g| g != zero && g != UNPOPULATED_DIGEST)
        .unwrap() as Pfn;
    let image = MemImage::of(&d, evict);
    let r = SimDomain::from_image(&image).unwrap();
    assert!(r.info().unwrap().paused, "a restored sim starts paused");
    assert_eq!(r.generation(), d.generation());
    assert_eq!(r.truths().len(), 0);
    let mut want = truth.digests.clone();
    want[evict as usize] = zero;
    assert_eq!(r.digests(), want);
    assert_eq!(truth.differing(&r.digests()), vec![evict]);
    assert_eq!(r.sim_config().populated, d.sim_config().populated);
    assert_eq!(r.sim_config().workload, d.sim_config().workload);
    assert_ne!(r.identity().instance, d.identity().instance);
    let blob = &r.save_state().unwrap()[0];
    assert_eq!(blob.kind, state_kind::SIM_CPU);
    assert_eq!(
        SimCpuState::decode(&blob.data).unwrap().generation,
        d.generation()
    );
    r.unpause().unwrap();
    d.unpause().unwrap();
    d.stop_workload();
}

/// Not a test of speed (no assertion): prints one writer's dirty rate. Run with --ignored.
#[test]
#[ignore]
fn writer_throughput() {
    let d = sim(65536, AccessPattern::Uniform, 1);
    d.logdirty_enable().unwrap();
    let start = Instant::now();
    d.start_workload().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pages = d.stop_workload();
    let mib = pages as f64 * PAGE_SIZE as f64 / (1 << 20) as f64;
    println!(
        "one writer: {:.0} MiB/s",
        mib / start.elapsed().as_secs_f64()
    );
    let batch: Vec<Pfn> = (0..65536).collect();
    let counter = AtomicU64::new(0);
    let t = Instant::now();
    for chunk in batch.chunks(1024) {
        let mut types = vec![PageType::Normal; chunk.len()];
        d.page_types(chunk, &mut types).unwrap();
        let b = d.map_batch(chunk).unwrap();
        let mut buf = vec![0u8; PAGE_SIZE];
        for i in 0..b.len() {
            if let Ok(p) = b.page(i) {
                p.copy_to(&mut buf);
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let gib = counter.load(Ordering::Relaxed) as f64 * PAGE_SIZE as f64 / (1u64 << 30) as f64;
    println!(
        "page_types + map + copy: {:.2} GiB/s",
        gib / t.elapsed().as_secs_f64()
    );
    let spec = WorkloadSpec {
        pattern: AccessPattern::Uniform,
        rate_mib_s: 100.0,
    };
    let start = Instant::now();
    d.start_workload_with(&spec, 2).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pages = d.stop_workload();
    let mib = pages as f64 * PAGE_SIZE as f64 / (1 << 20) as f64;
    println!(
        "limited to 100 MiB/s: {:.1} MiB/s",
        mib / start.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let big = SimDomain::new(SimConfig::small(1 << 18)).unwrap();
    println!("creating a 1 GiB sim: {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    big.digests();
    println!("digests of 1 GiB: {:.2} s", t.elapsed().as_secs_f64());
}

#[test]
fn fault_switches_fail_their_operation_and_nothing_else() {
    let dom = std::sync::Arc::new(SimDomain::new(SimConfig::small(64)).unwrap());
    let f = dom.faults();
    f.fail_pause.store(true, Ordering::SeqCst);
    assert!(dom.pause().is_err());
    assert!(!dom.info().unwrap().paused, "a failed pause pauses nothing");
    f.fail_pause.store(false, Ordering::SeqCst);

    f.fail_save_state.store(true, Ordering::SeqCst);
    assert!(dom.save_state().is_err());
    f.fail_save_state.store(false, Ordering::SeqCst);
    assert!(dom.save_state().is_ok());

    f.fail_ready_for_stop.store(true, Ordering::SeqCst);
    assert!(dom.ready_for_stop().is_err());
    assert_eq!(f.stop_sessions_open.load(Ordering::SeqCst), 0);
    f.fail_ready_for_stop.store(false, Ordering::SeqCst);
    dom.ready_for_stop().unwrap();
    assert_eq!(f.stop_sessions_open.load(Ordering::SeqCst), 1);
    dom.stop_over();
    dom.stop_over();
    assert_eq!(f.stop_sessions_open.load(Ordering::SeqCst), 0);

    f.fail_map_when_paused.store(true, Ordering::SeqCst);
    assert!(dom.map_batch(&[1]).is_ok(), "running: mapping works");
    dom.pause().unwrap();
    assert!(dom.map_batch(&[1]).is_err());
    dom.unpause().unwrap();

    // Log-dirty goes off before the second CLEAN; the hook runs after each good one.
    let hooked = std::sync::Arc::new(AtomicU64::new(0));
    let h = hooked.clone();
    f.after_clean(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    f.disable_logdirty_at_clean.store(2, Ordering::SeqCst);
    dom.logdirty_enable().unwrap();
    let mut bits = PfnBitmap::new();
    dom.logdirty_clean(&mut bits).unwrap();
    assert!(dom.logdirty_clean(&mut bits).is_err());
    assert!(!dom.logdirty_enabled().unwrap());
    assert_eq!(f.cleans.load(Ordering::SeqCst), 2);
    assert_eq!(hooked.load(Ordering::SeqCst), 1);
}
