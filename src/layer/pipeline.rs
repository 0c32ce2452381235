//! The frame pipeline: page producer -> compress workers -> layer writer. A capture feeds it
//! guest pages; a fold or compaction of the store feeds it pages decoded from older layers.
//!
//! ```text
//!  producer thread           compress workers (N)             writer thread
//!  zero-check on the     --> page digests; zstd frame  --> reorder by seq, push frame,
//!  mapping, copy the          or the buffer itself, raw      set index entries (last wins)
//!  rest into a chunk          (bounded channel)
//!        ^--------------- empty buffers come back through a pool ----------------'
//! ```
//!
//! Chunks carry a sequence number; the writer applies them strictly in order, so a pfn sent in
//! a later round always overrides its copy from an earlier round. Memory is bounded by the
//! channel depths and the buffer pool. A page's bytes are copied once from the guest into a
//! chunk buffer; a raw frame is that buffer, handed to the writer and back to the pool. How
//! frames are encoded is the [`Tuner`]'s choice ([`super::encode`]); every stage is timed on
//! one [`StageClock`].

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use super::encode::{thread_cpu, Encoding, EncodingUsed, Stage, StageClock, StageTimes, Tuner};
use super::frame::encode_frame;
use super::{Codec, DigestKind, LayerIndex, LayerWriteError, LayerWriter, PageEntry};
use crate::hv::{Pfn, PfnBitmap, PAGE_SIZE};

/// Compress workers by default: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Content the chain already holds, for resync layers: pages equal to it are not stored again.
pub trait Baseline: Sync {
    /// Whether the chain's copy of `pfn` equals `data` (`None`: the pfn is unpopulated now).
    fn same(&self, pfn: Pfn, data: Option<&[u8]>) -> bool;
}

/// Pages copied from the guest, plus index entries for pages that carry no data.
pub struct Chunk {
    seq: u64,
    pfns: Vec<Pfn>,
    data: Vec<u8>,
    entries: Vec<(Pfn, PageEntry)>,
}

impl Chunk {
    /// Pages in the chunk: with data, and recorded without (zero, unpopulated, evicted).
    pub fn pages_covered(&self) -> u64 {
        (self.pfns.len() + self.entries.len()) as u64
    }

    /// Drop the page copies of pfns set in `superseded` (their newer copies come in later
    /// chunks), so they are never encoded. Entries stay (a later chunk overrides them).
    /// Returns how many copies were dropped.
    pub fn drop_pages(&mut self, superseded: &PfnBitmap) -> usize {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.pfns.len() {
            if !superseded.get(self.pfns[i] as usize).is_some_and(|b| *b) {
                i += 1;
                continue;
            }
            // Move the last page into the hole: order inside a chunk is free.
            let last = self.pfns.len() - 1;
            if i != last {
                self.data
                    .copy_within(last * PAGE_SIZE..(last + 1) * PAGE_SIZE, i * PAGE_SIZE);
            }
            self.pfns.swap_remove(i);
            dropped += 1;
        }
        dropped
    }

    /// Page copies the chunk holds.
    pub fn pages(&self) -> usize {
        self.pfns.len()
    }
}

/// A chunk after compression.
struct Packed {
    seq: u64,
    pfns: Vec<Pfn>,
    frame: Option<super::Frame>,
    entries: Vec<(Pfn, PageEntry)>,
}

/// Builds chunks of `frame_pages` pages from copied guest pages.
pub struct ChunkBuilder {
    frame_pages: usize,
    next_seq: u64,
    cur: Chunk,
    pool: Receiver<Vec<u8>>,
    pool_tx: mpsc::Sender<Vec<u8>>,
    /// Store all-zero pages as data (`--evict` without `zero`).
    keep_zero: bool,
    clock: Arc<StageClock>,
}

