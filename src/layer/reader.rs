//! Opening and validating a layer file.
//!
//! [`LayerReader::open`] checks, in this order, failing with its own variant at the first
//! problem: file size, trailer magic, trailer checksum, recorded file size and table bounds,
//! table checksum, preamble magic, version, preamble checksum, section layout, each section's
//! checksum, META, STATE, FRAMETAB and DIGESTS structure, and the index's consistency. Page data
//! is checked when a frame is decoded (crc32c of the encoded bytes, zstd's own checksum, then
//! the xxh3 digest of every page), by [`LayerReader::read_page`] and by [`LayerReader::verify`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::checks::{
    bad, io, open_sections, parse_digests, parse_frametab, parse_index, parse_meta, prefix_slots,
};
use super::format::{decode_state, FrameEntry, SectionKind, VERSION};
use super::seal::{FileSeal, LayerKey};
use super::{LayerIndex, LayerMeta, PageEntry};
use crate::hv::{Pfn, StateBlob, PAGE_SIZE};

pub use super::reader_frames::LayerFigures;

/// Errors while reading a layer. Each names the file; open-time variants come in check order.
#[derive(Debug, thiserror::Error)]
pub enum LayerReadError {
    /// An I/O error on the named file.
    #[error("reading layer {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Too small to hold a preamble and a trailer.
    #[error("layer {path} is only {size} bytes: not a layer, or cut short")]
    TooSmall {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// No trailer: the write was torn (the process died before finishing the layer).
    #[error(
        "layer {path} has no trailer (found {found:02x?}): it was never finished or was cut short"
    )]
    Torn {
        /// The file.
        path: PathBuf,
        /// The bytes where the trailer magic should be.
        found: [u8; 8],
    },
    /// The trailer's own checksum does not match.
    #[error(
        "layer {path}: trailer checksum {found:#010x} != {expected:#010x}: the file is damaged"
    )]
    TrailerChecksum {
        /// The file.
        path: PathBuf,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The trailer records another file size (truncated or extended file).
    #[error("layer {path} is {actual} bytes but its trailer says {recorded}: the file was cut or appended to")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size in the trailer.
        recorded: u64,
        /// Size on disk.
        actual: u64,
    },
    /// The section table's checksum does not match.
    #[error("layer {path}: section table checksum {found:#010x} != {expected:#010x}: the file is damaged")]
    TableChecksum {
        /// The file.
        path: PathBuf,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The file does not start with the layer magic.
    #[error("{path} is not an xckpt layer (magic {found:02x?})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Unsupported format version.
    #[error("layer {path} has format version {found}; this xckpt reads versions 1 and {VERSION} (plain) and 2 (encrypted)")]
    BadVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The preamble's checksum does not match.
    #[error(
        "layer {path}: preamble checksum {found:#010x} != {expected:#010x}: the file is damaged"
    )]
    PreambleChecksum {
        /// The file.
        path: PathBuf,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// Frames, sections, table and trailer do not tile the file as the format requires.
    #[error("layer {path}: bad layout: {reason}")]
    BadLayout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A section's checksum does not match.
    #[error("layer {path}: {section} section checksum {found:#010x} != {expected:#010x}: the file is damaged")]
    SectionChecksum {
        /// The file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// META is not a valid header.
    #[error("layer {path}: META section is not a valid header: {reason}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// Parse error or disagreement.
        reason: String,
    },
    /// A section's structure is invalid.
    #[error("layer {path}: {section} section is malformed: {reason}")]
    BadSection {
        /// The file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The page index is inconsistent.
    #[error("layer {path}: page index is inconsistent: {reason}")]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A frame's bytes do not match their checksum.
    #[error("layer {path}: frame {frame} checksum {found:#010x} != {expected:#010x}: page data is damaged")]
    FrameChecksum {
        /// The file.
        path: PathBuf,
        /// Frame number.
        frame: u64,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// A frame does not decode.
    #[error("layer {path}: frame {frame} does not decode: {reason}")]
    FrameDecode {
        /// The file.
        path: PathBuf,
        /// Frame number.
        frame: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// A decoded page does not match its digest.
    #[error(
        "layer {path}: page in slot {slot} has digest {found:#018x}, {expected:#018x} recorded"
    )]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// Slot number.
        slot: u64,
        /// Recorded.
        expected: u64,
        /// Computed.
        found: u64,
    },
    /// The layer is encrypted and no key was given.
    #[error("layer {path} is encrypted: give its key with --encrypt KEYFILE")]
    NeedKey {
        /// The file.
        path: PathBuf,
    },
    /// The layer was encrypted with another key.
    #[error("layer {path} was encrypted with another key: give the key it was written with (--encrypt KEYFILE)")]
    WrongKey {
        /// The file.
        path: PathBuf,
    },
    /// A sealed piece fails authentication: the file was altered.
    #[error(
        "layer {path}: {what} fails authentication: the encrypted file was altered or damaged"
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// The piece (preamble, a section, frame N).
        what: String,
    },
    /// The caller's buffer is not one page.
    #[error("layer {path}: page buffer of {len} bytes, {PAGE_SIZE} needed")]
    BadBuffer {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

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
        let file = super::open_nofollow(path).map_err(|source| io(path, source))?;
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
