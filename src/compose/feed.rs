//! The data pages of a composed image in ascending pfn order, each needed frame decoded once,
//! by worker threads that read ahead of the consumer.
//!
//! At start the feed plans, per layer, the frames that hold at least one page the image reads
//! from that layer (its *live* pages); frames holding only superseded copies are never read.
//! The plan is ordered by the lowest live pfn of each frame, which is the order a pfn-ordered
//! consumer (the stream writer) first needs them. Workers take frames from the plan in that
//! order, at most [`FeedOptions::read_ahead`] frames beyond the one the consumer waits for,
//! and decode each with [`LayerReader::decode`], the one place that checks a frame's integrity
//! (checksum, decoding, every page's digest). A decoded frame is kept until its last live page
//! has been handed out, so memory holds the frames whose live pfns interleave at the
//! consumer's position (a few for layers written in pfn order, as capture writes them).
//!
//! The first integrity failure in plan order is returned by [`PageFeed::page`]; the consumer
//! stops there, so nothing after a damaged page is streamed. The feed's one pass checks every
//! page's digest ([`FrameCheck::Pages`]): that proves each page handed out is the captured one;
//! the frames' check codes, which name a damaged frame, are `verify`'s.
//!
//! Decoded frames live in buffers that go back to a pool when their last page is dropped (the
//! pool keeps every one: their number is the most in use at once), and each worker reuses one
//! buffer for encoded bytes: a restore allocates (and, in a PV dom0, faults in through the
//! hypervisor) about read-ahead frames' worth of memory once, not a frame's worth per frame.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;

use super::ComposedImage;
use crate::hv::{Pfn, PAGE_SIZE};
use crate::layer::{FrameCheck, LayerReadError};

/// Buffers of decoded frames, for reuse.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A decoded frame's buffer; back to its pool (if any) when dropped.
struct FrameBuf {
    data: Vec<u8>,
    pool: Option<Pool>,
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            let mut free = pool.lock().unwrap_or_else(|p| p.into_inner());
            free.push(std::mem::take(&mut self.data));
        }
    }
}

/// One page of a decoded frame, shared with the frame (no copy).
#[derive(Clone)]
pub struct PageRef {
    frame: Arc<FrameBuf>,
    at: usize,
}

impl PageRef {
    /// A page owned on its own (e.g. a copy that was changed).
    pub fn owned(page: Vec<u8>) -> Self {
        PageRef {
            frame: Arc::new(FrameBuf {
                data: page,
                pool: None,
            }),
            at: 0,
        }
    }

    /// The 4096 bytes of the page.
    pub fn bytes(&self) -> &[u8] {
        &self.frame.data[self.at..self.at + PAGE_SIZE]
    }
}

/// Something that hands out the data pages of an image in ascending pfn order.
pub trait PageSource {
    /// The page of `pfn`, which must be a data page of the image, asked for in ascending pfn
    /// order.
    fn page(&mut self, pfn: Pfn) -> Result<PageRef, LayerReadError>;
}

/// How many decode workers and how far ahead they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedOptions {
    /// Decode threads.
    pub workers: usize,
    /// Frames decoded ahead of the one the consumer waits for.
    pub read_ahead: usize,
}

impl Default for FeedOptions {
    /// Two workers at least (so reading a frame overlaps decoding one even on a one-CPU
    /// dom0), one per CPU up to 8; read-ahead of eight frames per worker (4 MiB with the
    /// default 64-page frames), two on a single CPU ([`ONE_CPU_READ_AHEAD`]).
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = cpus.clamp(2, 8);
        let per_worker = if cpus == 1 { ONE_CPU_READ_AHEAD } else { 8 };
        FeedOptions {
            workers,
            read_ahead: per_worker * workers,
        }
    }
}

/// Frames decoded ahead per worker on a single CPU, where nothing decodes beside the
/// consumer: a frame read ahead only waits, and its buffer is one more to fault in (in a PV
/// dom0, through the hypervisor). With eight, the three-layer restore of a PVH-like guest
/// faulted in 970 pages more (sim, one CPU); with several CPUs, eight per worker stays (the
/// sim bench's restore, two CPUs: 0.809-0.815 s against 0.828-0.834 s with two).
pub const ONE_CPU_READ_AHEAD: usize = 2;

/// A frame of one layer: (layer index, frame number).
type FrameId = (usize, usize);

/// Every frame of the image numbered in one sequence (layer 0's frames first): the index of
/// the flat tables the feed keeps per frame, so no lookup hashes.
struct FrameNumbers {
    /// The number of layer `i`'s frame 0.
    base: Vec<usize>,
    /// Frames in all.
    total: usize,
}