impl ChunkBuilder {
    fn new(frame_pages: usize, clock: Arc<StageClock>) -> Self {
        let (pool_tx, pool) = mpsc::channel();
        let mut b = ChunkBuilder {
            frame_pages,
            next_seq: 0,
            cur: Chunk {
                seq: 0,
                pfns: Vec::new(),
                data: Vec::new(),
                entries: Vec::new(),
            },
            pool,
            pool_tx,
            keep_zero: false,
            clock,
        };
        b.cur = b.fresh();
        b
    }

    fn fresh(&mut self) -> Chunk {
        let mut data = self.pool.try_recv().unwrap_or_default();
        crate::guestmem::resize_for_overwrite(&mut data, self.frame_pages * PAGE_SIZE);
        let seq = self.next_seq;
        self.next_seq += 1;
        Chunk {
            seq,
            pfns: Vec::with_capacity(self.frame_pages),
            data,
            entries: Vec::new(),
        }
    }

    /// Add `pfn`'s content, which `copy` writes into the page-sized buffer it gets. Zero
    /// pages become entries, not data; pages equal to `baseline` (resync) are dropped.
    /// Returns a chunk once one is full.
    pub fn add_page(
        &mut self,
        pfn: Pfn,
        copy: impl FnOnce(&mut [u8]),
        baseline: Option<&dyn Baseline>,
    ) -> Option<Chunk> {
        let at = self.cur.pfns.len() * PAGE_SIZE;
        let dst = &mut self.cur.data[at..at + PAGE_SIZE];
        copy(dst);
        if baseline.is_some_and(|b| b.same(pfn, Some(dst))) {
            return None;
        }
        if !self.keep_zero && is_zero(dst) {
            self.cur.entries.push((pfn, PageEntry::Zero));
            return None;
        }
        self.cur.pfns.push(pfn);
        if self.cur.pfns.len() == self.frame_pages {
            let next = self.fresh();
            return Some(std::mem::replace(&mut self.cur, next));
        }
        None
    }

    /// Add `pfn`'s content, which `copy` writes into the page-sized buffer it gets, as data:
    /// the caller has already found it non-zero on the mapping (see [`Self::keeps_zero`]) and
    /// has no baseline. Returns a chunk once one is full.
    pub fn add_copied(&mut self, pfn: Pfn, copy: impl FnOnce(&mut [u8])) -> Option<Chunk> {
        let at = self.cur.pfns.len() * PAGE_SIZE;
        copy(&mut self.cur.data[at..at + PAGE_SIZE]);
        self.cur.pfns.push(pfn);
        if self.cur.pfns.len() == self.frame_pages {
            let next = self.fresh();
            return Some(std::mem::replace(&mut self.cur, next));
        }
        None
    }

    /// Whether all-zero pages are stored as data too.
    pub fn keeps_zero(&self) -> bool {
        self.keep_zero
    }

    /// The clock the pipeline's stages are timed on.
    pub fn clock(&self) -> &StageClock {
        &self.clock
    }

