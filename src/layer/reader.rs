//! Opening and validating a layer file.
//!
//! [`LayerReader::open`] checks, in this order, failing with its own variant at the first
//! problem: file size, trailer magic, trailer checksum, recorded file size and table bounds,
//! table checksum, preamble magic, version, preamble checksum, section layout, each section's
//! checksum, META, STATE, FRAMETAB and DIGESTS structure, and the index's consistency. Page data
//! is checked when a frame is decoded (crc32c of the encoded bytes, zstd's own checksum, then
//! the digest of every page), by [`LayerReader::read_page`] and by [`LayerReader::verify`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::checks::{
    bad, io, open_sections, parse_digests, parse_frametab, parse_index, parse_meta, prefix_slots,
};
use super::format::{decode_state, FrameEntry, SectionKind};
use super::seal::{FileSeal, LayerKey};
use super::{LayerIndex, LayerMeta, PageEntry};
use crate::hv::{Pfn, StateBlob, PAGE_SIZE};

pub use super::read_error::LayerReadError;
pub use super::reader_frames::LayerFigures;

/// An open, validated layer file. Shareable between threads.
pub struct LayerReader {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) file_len: u64,
    meta: LayerMeta,
    index: LayerIndex,
    state: Vec<StateBlob>,
    config: Vec<u8>,
    pub(super) frames: Vec<FrameEntry>,
    /// first_slot[k] = slot of frame k's first page; one extra entry = slot count.
    pub(super) first_slot: Vec<u64>,
    pub(super) digests: Vec<u64>,
    pub(super) seal: Option<FileSeal>,
    pub(super) cache: Mutex<Vec<(usize, Arc<Vec<u8>>)>>,
    /// The file's format version (the trailer's): how its frames are checked.
    pub(super) version: u32,
}

impl LayerReader {
    /// Open and validate trailer, table, preamble, section checksums, header and index. An
    /// encrypted layer fails with [`LayerReadError::NeedKey`]; see [`LayerReader::open_with_key`].
    pub fn open(path: &Path) -> Result<Self, LayerReadError> {
        Self::open_with_key(path, None)
    }

    /// [`LayerReader::open`] with the key of encrypted layers (plain layers open with or
    /// without one). Every section of an encrypted layer is authenticated here; each frame
    /// when it is decoded.
    pub fn open_with_key(path: &Path, key: Option<&LayerKey>) -> Result<Self, LayerReadError> {
        let file = crate::fileio::open_nofollow(path).map_err(|source| io(path, source))?;
        let file_len = file.metadata().map_err(|source| io(path, source))?.len();
        let raw = open_sections(path, &file, file_len, key)?;
        let section = |k: SectionKind| {
            raw.bodies
                .iter()
                .find(|(e, _)| e.kind == k as u32)
                .map(|(_, b)| b.as_slice())
        };
        let missing = |k: SectionKind| LayerReadError::BadLayout {
            path: path.to_path_buf(),
            reason: format!("no {} section", k.name()),
        };
        let get = |k| section(k).ok_or_else(|| missing(k));
        let meta = parse_meta(path, get(SectionKind::Meta)?)?;
        let state = decode_state(get(SectionKind::State)?)
            .ok_or_else(|| bad(path, "STATE", "blob runs past the end"))?;
        let config = get(SectionKind::Config)?.to_vec();
        let frames = parse_frametab(
            path,
            get(SectionKind::FrameTab)?,
            &raw.trailer,
            raw.data_start,
            raw.seal.is_some(),
        )?;
        let first_slot = prefix_slots(&frames);
        let slots = first_slot.last().copied().unwrap_or(0);
        let digests = parse_digests(path, get(SectionKind::Digests)?, slots)?;
        let index = parse_index(path, get(SectionKind::Index)?, &meta, slots)?;
        Ok(LayerReader {
            path: path.to_path_buf(),
            file,
            file_len,
            meta,
            index,
            state,
            config,
            frames,
            first_slot,
            digests,
            seal: raw.seal,
            cache: Mutex::new(Vec::new()),
            version: raw.trailer.version,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The header.
    pub fn meta(&self) -> &LayerMeta {
        &self.meta
    }
    /// The page index.
    pub fn index(&self) -> &LayerIndex {
        &self.index
    }
    /// What this layer says about `pfn` (None: not covered).
    pub fn entry(&self, pfn: Pfn) -> Option<PageEntry> {
        self.index.entry(pfn)
    }
    /// VM state blobs.
    pub fn state(&self) -> &[StateBlob] {
        &self.state
    }
    /// The domain config blob.
    pub fn config(&self) -> &[u8] {
        &self.config
    }
    /// Whether the layer is encrypted (format version 2).
    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }
    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_len
    }

    /// Read `pfn`'s data into `buf` (4096 bytes). Zero-fills for zero/evicted/unpopulated and
    /// for pfns the layer does not cover.
    pub fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError> {
        if buf.len() != PAGE_SIZE {
            return Err(LayerReadError::BadBuffer {
                path: self.path.clone(),
                len: buf.len(),
            });
        }
        match self.index.get(pfn) {
            Some((PageEntry::Data, Some(slot))) => self.read_slot(slot, buf),
            _ => {
                buf.fill(0);
                Ok(())
            }
        }
    }
}
