//! The simulated domain: real memory in this process, writer threads as the "guest", and
//! log-dirty, pause and mapping semantics that follow Xen's.
//!
//! * Memory is an [`AnonMapping`] of `pfn_count` pages. Populated pfns are tracked in a bitmap;
//!   holes and ballooned-out pages are unpopulated (mapping them fails with `ENOENT`, as a
//!   foreign map of a missing gfn does on Xen).
//! * Writers ([`SimDomain::start_workload`]) pick a populated page, write a whole new page of
//!   content derived from `(pfn, generation)`, and *then* set its log-dirty bit. Because of this
//!   write-then-mark order, a write that a copy made after a CLEAN did not see is reported by a
//!   later CLEAN: the property live pre-copy relies on.
//! * Log-dirty follows `xen/arch/x86/mm/paging.c`: enabling starts from an empty bitmap and,
//!   like Xen, briefly pauses the writers while switching; disabling frees (clears) the bitmap;
//!   CLEAN swaps every word with zero atomically and returns what was set. Differences, chosen
//!   and documented: Xen's ENABLE fails with `EINVAL` when log-dirty is already on (libxc then
//!   turns it off and on again, losing the bitmap); the trait requires "already on" to succeed,
//!   so the sim makes it a no-op that keeps the bitmap (never loses dirty bits). A CLEAN while
//!   log-dirty is off fails with `EINVAL` (the Xen back-end may see an empty bitmap instead),
//!   so a capture that forgot to enable tracking fails loudly on the sim.
//! * Pause counts nest like Xen's controller pause count; an unpause of an unpaused domain fails
//!   with `EINVAL`. [`crate::hv::Domain::pause`] returns only once no write is in progress.
//! * Ground truth ([`Truth`]) is recorded on demand or automatically at each outermost pause.

mod agent;
mod backend;
mod bitmap;
mod config;
mod content;
mod faults;
mod gate;
mod image;
mod truth;
mod workload;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use agent::{Hook, SimAgent};
pub use backend::SimBatch;
pub use config::{AccessPattern, ContentSpec, SimConfig, TruthMode, WorkloadSpec};
pub use faults::SimFaults;
pub use image::SimCpuState;
pub use truth::{page_digest, Truth, UNPOPULATED_DIGEST};

use crate::guestmem::AnonMapping;
use crate::hv::{DomainIdentity, PAGE_SIZE};
use crate::layer::LayerReadError;
use bitmap::AtomicBitmap;
use content::ContentGen;
use gate::Gate;
use workload::Workers;