impl FrameNumbers {
    fn new(image: &ComposedImage) -> Self {
        let mut base = Vec::with_capacity(image.layers.len());
        let mut total = 0;
        for l in &image.layers {
            base.push(total);
            total += l.frame_count();
        }
        FrameNumbers { base, total }
    }

    fn of(&self, (layer, frame): FrameId) -> usize {
        self.base[layer] + frame
    }
}

/// What the workers share with the consumer.
struct Gate {
    state: Mutex<GateState>,
    wake: Condvar,
}

struct GateState {
    /// The next plan entry a worker takes.
    next: usize,
    /// Workers may take entries below this.
    allowed: usize,
    /// The consumer is gone: stop.
    stop: bool,
}

/// The pfn-ordered page feed of a [`ComposedImage`], decoding on scoped worker threads.
pub struct PageFeed<'a> {
    image: &'a ComposedImage,
    plan: Arc<Vec<FrameId>>,
    gate: Arc<Gate>,
    results: Receiver<(usize, Result<Vec<u8>, LayerReadError>)>,
    /// Decoded frames that arrived before their turn, by plan position.
    early: BTreeMap<usize, Result<Vec<u8>, LayerReadError>>,
    /// The next plan position the consumer takes.
    taken: usize,
    read_ahead: usize,
    /// Frames taken and still holding live pages not yet handed out, by frame number.
    held: Vec<Option<Arc<FrameBuf>>>,
    /// Free frame buffers (returned as the last page of a frame is dropped).
    pool: Pool,
    /// Live pages not yet handed out, by frame number.
    left: Vec<u32>,
    /// Every live page in pfn order, and the next one to hand out.
    live: Vec<Live>,
    next_live: usize,
    numbers: FrameNumbers,
    /// Frames decoded (each at most once).
    decoded: u64,
}