    /// Up to `max` buffers from the pool that can hold a whole chunk; smaller ones are dropped
    /// (they would be reallocated anyway).
    fn whole_pooled(&mut self, max: usize) -> Vec<Vec<u8>> {
        let len = self.frame_pages * PAGE_SIZE;
        let mut whole = Vec::new();
        while whole.len() < max {
            match self.pool.try_recv() {
                Ok(v) if v.capacity() >= len => whole.push(v),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        whole
    }

    /// Pages the buffers back in the pool now can hold.
    pub fn pooled_pages(&mut self) -> u64 {
        let whole = self.whole_pooled(usize::MAX);
        let pages = (whole.len() * self.frame_pages) as u64;
        for v in whole {
            let _ = self.pool_tx.send(v);
        }
        pages
    }

    /// Make sure buffers for about `pages` more pages exist and are faulted in, so that copying
    /// them later (under pause) costs only the copy. Buffers already back in the pool (written
    /// frames') were faulted in by their first use: only the shortfall is allocated.
    pub fn reserve(&mut self, pages: u64) {
        let chunks = pages.div_ceil(self.frame_pages as u64) as usize;
        let len = self.frame_pages * PAGE_SIZE;
        let mut ready = self.whole_pooled(chunks);
        let short = chunks - ready.len();
        // Faulted in now, not under pause (a plain zeroed allocation would only map the shared
        // zero page), and in one call per buffer rather than a fault per page.
        ready.extend((0..short).map(|_| crate::guestmem::prefaulted(len)));
        for v in ready {
            let _ = self.pool_tx.send(v);
        }
    }

    /// Store all-zero pages as data too (off by default: they become index entries).
    pub fn keep_zero_pages(&mut self, keep: bool) {
        self.keep_zero = keep;
    }

    /// Record an entry without data (zero, unpopulated, evicted) for `pfn`.
    pub fn add_entry(&mut self, pfn: Pfn, entry: PageEntry) {
        self.cur.entries.push((pfn, entry));
    }

    /// The partial chunk, if it holds anything.
    pub fn flush(&mut self) -> Option<Chunk> {
        if self.cur.pfns.is_empty() && self.cur.entries.is_empty() {
            return None;
        }
        let next = self.fresh();
        Some(std::mem::replace(&mut self.cur, next))
    }
}

/// Whether a copied page is all zeros (64-byte OR-reductions vectorise well).
fn is_zero(b: &[u8]) -> bool {
    b.chunks_exact(64)
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Figures of what the writer stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterFigures {
    /// Frames written.
    pub frames: u64,
    /// Page copies written (re-sent pages included).
    pub data_copies: u64,
    /// Uncompressed bytes of those copies.
    pub raw_bytes: u64,
    /// Encoded bytes of the frames.
    pub stored_bytes: u64,
}

/// What the writer thread hands back when the pipeline closes.
pub struct WriterOut {
    /// The layer being written (frames pushed, not finished).
    pub writer: LayerWriter,
    /// The page index, last entry per pfn.
    pub index: LayerIndex,
    /// Figures.
    pub figures: WriterFigures,
    /// How the frames were encoded.
    pub encoding: EncodingUsed,
    /// Time spent per stage.
    pub stages: StageTimes,
}

/// Chunks the writer has applied, and a condition variable signalled after each.
type Applied = Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>;

/// A running pipeline inside a thread scope.
pub struct Pipeline<'scope> {
    tx: Option<SyncSender<Chunk>>,
    /// Chunks sent so far, and how many of them the writer has applied.
    sent: u64,
    applied: Applied,
    workers: Vec<ScopedJoinHandle<'scope, ()>>,
    writer: Option<ScopedJoinHandle<'scope, Result<WriterOut, LayerWriteError>>>,
    tuner: Arc<Tuner>,
    clock: Arc<StageClock>,
}

impl<'scope> Pipeline<'scope> {
    /// Start `threads` compress workers encoding as `encoding` says and a writer over
    /// `writer`/`index`.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        writer: LayerWriter,
        index: LayerIndex,
        frame_pages: u32,
        encoding: Encoding,
        threads: usize,
    ) -> (Self, ChunkBuilder) {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::sync_channel::<Chunk>(threads * 2);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let (ptx, prx) = mpsc::sync_channel::<Packed>(threads * 2);
        let clock = Arc::new(StageClock::default());
        let tuner = Arc::new(match encoding {
            Encoding::Auto => Tuner::new(encoding, threads),
            Encoding::Level(l) => Tuner::fixed(l),
        });
        let builder = ChunkBuilder::new(frame_pages as usize, clock.clone());
        let kind = writer.digest_kind();
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx = rx.clone();
            let ptx = ptx.clone();
            let pool = builder.pool_tx.clone();
            let (tuner, clock) = (tuner.clone(), clock.clone());
            workers
                .push(scope.spawn(move || compress_worker(&rx, &ptx, &pool, &tuner, &clock, kind)));
        }
        drop(ptx);
        let applied = Applied::default();
        let stage = Stages {
            pool: builder.pool_tx.clone(),
            tuner: tuner.clone(),
            clock: clock.clone(),
            applied: applied.clone(),
        };
        let writer = scope.spawn(move || write_in_order(prx, writer, index, stage));
        (
            Pipeline {
                tx: Some(tx),
                sent: 0,
                applied,
                workers,
                writer: Some(writer),
                tuner,
                clock,
            },
            builder,
        )
    }

