//! Fixed-size records of the layer file: preamble, section table entries, frame table entries
//! and trailer. See the module doc of [`super`] for the drawing.

use serde::{Deserialize, Serialize};

use super::LayerMeta;

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"XCKPTLYR";
/// Magic of the trailer (the last 64 bytes).
pub const TRAILER_MAGIC: [u8; 8] = *b"XCKPTEND";
/// Format version of plain layers written now (without a key). Version 5: page digests and
/// frame check codes are xxh64 instead of xxh3 ([`super::DigestKind`]); otherwise as version 4.
pub const VERSION: u32 = 5;
/// Format version 4 (still read): a frame's check code is [`super::DigestKind::frame_code`]
/// (xxh3) instead of crc32c; otherwise as version 3.
pub const VERSION_V4: u32 = 4;
/// Format version 3 (still read): zstd frames carry no zstd content checksum (the frame's
/// crc32c and the pages' digests cover them) and META may record the encoding used;
/// otherwise laid out as version 1.
pub const VERSION_V3: u32 = 3;
/// Format version of plain layers written before version 3 (still read).
pub const VERSION_V1: u32 = 1;

/// Whether `version` is a plain (not encrypted) layer format this reader knows.
pub fn is_plain(version: u32) -> bool {
    matches!(version, VERSION | VERSION_V4 | VERSION_V3 | VERSION_V1)
}
/// Format version of encrypted layers (written with a key, and read).
pub const VERSION_SEALED: u32 = 2;
/// Size of the version 1 preamble.
pub const PREAMBLE_LEN: u64 = 32;
/// Size of the version 2 preamble (see [`super::seal`]).
pub const PREAMBLE_V2_LEN: usize = 80;
/// Size of the trailer.
pub const TRAILER_LEN: u64 = 64;
/// Size of one section table entry.
pub const SECTION_ENTRY_LEN: usize = 32;
/// Size of one frame table entry.
pub const FRAME_ENTRY_LEN: usize = 24;
/// Section codec: stored as is.
pub const SECTION_RAW: u32 = 0;
/// Section codec: one zstd frame.
pub const SECTION_ZSTD: u32 = 1;

/// The kinds of section, in the order a writer lays them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// serde_json of the layer header.
    Meta = 1,
    /// The domain config blob.
    Config = 2,
    /// VM state blobs.
    State = 3,
    /// The page index.
    Index = 4,
    /// One entry per frame.
    FrameTab = 5,
    /// The digest of each slot's page ([`super::DigestKind`]).
    Digests = 6,
}

/// Every section kind, in file order.
pub const SECTION_KINDS: [SectionKind; 6] = [
    SectionKind::Meta,
    SectionKind::Config,
    SectionKind::State,
    SectionKind::Index,
    SectionKind::FrameTab,
    SectionKind::Digests,
];

impl SectionKind {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Meta => "META",
            SectionKind::Config => "CONFIG",
            SectionKind::State => "STATE",
            SectionKind::Index => "INDEX",
            SectionKind::FrameTab => "FRAMETAB",
            SectionKind::Digests => "DIGESTS",
        }
    }
}

/// The preamble length of format `version`, where frames start; None for unknown versions.
pub fn preamble_len(version: u32) -> Option<u64> {
    match version {
        VERSION | VERSION_V4 | VERSION_V3 | VERSION_V1 => Some(PREAMBLE_LEN),
        VERSION_SEALED => Some(PREAMBLE_V2_LEN as u64),
        _ => None,
    }
}

/// Read a little-endian u32 at `at` (the caller guarantees the bounds).
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Read a little-endian u64 at `at` (the caller guarantees the bounds).
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The preamble: magic, version, flags (0), reserved, crc32c of bytes 0..28.
pub fn preamble() -> [u8; PREAMBLE_LEN as usize] {
    let mut p = [0u8; PREAMBLE_LEN as usize];
    p[0..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&p[..28]);
    p[28..32].copy_from_slice(&crc.to_le_bytes());
    p
}

/// One entry of the section table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEntry {
    /// [`SectionKind`] code.
    pub kind: u32,
    /// [`SECTION_RAW`] or [`SECTION_ZSTD`].
    pub codec: u32,
    /// File offset.
    pub offset: u64,
    /// Length in the file.
    pub len: u64,
    /// crc32c of the section's bytes as stored.
    pub crc: u32,
}

impl SectionEntry {
    /// The 32-byte encoding.
    pub fn encode(&self) -> [u8; SECTION_ENTRY_LEN] {
        let mut e = [0u8; SECTION_ENTRY_LEN];
        e[0..4].copy_from_slice(&self.kind.to_le_bytes());
        e[4..8].copy_from_slice(&self.codec.to_le_bytes());
        e[8..16].copy_from_slice(&self.offset.to_le_bytes());
        e[16..24].copy_from_slice(&self.len.to_le_bytes());
        e[24..28].copy_from_slice(&self.crc.to_le_bytes());
        e
    }
    /// Decode a 32-byte entry. The reserved word must be 0.
    pub fn decode(e: &[u8]) -> Option<SectionEntry> {
        (e.len() == SECTION_ENTRY_LEN && u32_at(e, 28) == 0).then(|| SectionEntry {
            kind: u32_at(e, 0),
            codec: u32_at(e, 4),
            offset: u64_at(e, 8),
            len: u64_at(e, 16),
            crc: u32_at(e, 24),
        })
    }
}

