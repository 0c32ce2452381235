//! Copying a set of guest frames into chunks: page types, batched mapping, per-frame errors.

use std::time::{Duration, Instant};

use super::CaptureError;
use crate::hv::{DirtyLog, GuestMemory, PageType, Pfn, PfnBitmap};
use crate::layer::encode::{thread_cpu, Stage};
use crate::layer::pipeline::{Baseline, Chunk, ChunkBuilder};
use crate::layer::PageEntry;

/// Frames mapped per hypervisor call.
pub const MAP_BATCH: usize = 1024;

/// During a live round, the dirty log is fetched at most this often (and at most once per
/// batch); pages found dirty that the round has not reached yet are skipped, since the next
/// round sends them anyway. Time-based, so a slow copy (a busy host, a guest under TCG) skips
/// as much as a fast one: every page copied and then re-sent is a dead copy in the layer.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// Pages a live round skips because they are dirty again: fetched (and so cleared) from the
/// log mid-round, they must go into the next round's set.
pub struct SkipSet {
    /// Pages fetched mid-round.
    pub bits: PfnBitmap,
    scratch: PfnBitmap,
}

impl SkipSet {
    /// An empty set over `pfn_count` pfns.
    pub fn new(pfn_count: u64) -> Self {
        let n = pfn_count as usize;
        SkipSet {
            bits: PfnBitmap::repeat(false, n),
            scratch: PfnBitmap::repeat(false, n),
        }
    }

    fn refresh<D: DirtyLog + ?Sized>(
        &mut self,
        dom: &D,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), CaptureError> {
        dom.logdirty_clean(&mut self.scratch)?;
        self.bits |= &self.scratch;
        sink.superseded(&self.scratch);
        Ok(())
    }

    fn has(&self, pfn: Pfn) -> bool {
        self.bits.get(pfn as usize).is_some_and(|b| *b)
    }
}

/// Figures of a copy pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyFigures {
    /// Pages read from the guest.
    pub pages: u64,
    /// Time spent typing, mapping and copying (waits on the pipeline excluded).
    pub busy: Duration,
}

impl CopyFigures {
    /// Measured pages per second of copying into RAM.
    pub fn rate(&self) -> f64 {
        let s = self.busy.as_secs_f64();
        if s > 0.0 {
            self.pages as f64 / s
        } else {
            0.0
        }
    }
}

/// How one pass treats what it finds.
#[derive(Clone, Copy, Default)]
pub struct CopyRules<'a> {
    /// Record unpopulated pfns (not needed in a base layer's first round: uncovered means
    /// unpopulated there).
    pub record_unpopulated: bool,
    /// Drop pages the chain already holds (resync).
    pub baseline: Option<&'a dyn Baseline>,
    /// Pages free in the guest and not dirtied since arming: recorded as evicted, not read.
    pub evict: Option<&'a crate::evict::FreeFilter>,
    /// Every pfn given was just found populated (by [`super::probe`], in a PVH or HVM guest,
    /// whose populated pages are all plain): their types are not asked again. One that left
    /// the guest since fails to map, and is asked then.
    pub probed: bool,
}

/// Where full chunks go.
pub trait ChunkSink {
    /// Take a full chunk.
    fn send(&mut self, chunk: Chunk) -> Result<(), CaptureError>;
    /// The pfns in `fetched` were just fetched dirty: every copy of them made so far is
    /// superseded (each will be copied again by a later round), so one not yet encoded can be
    /// dropped.
    fn superseded(&mut self, _fetched: &PfnBitmap) {}
}

impl<F: FnMut(Chunk) -> Result<(), CaptureError>> ChunkSink for F {
    fn send(&mut self, chunk: Chunk) -> Result<(), CaptureError> {
        self(chunk)
    }
}

/// Copy `pfns` (ascending) from `dom` into `builder`, handing full chunks to `sink`. With
/// `skip` (live rounds), the dirty log is fetched now and then and pages dirty again are left
/// to the next round.
#[allow(clippy::too_many_arguments)]
pub fn copy_pfns<D: GuestMemory + DirtyLog + ?Sized>(
    dom: &D,
    pfns: impl Iterator<Item = Pfn>,
    builder: &mut ChunkBuilder,
    rules: CopyRules<'_>,
    figs: &mut CopyFigures,
    sink: &mut dyn ChunkSink,
    stop: &dyn Fn() -> bool,
    mut skip: Option<&mut SkipSet>,
) -> Result<(), CaptureError> {
    let mut batch: Vec<Pfn> = Vec::with_capacity(MAP_BATCH);
    let mut types = vec![PageType::Normal; MAP_BATCH];
    let mut pfns = pfns.peekable();
    let mut refreshed = Instant::now();
    while pfns.peek().is_some() {
        if stop() {
            return Err(CaptureError::Interrupted { domain: dom.name() });
        }
        if let Some(s) = skip.as_deref_mut() {
            if refreshed.elapsed() >= REFRESH_INTERVAL {
                builder.clock().time(Stage::Log, || s.refresh(dom, sink))?;
                refreshed = Instant::now();
            }
        }
        batch.clear();
        match skip.as_deref() {
            Some(s) => batch.extend(pfns.by_ref().take(MAP_BATCH).filter(|&p| !s.has(p))),
            None => batch.extend(pfns.by_ref().take(MAP_BATCH)),
        }
        let t0 = Instant::now();
        let types = &mut types[..batch.len()];
        if rules.probed {
            types.fill(PageType::Normal);
        } else {
            builder
                .clock()
                .time(Stage::Types, || dom.page_types(&batch, types))?;
        }
        let mut full = Vec::new();
        copy_batch(dom, &batch, types, builder, rules, &mut full)?;
        figs.busy += t0.elapsed();
        figs.pages += batch.len() as u64;
        for c in full {
            sink.send(c)?;
        }
    }
    if let Some(c) = builder.flush() {
        sink.send(c)?;
    }
    Ok(())
}

