//! Page data of an open layer: locating a slot's frame, decoding and checking frames, a small
//! cache of decoded frames, and whole-file verification.

use std::ops::Range;
use std::sync::Arc;

use super::checks::{read_into, sealed_err};
use super::decode_cost::{Stage, StageClock};
use super::frame::decode_frame;
use super::read_error::LayerReadError;
use super::{Codec, DigestKind, LayerReader, PageDigest};
use crate::hv::PAGE_SIZE;

/// Decoded frames kept per reader.
const CACHE_FRAMES: usize = 8;

/// What [`LayerReader::decode_into`] checks besides every page's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// The frame's check code too: `verify` and the page reader, which name a damaged frame.
    Full,
    /// Only the page digests, which prove every page handed out is the captured one (a
    /// damaged frame fails them, or fails to decode, and the error names the layer and the
    /// slot): the one pass over the data of a restore or an export.
    Pages,
}

/// Figures of a layer, for `inspect` and `verify`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerFigures {
    /// Size of the file.
    pub file_bytes: u64,
    /// Number of frames.
    pub frames: u64,
    /// Encoded bytes of all frames.
    pub frame_bytes: u64,
    /// Pages stored in frames (live and dead).
    pub slots: u64,
    /// Slots the index points at.
    pub live_slots: u64,
    /// Slots no pfn points at any more (pages re-sent during pre-copy).
    pub dead_slots: u64,
    /// Frames stored raw.
    pub raw_frames: u64,
}

impl LayerReader {
    /// Number of frames.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The slots held by frame `k`.
    pub fn frame_slots(&self, k: usize) -> Range<u64> {
        match (self.first_slot.get(k), self.first_slot.get(k + 1)) {
            (Some(&a), Some(&b)) => a..b,
            _ => 0..0,
        }
    }

    /// Total pages stored in frames.
    pub fn slot_count(&self) -> u64 {
        self.first_slot.last().copied().unwrap_or(0)
    }

    /// The frame holding `slot`.
    pub fn frame_of_slot(&self, slot: u64) -> Option<usize> {
        if slot >= self.slot_count() {
            return None;
        }
        Some(self.first_slot.partition_point(|&s| s <= slot) - 1)
    }

    /// Frame `k` decoded and checked (crc, zstd checksum, page digests), from the cache when
    /// it is there.
    pub fn frame(&self, k: usize) -> Result<Arc<Vec<u8>>, LayerReadError> {
        if let Some(hit) = self.cache_get(k) {
            return Ok(hit);
        }
        let pages = Arc::new(self.decode(k)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_FRAMES {
            cache.pop();
        }
        cache.insert(0, (k, pages.clone()));
        Ok(pages)
    }

    fn cache_get(&self, k: usize) -> Option<Arc<Vec<u8>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let at = cache.iter().position(|(f, _)| *f == k)?;
        let hit = cache.remove(at);
        let pages = hit.1.clone();
        cache.insert(0, hit);
        Some(pages)
    }