/// One entry of the FRAMETAB section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// File offset of the encoded frame.
    pub offset: u64,
    /// Encoded length.
    pub len: u32,
    /// Pages in the frame.
    pub pages: u32,
    /// [`super::Codec`] code.
    pub codec: u32,
    /// crc32c of the encoded bytes.
    pub crc: u32,
}

impl FrameEntry {
    /// The 24-byte encoding.
    pub fn encode(&self) -> [u8; FRAME_ENTRY_LEN] {
        let mut e = [0u8; FRAME_ENTRY_LEN];
        e[0..8].copy_from_slice(&self.offset.to_le_bytes());
        e[8..12].copy_from_slice(&self.len.to_le_bytes());
        e[12..16].copy_from_slice(&self.pages.to_le_bytes());
        e[16..20].copy_from_slice(&self.codec.to_le_bytes());
        e[20..24].copy_from_slice(&self.crc.to_le_bytes());
        e
    }
    /// Decode a 24-byte entry.
    pub fn decode(e: &[u8]) -> FrameEntry {
        FrameEntry {
            offset: u64_at(e, 0),
            len: u32_at(e, 8),
            pages: u32_at(e, 12),
            codec: u32_at(e, 16),
            crc: u32_at(e, 20),
        }
    }
}

/// The trailer, written last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Format version (equal to the preamble's).
    pub version: u32,
    /// Number of sections in the table.
    pub sections: u32,
    /// File offset of the section table.
    pub table_offset: u64,
    /// Length of the section table.
    pub table_len: u64,
    /// Length of the whole file.
    pub file_len: u64,
    /// Total bytes of frames (they start right after the preamble).
    pub frames_len: u64,
    /// Number of frames.
    pub frame_count: u64,
    /// crc32c of the section table.
    pub table_crc: u32,
}

impl Trailer {
    /// The 64-byte encoding; bytes 60..64 are crc32c of bytes 0..60.
    pub fn encode(&self) -> [u8; TRAILER_LEN as usize] {
        let mut t = [0u8; TRAILER_LEN as usize];
        t[0..8].copy_from_slice(&TRAILER_MAGIC);
        t[8..12].copy_from_slice(&self.version.to_le_bytes());
        t[12..16].copy_from_slice(&self.sections.to_le_bytes());
        t[16..24].copy_from_slice(&self.table_offset.to_le_bytes());
        t[24..32].copy_from_slice(&self.table_len.to_le_bytes());
        t[32..40].copy_from_slice(&self.file_len.to_le_bytes());
        t[40..48].copy_from_slice(&self.frames_len.to_le_bytes());
        t[48..56].copy_from_slice(&self.frame_count.to_le_bytes());
        t[56..60].copy_from_slice(&self.table_crc.to_le_bytes());
        let crc = crc32c::crc32c(&t[..60]);
        t[60..64].copy_from_slice(&crc.to_le_bytes());
        t
    }
    /// Decode the fields of a 64-byte trailer (magic and crc are checked by the caller).
    pub fn decode(t: &[u8]) -> Trailer {
        Trailer {
            version: u32_at(t, 8),
            sections: u32_at(t, 12),
            table_offset: u64_at(t, 16),
            table_len: u64_at(t, 24),
            file_len: u64_at(t, 32),
            frames_len: u64_at(t, 40),
            frame_count: u64_at(t, 48),
            table_crc: u32_at(t, 56),
        }
    }
}

/// The META section's JSON: the header plus the format's magic and version.
#[derive(Debug, Serialize, Deserialize)]
pub struct MetaDoc {
    /// "XCKPTLYR".
    pub magic: String,
    /// [`VERSION`].
    pub version: u32,
    /// The header.
    #[serde(flatten)]
    pub meta: LayerMeta,
}

/// Encode STATE: per blob kind u32, length u64, bytes.
pub fn encode_state(state: &[crate::hv::StateBlob]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.iter().map(|b| 12 + b.data.len()).sum());
    for b in state {
        out.extend_from_slice(&b.kind.to_le_bytes());
        out.extend_from_slice(&(b.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&b.data);
    }
    out
}

/// Decode STATE; None if a length runs past the end.
pub fn decode_state(mut b: &[u8]) -> Option<Vec<crate::hv::StateBlob>> {
    let mut blobs = Vec::new();
    while !b.is_empty() {
        if b.len() < 12 {
            return None;
        }
        let kind = u32_at(b, 0);
        let len = usize::try_from(u64_at(b, 4)).ok()?;
        let rest = &b[12..];
        if len > rest.len() {
            return None;
        }
        blobs.push(crate::hv::StateBlob {
            kind,
            data: rest[..len].to_vec(),
        });
        b = &rest[len..];
    }
    Some(blobs)
}