/// Record `pfn` as unpopulated, unless the pass need not (see [`CopyRules`]).
fn record_unpopulated(builder: &mut ChunkBuilder, pfn: Pfn, rules: CopyRules<'_>) {
    let same = rules.baseline.is_some_and(|b| b.same(pfn, None));
    if rules.record_unpopulated && !same {
        builder.add_entry(pfn, PageEntry::Unpopulated);
    }
}

fn copy_batch<D: GuestMemory + ?Sized>(
    dom: &D,
    batch: &[Pfn],
    types: &[PageType],
    builder: &mut ChunkBuilder,
    rules: CopyRules<'_>,
    full: &mut Vec<Chunk>,
) -> Result<(), CaptureError> {
    let mut readable: Vec<Pfn> = Vec::with_capacity(batch.len());
    for (&pfn, &ty) in batch.iter().zip(types) {
        match ty {
            PageType::Unpopulated | PageType::Broken => record_unpopulated(builder, pfn, rules),
            PageType::Normal => match rules.evict.and_then(|f| f.evicts(pfn)) {
                Some(policy) => builder.add_entry(pfn, PageEntry::Evicted(policy)),
                None => readable.push(pfn),
            },
            PageType::Other(_) => readable.push(pfn),
        }
    }
    if readable.is_empty() {
        return Ok(());
    }
    let mapped = builder
        .clock()
        .time(Stage::Map, || dom.map_batch(&readable))?;
    // A frame that fails to map may have left the guest between the type query and the map
    // (a balloon driver still giving memory back): asked again, the hypervisor says so, and the
    // frame is recorded like any unpopulated one. Any other failure is the capture's.
    let vanished = |builder: &mut ChunkBuilder, pfn: Pfn, errno: i32| {
        let mut ty = [PageType::Normal];
        dom.page_types(&[pfn], &mut ty)?;
        if !matches!(ty[0], PageType::Unpopulated | PageType::Broken) {
            return Err(CaptureError::Map {
                domain: dom.name(),
                pfn,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        record_unpopulated(builder, pfn, rules);
        Ok(())
    };
    // A resync compares every copied page with the chain (zero pages included); so does a
    // capture that keeps zero pages as data. Otherwise zero pages are found on the mapping,
    // without a copy, and only the others are copied.
    if rules.baseline.is_some() || builder.keeps_zero() {
        let t = thread_cpu();
        for (i, &pfn) in readable.iter().enumerate() {
            match mapped.page(i) {
                Ok(page) => {
                    full.extend(builder.add_page(pfn, |dst| page.copy_to(dst), rules.baseline))
                }
                Err(e) => vanished(builder, pfn, e)?,
            }
        }
        builder
            .clock()
            .add(Stage::Copy, thread_cpu().saturating_sub(t));
        builder.clock().time(Stage::Map, || drop(mapped));
        return Ok(());
    }
    let t = thread_cpu();
    let mut nonzero = Vec::with_capacity(readable.len());
    for (i, &pfn) in readable.iter().enumerate() {
        match mapped.page(i) {
            Ok(page) if page.is_zero() => builder.add_entry(pfn, PageEntry::Zero),
            Ok(_) => nonzero.push((i, pfn)),
            Err(e) => vanished(builder, pfn, e)?,
        }
    }
    let t1 = thread_cpu();
    builder.clock().add(Stage::Zero, t1.saturating_sub(t));
    for (i, pfn) in nonzero {
        match mapped.page(i) {
            Ok(page) => full.extend(builder.add_copied(pfn, |dst| page.copy_to(dst))),
            Err(e) => vanished(builder, pfn, e)?,
        }
    }
    builder
        .clock()
        .add(Stage::Copy, thread_cpu().saturating_sub(t1));
    builder.clock().time(Stage::Map, || drop(mapped));
    Ok(())
}

/// The pfns a round copies: in the first round of a base or resync all of them (those `found`
/// populated by a probe, if one ran), in any other the dirty set.
pub fn round_set<'a>(
    all: bool,
    found: Option<&'a PfnBitmap>,
    pfn_count: u64,
    dirty: &'a PfnBitmap,
) -> Box<dyn Iterator<Item = u64> + 'a> {
    if all {
        match found {
            Some(f) => Box::new(f.iter_ones().map(|p| p as u64)),
            None => Box::new(0..pfn_count),
        }
    } else {
        Box::new(dirty.iter_ones().map(|p| p as u64))
    }
}