/// An error building or driving a simulated domain.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is inconsistent.
    #[error("sim domain {name}: invalid configuration: {reason}")]
    Config {
        /// Domain name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The guest memory could not be mapped.
    #[error("sim domain {name}: cannot map {pages} pages of guest memory: {source}")]
    Map {
        /// Domain name.
        name: String,
        /// Pages requested.
        pages: u64,
        /// The cause.
        source: std::io::Error,
    },
    /// A page of the image to restore could not be read.
    #[error("sim domain {name}: reading pfn {pfn:#x} of the image failed: {source}")]
    ImageRead {
        /// Domain name.
        name: String,
        /// The pfn.
        pfn: u64,
        /// The cause.
        source: LayerReadError,
    },
    /// A pfn argument is out of range or not populated.
    #[error("sim domain {name}: pfn {pfn:#x}: {reason}")]
    Pfn {
        /// Domain name.
        name: String,
        /// The pfn.
        pfn: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A writer thread could not be started.
    #[error("sim domain {name}: cannot start a writer thread: {source}")]
    Spawn {
        /// Domain name.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// State shared by the domain handle and its writer threads.
pub(crate) struct Inner {
    name: String,
    pfn_count: u64,
    mem: AnonMapping,
    populated: AtomicBitmap,
    dirty: AtomicBitmap,
    logdirty: AtomicBool,
    logdirty_switch: Mutex<()>,
    gate: Gate,
    /// Controller pause count (what `pause`/`unpause` nest on).
    pauses: Mutex<u32>,
    generation: AtomicU64,
    content: ContentGen,
    truths: Mutex<Vec<Truth>>,
    auto_truth: Mutex<Option<TruthMode>>,
    /// Nanoseconds spent taking the snapshots `auto_truth` takes inside a pause: the
    /// observer's own pass over memory, which a hypervisor's pause does not make.
    auto_truth_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Write a page, then mark it dirty if log-dirty is on (write-then-mark).
    #[inline]
    fn write_and_mark(&self, pfn: u64, data: &[u8]) {
        self.mem.page_mut(pfn).write_from(data);
        self.mark(pfn);
    }

    #[inline]
    fn mark(&self, pfn: u64) {
        if self.logdirty.load(Ordering::SeqCst) {
            self.dirty.set(pfn);
        }
    }

    fn record(&self, label: String, mode: TruthMode) -> usize {
        let t = truth::snapshot(self, label, mode);
        let mut truths = lock(&self.truths);
        truths.push(t);
        truths.len() - 1
    }
}

static NEXT_DOMID: AtomicU32 = AtomicU32::new(1);

/// A simulated domain. Implements [`crate::hv::Checkpointable`].
pub struct SimDomain {
    inner: Arc<Inner>,
    cfg: Mutex<SimConfig>,
    identity: Mutex<DomainIdentity>,
    workers: Mutex<Option<Workers>>,
    faults: SimFaults,
}

fn new_identity(name: &str, seed: u64) -> DomainIdentity {
    let domid = NEXT_DOMID.fetch_add(1, Ordering::Relaxed);
    let a = content::mix(seed, u64::from(domid), 0x5549_4430);
    let b = content::mix(seed, u64::from(domid), 0x5549_4431);
    let uuid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    );
    DomainIdentity {
        name: name.to_string(),
        domid,
        instance: format!("sim:{domid}:{uuid}:{:x}", b >> 20),
        uuid,
    }
}

impl SimDomain {
    /// Build a running (unpaused), writer-less domain and fill its populated pages with initial
    /// content (generation 0; about `content.zero_fraction` of them stay zero). Start writers
    /// with [`SimDomain::start_workload`].
    pub fn new(cfg: SimConfig) -> Result<SimDomain, SimError> {
        let dom = SimDomain::empty(cfg)?;
        let inner = &*dom.inner;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8) as u64;
        let per = inner.pfn_count.div_ceil(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let mut buf = vec![0u8; PAGE_SIZE];
                    for pfn in t * per..((t + 1) * per).min(inner.pfn_count) {
                        if inner.populated.get(pfn) && inner.content.fill(pfn, 0, &mut buf) {
                            inner.mem.page_mut(pfn).write_from(&buf);
                        }
                    }
                });
            }
        });
        Ok(dom)
    }

    /// A domain with the populated ranges of `cfg` set, all pages zero.
    fn empty(cfg: SimConfig) -> Result<SimDomain, SimError> {
        cfg.validate().map_err(|reason| SimError::Config {
            name: cfg.name.clone(),
            reason,
        })?;
        let mem = AnonMapping::new(cfg.pfn_count).map_err(|source| SimError::Map {
            name: cfg.name.clone(),
            pages: cfg.pfn_count,
            source,
        })?;
        let populated = AtomicBitmap::new(cfg.pfn_count);
        for r in &cfg.populated {
            r.clone().for_each(|p| {
                populated.set(p);
            });
        }
        let inner = Inner {
            name: cfg.name.clone(),
            pfn_count: cfg.pfn_count,
            mem,
            populated,
            dirty: AtomicBitmap::new(cfg.pfn_count),
            logdirty: AtomicBool::new(false),
            logdirty_switch: Mutex::new(()),
            gate: Gate::new(),
            pauses: Mutex::new(0),
            generation: AtomicU64::new(0),
            content: ContentGen::new(cfg.seed, &cfg.content),
            truths: Mutex::new(Vec::new()),
            auto_truth: Mutex::new(cfg.auto_truth),
            auto_truth_ns: AtomicU64::new(0),
        };
        Ok(SimDomain {
            identity: Mutex::new(new_identity(&cfg.name, cfg.seed)),
            inner: Arc::new(inner),
            cfg: Mutex::new(cfg),
            workers: Mutex::new(None),
            faults: SimFaults::default(),
        })
    }

    /// The fault switches of this domain (tests).
    pub fn faults(&self) -> &SimFaults {
        &self.faults
    }

    /// The configuration, with `populated` as it is now.
    pub fn sim_config(&self) -> SimConfig {
        let mut cfg = lock(&self.cfg).clone();
        cfg.populated = self.inner.populated.ranges();
        cfg
    }

    /// Start the configured workload (`cfg.workload` with `cfg.writers` threads). Stops a
    /// running one first.
    pub fn start_workload(&self) -> Result<(), SimError> {
        let (spec, writers) = {
            let cfg = lock(&self.cfg);
            (cfg.workload.clone(), cfg.writers)
        };
        self.start_workload_with(&spec, writers)
    }

    /// Start `writers` threads running `spec` (recorded in the config). Stops a running one first.
    pub fn start_workload_with(&self, spec: &WorkloadSpec, writers: usize) -> Result<(), SimError> {
        self.stop_workload();
        let seed = {
            let mut cfg = lock(&self.cfg);
            cfg.workload = spec.clone();
            cfg.writers = writers;
            cfg.validate().map_err(|reason| SimError::Config {
                name: cfg.name.clone(),
                reason,
            })?;
            cfg.seed ^ self.inner.generation.load(Ordering::Relaxed)
        };
        let w =
            Workers::start(&self.inner, spec, writers, seed).map_err(|source| SimError::Spawn {
                name: self.inner.name.clone(),
                source,
            })?;
        *lock(&self.workers) = Some(w);
        Ok(())
    }

    /// Stop and join the writers (waking them if paused). Returns the pages they wrote.
    pub fn stop_workload(&self) -> u64 {
        let taken = lock(&self.workers).take();
        taken.map_or(0, |mut w| w.stop_and_join(&self.inner))
    }

    /// Pages written by each writer of the running (or last stopped) workload.
    pub fn writer_progress(&self) -> Vec<u64> {
        lock(&self.workers)
            .as_ref()
            .map(Workers::progress)
            .unwrap_or_default()
    }

    /// The write generation counter: pages written by writers since creation (or restore).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    fn check_pfn(&self, pfn: u64, populated: bool) -> Result<(), SimError> {
        let err = |reason| {
            Err(SimError::Pfn {
                name: self.inner.name.clone(),
                pfn,
                reason,
            })
        };
        if pfn >= self.inner.pfn_count {
            return err("beyond pfn_count");
        }
        if populated && !self.inner.populated.get(pfn) {
            return err("not populated");
        }
        Ok(())
    }

    /// Write one page (4096 bytes) and mark it dirty, like a device-model write: it works while
    /// the domain is paused, and a concurrent pause waits for it. The pfn must be populated.
    pub fn write_page(&self, pfn: u64, data: &[u8]) -> Result<(), SimError> {
        assert_eq!(data.len(), PAGE_SIZE, "write_page takes exactly one page");
        self.check_pfn(pfn, true)?;
        let _w = self.inner.gate.enter_forced();
        self.inner.write_and_mark(pfn, data);
        Ok(())
    }

    /// Copy page `pfn` into `buf` (4096 bytes). Returns whether it is populated (zeros if not).
    pub fn read_page(&self, pfn: u64, buf: &mut [u8]) -> Result<bool, SimError> {
        self.check_pfn(pfn, false)?;
        if !self.inner.populated.get(pfn) {
            buf.fill(0);
            return Ok(false);
        }
        self.inner.mem.page(pfn).copy_to(buf);
        Ok(true)
    }

    /// Balloon out `range`: unpopulate it, give the memory back (it reads as zeros if
    /// re-populated) and mark it dirty. Writers are held off meanwhile.
    pub fn balloon_out(&self, range: Range<u64>) -> Result<(), SimError> {
        self.change_population(range, false)
    }

    /// Populate `range` (zero-filled pages) and mark it dirty.
    pub fn populate(&self, range: Range<u64>) -> Result<(), SimError> {
        self.change_population(range, true)
    }

    fn change_population(&self, range: Range<u64>, populate: bool) -> Result<(), SimError> {
        if range.end > self.inner.pfn_count || range.start > range.end {
            return Err(SimError::Pfn {
                name: self.inner.name.clone(),
                pfn: range.end,
                reason: "range beyond pfn_count",
            });
        }
        let inner = &self.inner;
        inner.gate.hold();
        for pfn in range.clone() {
            let changed = if populate {
                inner.populated.set(pfn)
            } else {
                inner.populated.clear(pfn)
            };
            if changed {
                inner.mark(pfn);
            }
        }
        if !populate {
            inner.mem.discard(range.start, range.end - range.start);
        }
        inner.gate.release();
        Ok(())
    }

    /// Record a ground-truth snapshot now (call it while paused for a meaningful one). Returns
    /// its index in [`SimDomain::truths`].
    pub fn record_truth(&self, label: &str, mode: TruthMode) -> usize {
        self.inner.record(label.to_string(), mode)
    }

    /// Record a snapshot automatically at each outermost pause (`None`: stop doing so).
    pub fn set_auto_truth(&self, mode: Option<TruthMode>) {
        *lock(&self.inner.auto_truth) = mode;
        lock(&self.cfg).auto_truth = mode;
    }

    /// Time spent so far in the snapshots taken automatically at a pause
    /// ([`SimDomain::set_auto_truth`]). They run inside [`crate::hv::Domain::pause`], so a
    /// caller that times its pause, or a whole checkpoint, times them too: the bench takes
    /// them out of its figures.
    pub fn auto_truth_time(&self) -> Duration {
        Duration::from_nanos(self.inner.auto_truth_ns.load(Ordering::SeqCst))
    }

    /// The recorded snapshots, oldest first.
    pub fn truths(&self) -> Vec<Truth> {
        lock(&self.inner.truths).clone()
    }

    /// Digests of memory now, one per pfn ([`UNPOPULATED_DIGEST`] for holes).
    pub fn digests(&self) -> Vec<u64> {
        truth::snapshot(&self.inner, String::new(), TruthMode::Digest).digests
    }

    /// This incarnation's identity.
    pub fn identity(&self) -> DomainIdentity {
        lock(&self.identity).clone()
    }

    /// Pretend the domain was re-created: new domid, uuid and instance, same name and memory.
    pub fn reincarnate(&self) {
        let seed = lock(&self.cfg).seed;
        *lock(&self.identity) = new_identity(&self.inner.name, seed);
    }

    /// Whether log-dirty is on, without the `Result` of the trait method.
    fn logdirty_on(&self) -> bool {
        self.inner.logdirty.load(Ordering::SeqCst)
    }
}

impl Drop for SimDomain {
    fn drop(&mut self) {
        self.stop_workload();
    }
}