impl ComposedImage {
    /// The pfn-ordered feed of this image's data pages, with its workers in `scope`.
    pub fn feed<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        opts: FeedOptions,
    ) -> PageFeed<'env> {
        let numbers = FrameNumbers::new(self);
        let (plan, left, live) = self.frame_plan(&numbers);
        let plan = Arc::new(plan);
        let gate = Arc::new(Gate {
            state: Mutex::new(GateState {
                next: 0,
                allowed: opts.read_ahead.max(1),
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let (tx, rx) = channel();
        let workers = opts.workers.max(1).min(plan.len().max(1));
        let pool: Pool = Arc::default();
        for _ in 0..workers {
            let (plan, gate, tx, pool) = (plan.clone(), gate.clone(), tx.clone(), pool.clone());
            scope.spawn(move || decode_worker(self, &plan, &gate, &tx, &pool));
        }
        PageFeed {
            image: self,
            plan,
            gate,
            results: rx,
            early: BTreeMap::new(),
            taken: 0,
            read_ahead: opts.read_ahead.max(1),
            held: vec![None; numbers.total],
            pool,
            left,
            live,
            next_live: 0,
            numbers,
            decoded: 0,
        }
    }

    /// The frames holding live pages, ordered by their lowest live pfn; the number of live
    /// pages in each (by frame number); and every live page in pfn order, with where it is.
    ///
    /// One walk over the populated pfns, with a cursor per layer over that layer's data pages
    /// (in pfn order, with their slots): no per-pfn lookup of a slot, and no visit to the holes
    /// of a sparse pfn space (a PVH guest's million pfns for 65,000 pages).
    fn frame_plan(&self, numbers: &FrameNumbers) -> (Vec<FrameId>, Vec<u32>, Vec<Live>) {
        let mut first: Vec<(Pfn, FrameId)> = Vec::new();
        let mut left = vec![0u32; numbers.total];
        let mut live = Vec::new();
        let mut cursors: Vec<_> = self
            .layers
            .iter()
            .map(|l| l.index().data_slots().peekable())
            .collect();
        for pfn in self.populated.iter_ones().map(|i| i as Pfn) {
            let Some(i) = self.owner(pfn) else { continue };
            let cursor = &mut cursors[i];
            // This layer's data pages below `pfn` are superseded by a layer above.
            while cursor.next_if(|&(p, _)| p < pfn).is_some() {}
            let Some((_, slot)) = cursor.next_if(|&(p, _)| p == pfn) else {
                continue;
            };
            let layer = &self.layers[i];
            let Some(frame) = layer.frame_of_slot(slot) else {
                continue;
            };
            let id = (i, frame);
            let n = numbers.of(id);
            if left[n] == 0 {
                first.push((pfn, id));
            }
            left[n] += 1;
            live.push(Live {
                pfn,
                frame: n,
                at: (slot - layer.frame_slots(frame).start) as usize * PAGE_SIZE,
            });
        }
        // Pfns come in ascending order: each frame's first is its lowest.
        first.sort_unstable();
        (first.into_iter().map(|(_, id)| id).collect(), left, live)
    }
}

/// A live page of the image: its pfn, the number of its frame and its byte offset there.
#[derive(Debug, Clone, Copy)]
struct Live {
    pfn: Pfn,
    frame: usize,
    at: usize,
}

/// Take plan entries in order while the gate allows, decode (into a pooled buffer), send.
fn decode_worker(
    image: &ComposedImage,
    plan: &[FrameId],
    gate: &Gate,
    tx: &Sender<(usize, Result<Vec<u8>, LayerReadError>)>,
    pool: &Pool,
) {
    let mut encoded = Vec::new();
    loop {
        let at = {
            let mut st = gate.state.lock().unwrap_or_else(|p| p.into_inner());
            while !st.stop && st.next < plan.len() && st.next >= st.allowed {
                st = gate.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.stop || st.next >= plan.len() {
                return;
            }
            st.next += 1;
            st.next - 1
        };
        let (layer, frame) = plan[at];
        let mut out = pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        let result = image.layers[layer]
            .decode_into(frame, FrameCheck::Pages, &mut encoded, &mut out)
            .map(|()| out);
        if tx.send((at, result)).is_err() {
            return;
        }
    }
}

impl PageFeed<'_> {
    /// Frames decoded so far (each needed frame once).
    pub fn frames_decoded(&self) -> u64 {
        self.decoded
    }

    /// Frames the image needs in all.
    pub fn frames_needed(&self) -> usize {
        self.plan.len()
    }

    /// Take the next plan entry, in order, waiting for a worker to deliver it.
    fn take_next(&mut self) -> Result<(), LayerReadError> {
        let at = self.taken;
        let result = loop {
            if let Some(r) = self.early.remove(&at) {
                break r;
            }
            match self.results.recv() {
                Ok((k, r)) if k == at => break r,
                Ok((k, r)) => {
                    self.early.insert(k, r);
                }
                Err(_) => {
                    return Err(LayerReadError::FrameDecode {
                        path: self.image.layers[self.plan[at].0].path().to_path_buf(),
                        frame: self.plan[at].1 as u64,
                        reason: "the decode workers stopped before this frame".into(),
                    })
                }
            }
        };
        self.taken += 1;
        {
            let mut st = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
            st.allowed = self.taken + self.read_ahead;
        }
        self.gate.wake.notify_all();
        self.decoded += 1;
        let buf = FrameBuf {
            data: result?,
            pool: Some(self.pool.clone()),
        };
        let n = self.numbers.of(self.plan[at]);
        self.held[n] = Some(Arc::new(buf));
        Ok(())
    }
}

impl PageSource for PageFeed<'_> {
    fn page(&mut self, pfn: Pfn) -> Result<PageRef, LayerReadError> {
        let next = self.live.get(self.next_live).copied();
        let Some(Live { frame: n, at, .. }) = next.filter(|l| l.pfn == pfn) else {
            let owner = self.image.owner(pfn).unwrap_or(self.image.layers.len() - 1);
            return Err(LayerReadError::BadIndex {
                path: self.image.layers[owner].path().to_path_buf(),
                reason: format!(
                    "pfn {pfn:#x} is not the next data page of the image (that is {})",
                    next.map_or("none".into(), |l| format!("{:#x}", l.pfn))
                ),
            });
        };
        self.next_live += 1;
        while self.held[n].is_none() {
            if self.taken >= self.plan.len() {
                return Err(LayerReadError::BadIndex {
                    path: self.image.layers[owner_of(&self.numbers, n)]
                        .path()
                        .to_path_buf(),
                    reason: format!("pfn {pfn:#x}: its frame is not in the plan"),
                });
            }
            self.take_next()?;
        }
        let left = &mut self.left[n];
        *left = left.saturating_sub(1);
        let frame = if *left == 0 {
            self.held[n].take()
        } else {
            self.held[n].clone()
        };
        let frame = frame.ok_or_else(|| LayerReadError::BadIndex {
            path: self.image.layers[owner_of(&self.numbers, n)]
                .path()
                .to_path_buf(),
            reason: format!("pfn {pfn:#x}: its frame was released"),
        })?;
        Ok(PageRef { frame, at })
    }
}

/// The layer of frame number `n`.
fn owner_of(numbers: &FrameNumbers, n: usize) -> usize {
    numbers.base.partition_point(|&b| b <= n).saturating_sub(1)
}

impl Drop for PageFeed<'_> {
    /// Stop the workers (they finish the frame in hand), so the scope can join them.
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        st.stop = true;
        drop(st);
        self.gate.wake.notify_all();
    }
}
