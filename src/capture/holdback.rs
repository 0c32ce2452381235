//! Chunks copied but not yet encoded, held back so that a page re-sent by a later round is
//! dropped before its old copy is ever encoded or written.
//!
//! Copying outruns encoding, so a backlog forms anyway; it is kept here rather than in the
//! pipeline's channel. Every fetch-and-clear of the dirty log (the mid-round refreshes, each
//! round's end, the paused one) names pages whose copies so far are all superseded: each will
//! be copied again by a later round. Their copies still in the backlog are dropped. The oldest
//! chunk goes to the encoders as soon as they can take it, so they never wait for the backlog,
//! and the producer waits only when the backlog is full (a bound on memory).

use std::collections::VecDeque;

use super::copy::ChunkSink;
use super::CaptureError;
use crate::hv::{PfnBitmap, PAGE_SIZE};
use crate::layer::pipeline::{Chunk, Pipeline};
use crate::layer::LayerWriteError;
use crate::progress::{self as report, Task};

/// Bytes of chunk buffers held back at most: an eighth of the guest's populated memory, within
/// these bounds.
///
/// Holding is not free: each held chunk needs a buffer of its own, newly faulted in page by
/// page (in a PV dom0 every fault goes through the hypervisor), while only the few held pages
/// dirtied again are saved from being encoded and written. Half the guest (the bound before
/// 2026-12-05, and of the pfn space, not of the populated pages: all of a 256 MiB PVH guest,
/// whose pfns reach 4 GiB) made a checkpoint fault in a fresh page for every page it copied.
/// On the 1 GiB sim bench at 100 MiB/s, with the mid-round refreshes of the dirty log, an
/// eighth (128 MiB) left 2.8-4.1% of a base's pages dead in eight runs, against 1.2-1.7% for
/// 512 MiB and 3.2-4.1% for 8 MiB, and copied at 0.14-0.25 CPU s/GB against 0.45-0.49.
const MIN_BYTES: u64 = 16 << 20;
const MAX_BYTES: u64 = 128 << 20;

/// The backlog of one capture.
pub struct Holdback {
    held: VecDeque<Chunk>,
    max_chunks: usize,
    /// Page copies dropped so far.
    pub dropped: u64,
}

impl Holdback {
    /// A backlog for a guest of `populated` pages in chunks of `frame_pages` pages.
    pub fn new(populated: u64, frame_pages: u32) -> Self {
        let bytes = (populated * PAGE_SIZE as u64 / 8).clamp(MIN_BYTES, MAX_BYTES);
        let chunk = u64::from(frame_pages.max(1)) * PAGE_SIZE as u64;
        Holdback {
            held: VecDeque::new(),
            max_chunks: (bytes / chunk).max(2) as usize,
            dropped: 0,
        }
    }

    /// Hold `chunk`; hand the oldest chunks to `pipe` while its encoders take them without
    /// waiting, and wait for them only when the backlog is full.
    pub fn push(&mut self, chunk: Chunk, pipe: &mut Pipeline<'_>) -> Result<(), LayerWriteError> {
        self.held.push_back(chunk);
        while let Some(c) = self.held.pop_front() {
            if self.held.len() >= self.max_chunks {
                pipe.send(c)?;
                continue;
            }
            if let Some(back) = pipe.try_send(c)? {
                self.held.push_front(back);
                break;
            }
        }
        Ok(())
    }

    /// Drop the held copies of the pfns in `fetched` (just fetched dirty: a later round
    /// copies each of them again).
    pub fn superseded(&mut self, fetched: &PfnBitmap) {
        for c in &mut self.held {
            self.dropped += c.drop_pages(fetched) as u64;
        }
    }

    /// Whether no chunk is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Hand every held chunk to `pipe`, oldest first.
    pub fn drain(&mut self, pipe: &mut Pipeline<'_>) -> Result<(), LayerWriteError> {
        while let Some(c) = self.held.pop_front() {
            pipe.send(c)?;
        }
        Ok(())
    }
}

/// A live round's sink: chunks go through the backlog, and every mid-round fetch of the dirty
/// log drops the backlog's superseded copies.
pub struct HeldSink<'a, 'p> {
    /// The backlog.
    pub hold: &'a mut Holdback,
    /// Where the backlog's oldest chunks go.
    pub pipe: &'a mut Pipeline<'p>,
    /// The domain, for errors and progress.
    pub domain: &'a str,
    /// The round's progress task: each chunk advances it.
    pub task: Task,
}

impl ChunkSink for HeldSink<'_, '_> {
    fn send(&mut self, chunk: Chunk) -> Result<(), CaptureError> {
        report::advance(self.domain, self.task, chunk.pages_covered());
        self.hold
            .push(chunk, self.pipe)
            .map_err(|source| CaptureError::Write {
                domain: self.domain.to_string(),
                source,
            })
    }

    fn superseded(&mut self, fetched: &PfnBitmap) {
        self.hold.superseded(fetched);
    }
}