    /// Visit the stored pages of the pfns `keep` accepts, in the order they are stored, so that
    /// each frame is decoded once (without the cache). Stops at the first error `f` returns.
    pub fn for_each_stored_page<E: From<LayerReadError>>(
        &self,
        keep: impl Fn(crate::hv::Pfn) -> bool,
        mut f: impl FnMut(crate::hv::Pfn, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut live: Vec<(u64, crate::hv::Pfn)> = self
            .index()
            .data_slots()
            .filter(|&(pfn, _)| keep(pfn))
            .map(|(pfn, slot)| (slot, pfn))
            .collect();
        live.sort_unstable();
        let mut at = 0;
        while at < live.len() {
            let k = self.frame_of_slot(live[at].0).unwrap_or(usize::MAX);
            let pages = self.decode(k)?;
            let slots = self.frame_slots(k);
            while at < live.len() && live[at].0 < slots.end {
                let (slot, pfn) = live[at];
                let off = (slot - slots.start) as usize * PAGE_SIZE;
                f(pfn, &pages[off..off + PAGE_SIZE])?;
                at += 1;
            }
        }
        Ok(())
    }

    /// Decode frame `k` without the cache (for one-pass readers), checking its integrity: the
    /// one function every reader of page data goes through (restore, export, `verify`,
    /// [`LayerReader::read_page`]). A plain frame is checked against its crc32c, a sealed one
    /// authenticated; then decoded (zstd checks its own content checksum); then every page
    /// against its recorded digest. A raw frame is returned as read, without a copy.
    pub fn decode(&self, k: usize) -> Result<Vec<u8>, LayerReadError> {
        let mut out = Vec::new();
        self.decode_into(k, FrameCheck::Full, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// [`Self::decode`] into `out`, reusing `out` and `encoded` (the encoded bytes of a
    /// compressed frame) from earlier frames, so a reader that decodes many frames allocates
    /// and faults in its buffers once. `check` says whether a plain frame's check code is checked
    /// too; every page's digest always is, and a sealed frame is always authenticated.
    pub fn decode_into(
        &self,
        k: usize,
        check: FrameCheck,
        encoded: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), LayerReadError> {
        let mut clock = StageClock::start();
        let f = self
            .frames
            .get(k)
            .copied()
            .ok_or_else(|| LayerReadError::FrameDecode {
                path: self.path.clone(),
                frame: k as u64,
                reason: format!("no frame {k}; the layer has {}", self.frames.len()),
            })?;
        let codec = Codec::from_code(f.codec).unwrap_or(Codec::Raw);
        // A plain raw frame is read straight into `out`: its bytes are the pages.
        let direct = codec == Codec::Raw
            && self.seal.is_none()
            && (1..=super::MAX_FRAME_PAGES).contains(&f.pages)
            && f.len as u64 == u64::from(f.pages) * PAGE_SIZE as u64;
        if direct {
            read_into(&self.path, &self.file, f.offset, f.len as u64, out)?;
            clock.mark(Stage::Read);
            if check == FrameCheck::Full {
                self.check_crc(k, &f, out)?;
            }
            clock.mark(Stage::Check);
        } else {
            read_into(&self.path, &self.file, f.offset, f.len as u64, encoded)?;
            clock.mark(Stage::Read);
            let decode = |bytes: &[u8], out: &mut Vec<u8>| {
                decode_frame(codec, bytes, f.pages, out).map_err(|reason| {
                    LayerReadError::FrameDecode {
                        path: self.path.clone(),
                        frame: k as u64,
                        reason,
                    }
                })
            };
            match &self.seal {
                Some(seal) => {
                    let opened = seal
                        .open_frame(k as u64, f.pages, f.codec, encoded)
                        .map_err(|e| sealed_err(&self.path, format!("frame {k}"), e))?;
                    clock.mark(Stage::Check);
                    let whole = (1..=super::MAX_FRAME_PAGES).contains(&f.pages)
                        && opened.len() == f.pages as usize * PAGE_SIZE;
                    if codec == Codec::Raw && whole {
                        // A sealed raw frame's opened bytes are the pages: taken, not copied.
                        *out = opened;
                    } else {
                        decode(&opened, out)?;
                    }
                }
                None => {
                    if check == FrameCheck::Full {
                        self.check_crc(k, &f, encoded)?;
                    }
                    clock.mark(Stage::Check);
                    decode(encoded, out)?;
                }
            }
            clock.mark(Stage::Decompress);
        }
        self.check_pages(k, out)?;
        clock.mark(Stage::Check);
        Ok(())
    }

    /// A plain frame's check code: [`DigestKind::frame_code`] of its encoded bytes or, raw, of
    /// its pages' recorded digests (format versions 4 and 5; [`Self::check_pages`] proves the
    /// pages against those), or crc32c of its encoded bytes (versions 1 and 3).
    fn check_crc(
        &self,
        k: usize,
        f: &super::format::FrameEntry,
        bytes: &[u8],
    ) -> Result<(), LayerReadError> {
        let found = if matches!(
            self.version,
            super::format::VERSION | super::format::VERSION_V4
        ) {
            let codec = Codec::from_code(f.codec).unwrap_or(Codec::Raw);
            let slots = self.frame_slots(k);
            let digests = self
                .digests
                .get(slots.start as usize..slots.end as usize)
                .unwrap_or_default();
            self.digest_kind().frame_code(codec, bytes, digests)
        } else {
            crc32c::crc32c(bytes)
        };
        if found != f.crc {
            return Err(LayerReadError::FrameChecksum {
                path: self.path.clone(),
                frame: k as u64,
                expected: f.crc,
                found,
            });
        }
        Ok(())
    }

    /// Every decoded page of frame `k` against the digest recorded for its slot.
    fn check_pages(&self, k: usize, pages: &[u8]) -> Result<(), LayerReadError> {
        let kind = self.digest_kind();
        for (page, slot) in pages.chunks_exact(PAGE_SIZE).zip(self.frame_slots(k)) {
            let expected = self.digests.get(slot as usize).copied().unwrap_or(0);
            let found = kind.hash(page);
            if found != expected {
                return Err(LayerReadError::DigestMismatch {
                    path: self.path.clone(),
                    slot,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Copy the page in `slot` into `buf` (one page).
    pub(super) fn read_slot(&self, slot: u64, buf: &mut [u8]) -> Result<(), LayerReadError> {
        let k = self
            .frame_of_slot(slot)
            .ok_or_else(|| LayerReadError::BadIndex {
                path: self.path.clone(),
                reason: format!("slot {slot} beyond the frames"),
            })?;
        let frame = self.frame(k)?;
        let at = (slot - self.first_slot[k]) as usize * PAGE_SIZE;
        buf.copy_from_slice(&frame[at..at + PAGE_SIZE]);
        Ok(())
    }

    /// The recorded digest of `pfn`'s page, without decoding (None unless the layer stores
    /// data for `pfn`). [`PageDigest::matches`] compares it with a live page.
    pub fn page_digest(&self, pfn: crate::hv::Pfn) -> Option<PageDigest> {
        match self.index().get(pfn)? {
            (super::PageEntry::Data, Some(slot)) => self.slot_digest(slot),
            _ => None,
        }
    }

    /// The recorded digest of the page in `slot` (live or dead copy).
    pub fn slot_digest(&self, slot: u64) -> Option<PageDigest> {
        PageDigest::of_slot(self.digest_kind(), &self.digests, slot)
    }

    /// The hash of this layer's page digests and frame check codes (by its format version).
    pub fn digest_kind(&self) -> DigestKind {
        DigestKind::of_version(self.version)
    }

    /// Check every frame: checksum, decoding, and every page's digest.
    pub fn verify(&self) -> Result<(), LayerReadError> {
        for k in 0..self.frames.len() {
            self.decode(k)?;
        }
        Ok(())
    }

    /// Figures of the file.
    pub fn figures(&self) -> LayerFigures {
        let slots = self.slot_count();
        let live = self.index().counts().data;
        LayerFigures {
            file_bytes: self.file_len,
            frames: self.frames.len() as u64,
            frame_bytes: self.frames.iter().map(|f| f.len as u64).sum(),
            slots,
            live_slots: live,
            dead_slots: slots.saturating_sub(live),
            raw_frames: self
                .frames
                .iter()
                .filter(|f| f.codec == Codec::Raw.code())
                .count() as u64,
        }
    }
}