    /// Send a chunk to the workers (blocks when they are busy: back-pressure).
    pub fn send(&mut self, chunk: Chunk) -> Result<(), LayerWriteError> {
        let tx = self.tx.as_ref().expect("pipeline open");
        match tx.send(chunk) {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(_) => Err(self.cause()),
        }
    }

    /// Send a chunk if a worker can take it now; otherwise give it back.
    pub fn try_send(&mut self, chunk: Chunk) -> Result<Option<Chunk>, LayerWriteError> {
        let tx = self.tx.as_ref().expect("pipeline open");
        match tx.try_send(chunk) {
            Ok(()) => {
                self.sent += 1;
                Ok(None)
            }
            Err(mpsc::TrySendError::Full(c)) => Ok(Some(c)),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(self.cause()),
        }
    }

    /// Wait until every chunk sent so far is written, so that their buffers are back in the
    /// pool (a raw frame's when it is written, a compressed one's when it is encoded).
    pub fn wait_written(&mut self) -> Result<(), LayerWriteError> {
        let (lock, cv) = &*self.applied;
        let mut n = lock.lock().unwrap_or_else(|p| p.into_inner());
        while *n < self.sent {
            if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
                drop(n);
                return Err(self.cause());
            }
            n = cv
                .wait_timeout(n, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Why the pipeline stopped: the writer's own error (a full disk, say), if it had one.
    fn cause(&mut self) -> LayerWriteError {
        drop(self.tx.take());
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            _ => writer_gone(),
        }
    }

    /// Close the pipeline (sending `builder`'s partial chunk) and wait for the writer's result.
    pub fn finish(mut self, mut builder: ChunkBuilder) -> Result<WriterOut, LayerWriteError> {
        if let Some(c) = builder.flush() {
            self.send(c)?;
        }
        drop(self.tx.take());
        for w in std::mem::take(&mut self.workers) {
            if w.join().is_err() {
                return Err(writer_gone());
            }
        }
        let mut out = match self.writer.take() {
            Some(w) => w.join().map_err(|_| writer_gone())??,
            None => return Err(writer_gone()),
        };
        out.encoding = self.tuner.used();
        out.stages = self.clock.times();
        Ok(out)
    }
}

fn writer_gone() -> LayerWriteError {
    LayerWriteError::Io {
        path: "<pipeline>".into(),
        source: std::io::Error::other("a pipeline thread stopped early"),
    }
}

/// What the writer thread shares with the rest of the pipeline.
struct Stages {
    pool: mpsc::Sender<Vec<u8>>,
    tuner: Arc<Tuner>,
    clock: Arc<StageClock>,
    applied: Applied,
}

fn compress_worker(
    rx: &std::sync::Mutex<Receiver<Chunk>>,
    out: &SyncSender<Packed>,
    pool: &mpsc::Sender<Vec<u8>>,
    tuner: &Tuner,
    clock: &StageClock,
    kind: DigestKind,
) {
    loop {
        let chunk = {
            let guard = match rx.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            match guard.recv() {
                Ok(c) => c,
                Err(_) => return,
            }
        };
        let n = chunk.pfns.len();
        let mut data = chunk.data;
        let frame = if n > 0 {
            data.truncate(n * PAGE_SIZE);
            let (frame, spare) = encode_frame(data, tuner.level(), tuner, Some(clock), kind);
            if let Some(b) = spare {
                let _ = pool.send(b);
            }
            Some(frame)
        } else {
            let _ = pool.send(data);
            None
        };
        let packed = Packed {
            seq: chunk.seq,
            pfns: chunk.pfns,
            frame,
            entries: chunk.entries,
        };
        if out.send(packed).is_err() {
            return;
        }
    }
}

fn write_in_order(
    rx: Receiver<Packed>,
    mut writer: LayerWriter,
    mut index: LayerIndex,
    stage: Stages,
) -> Result<WriterOut, LayerWriteError> {
    let mut pending: BTreeMap<u64, Packed> = BTreeMap::new();
    let mut next = 0u64;
    let mut fig = WriterFigures::default();
    for packed in rx {
        pending.insert(packed.seq, packed);
        while let Some(p) = pending.remove(&next) {
            apply(&mut writer, &mut index, &mut fig, p, &stage)?;
            next += 1;
            let (lock, cv) = &*stage.applied;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            cv.notify_all();
        }
    }
    // Every chunk was delivered in sequence; anything left means a worker died mid-way.
    if !pending.is_empty() {
        return Err(writer_gone());
    }
    Ok(WriterOut {
        writer,
        index,
        figures: fig,
        encoding: EncodingUsed::default(),
        stages: StageTimes::default(),
    })
}

fn apply(
    writer: &mut LayerWriter,
    index: &mut LayerIndex,
    fig: &mut WriterFigures,
    p: Packed,
    stage: &Stages,
) -> Result<(), LayerWriteError> {
    // Entries and data of one chunk never name the same pfn (a pfn is copied once per round,
    // and a round's chunks are in order), so their relative order inside the chunk is free.
    for (pfn, entry) in p.entries {
        index.set(pfn, entry, None);
    }
    if let Some(frame) = p.frame {
        let (t, cpu) = (Instant::now(), thread_cpu());
        let first = writer.push_frame(&frame)?;
        stage
            .clock
            .add(Stage::Write, thread_cpu().saturating_sub(cpu));
        stage.tuner.written(frame.data.len(), t.elapsed());
        fig.frames += 1;
        fig.stored_bytes += frame.data.len() as u64;
        fig.raw_bytes += (p.pfns.len() * PAGE_SIZE) as u64;
        fig.data_copies += p.pfns.len() as u64;
        for (i, pfn) in p.pfns.into_iter().enumerate() {
            index.set(pfn, PageEntry::Data, Some(first + i as u64));
        }
        // A raw frame's data is a chunk buffer: back to the pool.
        if frame.codec == Codec::Raw {
            let _ = stage.pool.send(frame.data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_written_the_chunks_buffers_are_back_in_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let writer = LayerWriter::create(dir.path()).unwrap();
        std::thread::scope(|s| {
            let (mut pipe, mut builder) =
                Pipeline::start(s, writer, LayerIndex::new(256), 4, Encoding::Level(0), 1);
            // The full chunks are sent only once all ten pages are in: a buffer written back
            // earlier would be taken by the builder for its next chunk, and the count below
            // would depend on the writer's speed.
            let mut full = Vec::new();
            for pfn in 0..10u64 {
                full.extend(builder.add_copied(pfn, |dst| dst.fill(pfn as u8 + 1)));
            }
            assert_eq!(full.len(), 2);
            for c in full {
                pipe.send(c).unwrap();
            }
            pipe.wait_written().unwrap();
            assert_eq!(*pipe.applied.0.lock().unwrap(), 2);
            // Both raw frames' buffers: the paused copy takes them instead of new memory.
            assert_eq!(builder.pooled_pages(), 8);
            let back: Vec<Vec<u8>> = builder.pool.try_iter().collect();
            assert_eq!(back.len(), 2);
            assert!(back.iter().all(|b| b.capacity() >= 4 * PAGE_SIZE));
            let out = pipe.finish(builder).unwrap();
            assert_eq!(out.figures.frames, 3);
        });
    }
}
