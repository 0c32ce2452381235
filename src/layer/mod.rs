//! The layer file: one checkpoint's pages, page index and VM state.
//!
//! A layer is written front to back in one pass ([`LayerWriter`]) and read with random access
//! ([`LayerReader`]). `docs/format.md` is the full specification; this is its summary.
//! Little-endian everywhere; every byte of the file is under a crc32c or, for frames from
//! format version 4, a hash-based check code ([`DigestKind::frame_code`]: xxh64 from version
//! 5, xxh3 in version 4).
//!
//! ```text
//!  offset 0
//!  +--------------------------------------------------------------+
//!  | PREAMBLE (32 bytes)                                          |
//!  |  0 magic "XCKPTLYR" | 8 version u32 = 5 | 12 flags u32 = 0    |
//!  |  16 reserved [u8; 12] = 0 | 28 crc32c(bytes 0..28) u32        |
//!  +--------------------------------------------------------------+
//!  | FRAME 0 | FRAME 1 | ... | FRAME F-1                          |  page data, back to back;
//!  |   zstd frame or raw pages                                    |  check code in FRAMETAB
//!  +--------------------------------------------------------------+
//!  | META     serde_json {magic, version, ...LayerMeta}            |  sections, back to back,
//!  | CONFIG   raw domain config blob                              |  in this order;
//!  | STATE    per blob: kind u32, len u64, bytes                  |  crc32c of each in the
//!  | INDEX    zstd(LayerIndex serialized, see index.rs)           |  section table
//!  | FRAMETAB per frame: offset u64, len u32, pages u32,          |
//!  |          codec u32 (0 raw, 1 zstd), code u32     (24 bytes)  |
//!  | DIGESTS  per slot: xxh64 of the page u64 (xxh3-64 before v5) |
//!  +--------------------------------------------------------------+
//!  | SECTION TABLE: 6 x { kind u32, codec u32, offset u64,        |
//!  |                      len u64, crc32c u32, reserved u32 = 0 } |  32 bytes each
//!  +--------------------------------------------------------------+
//!  | TRAILER (64 bytes, written last)                             |
//!  |  0 magic "XCKPTEND" | 8 version u32 | 12 section count u32   |
//!  |  16 table offset u64 | 24 table len u64 | 32 file len u64     |
//!  |  40 frames len u64 | 48 frame count u64 | 56 crc32c(table)u32|
//!  |  60 crc32c(trailer bytes 0..60) u32                          |
//!  +--------------------------------------------------------------+
//!  end of file = trailer end
//! ```
//!
//! Frame `k` holds the slots following frame `k-1`'s (slots are numbered from 0 in push
//! order). The index maps each covered pfn to data (a slot), zero, evicted or unpopulated; a
//! pfn pushed several times during pre-copy points at its latest slot, and older copies are
//! dead slots. A file without a valid trailer is a torn write and is refused.
//!
//! With a key ([`LayerWriter::create_with_key`]) a layer is written as format version 2: an
//! 80-byte preamble carrying the layer id, a random file nonce and a key check, and every frame
//! and section sealed with XChaCha20-Poly1305 ([`seal`]). Readers take both versions.
//!
//! Writing a layer (what the capture does):
//!
//! ```text
//! let lock = chain.lock_exclusive(wait)?;              // held for the whole capture
//! let mut writer = chain.begin_layer()?;               // temp file in the chain dir
//! let mut index = LayerIndex::new(pfn_count);
//! // compress workers, in parallel:  frame = compress_frame(&pages, level, writer.digest_kind())
//! // one writer thread, in order:    first = writer.push_frame(&frame)?;
//! //                                 index.set(pfn_i, PageEntry::Data, Some(first + i))
//! // zero / evicted / unpopulated:   index.set(pfn, PageEntry::Zero, None) ...
//! chain.commit_layer(writer, &meta, &index, &state, &config)?;   // finish + manifest
//! ```

pub mod blockbits;
mod checks;
mod decode_cost;
pub mod digest;
pub mod encode;
pub mod format;
pub mod frame;
pub mod index;
pub mod pipeline;
mod read_error;
pub mod reader;
mod reader_frames;
pub mod seal;
pub mod sink;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hv::{DomainIdentity, GuestType};

pub use decode_cost::{decode_cost, thread_cpu_ns, DecodeCost};
pub use digest::{page_digest, DigestKind, PageDigest};
pub use encode::{Encoding, EncodingUsed, StageTimes};
pub use frame::{compress_frame, Codec, Frame, MAX_FRAME_PAGES};
pub use index::{IndexCounts, LayerIndex};
pub use reader::{LayerFigures, LayerReadError, LayerReader};
pub use reader_frames::FrameCheck;
pub use seal::{KeyError, LayerKey};
pub use writer::{LayerWriteError, LayerWriter, TEMP_PREFIX};

/// Whether the layer file at `path` is encrypted (format version 2), from its first 12 bytes.
pub fn is_sealed_file(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 12];
    crate::fileio::open_nofollow(path)?.read_exact(&mut head)?;
    Ok(format::u32_at(&head, 8) == format::VERSION_SEALED)
}

/// Pages per zstd frame unless told otherwise (64 pages = 256 KiB).
pub const DEFAULT_FRAME_PAGES: u32 = 64;

/// Why a layer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Every populated page.
    Base,
    /// Pages dirtied since the parent layer.
    Incremental,
    /// Every page whose content differs from the chain (after tracking was lost).
    Resync,
}

/// A policy that evicted a page (restored as zeros). Zero and unpopulated pages are entries of
/// their own, not evictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvictPolicy {
    /// Free in the guest's page allocator (agent report).
    Free,
    /// Clean page cache dropped by the agent, then free.
    Cache,
    /// Ballooned out for the capture.
    Balloon,
}

/// What a layer says about one pfn it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageEntry {
    /// Page data is stored in a frame slot.
    Data,
    /// The page is all zeros.
    Zero,
    /// The page was evicted by a policy; it restores as zeros.
    Evicted(EvictPolicy),
    /// No frame behind the pfn (never populated, or ballooned out).
    Unpopulated,
}

/// Figures of the capture that produced a layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Pre-copy rounds run (the paused final round not counted).
    pub rounds: u32,
    /// Pause to resume, microseconds, measured.
    pub downtime_us: u64,
    /// Live pre-copy time, milliseconds.
    pub precopy_ms: u64,
    /// Whole capture time (start to layer committed), milliseconds.
    pub total_ms: u64,
    /// Pages the layer covers: dirty since its parent, or the whole pfn space for a base.
    pub dirty_pages: u64,
    /// Page copies sent in all rounds, re-sent pages included.
    pub sent_pages: u64,
    /// Pages stored as data.
    pub data_pages: u64,
    /// Pages recorded as zero.
    pub zero_pages: u64,
    /// Pfns recorded as unpopulated (in a base, the uncovered ones too).
    pub unpopulated_pages: u64,
    /// Pages evicted, per policy.
    pub evicted: BTreeMap<EvictPolicy, u64>,
    /// Free-form remarks for the summary (e.g. "free: no agent answered in 2 s").
    pub notes: Vec<String>,
    /// How the frames were encoded (`--compress`), absent in layers written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<encode::EncodingUsed>,
}

impl CaptureStats {
    /// Sets the page figures from the layer's `index`. In a base layer an uncovered pfn is
    /// unpopulated (docs/format.md), so it counts as unpopulated here: a base covers the whole
    /// pfn space, and a guest that ballooned down shows its unpopulated frames.
    pub fn count_pages(&mut self, index: &LayerIndex, base: bool) {
        let c = index.counts();
        let implicit = if base {
            index.pfn_count() - (c.data + c.zero + c.evicted + c.unpopulated)
        } else {
            0
        };
        self.data_pages = c.data;
        self.zero_pages = c.zero;
        self.unpopulated_pages = c.unpopulated + implicit;
        self.evicted = index.evicted_by();
        self.dirty_pages = c.data + c.zero + c.evicted + self.unpopulated_pages;
    }
}

/// The header of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Layer id, unique in its chain, increasing.
    pub id: u64,
    /// The layer this one is on top of.
    pub parent: Option<u64>,
    /// Base, incremental or resync.
    pub kind: LayerKind,
    /// The domain captured.
    pub domain: DomainIdentity,
    /// PV, PVH or HVM.
    pub guest_type: GuestType,
    /// Size of the pfn space.
    pub pfn_count: u64,
    /// vCPUs of the domain.
    pub vcpus: u32,
    /// Creation time (the pause instant), milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Pages per frame.
    pub frame_pages: u32,
    /// zstd level used (0 = stored raw).
    pub compress_level: i32,
    /// Capture figures.
    pub stats: CaptureStats,
    /// The group checkpoint this layer is part of (absent for a single-domain checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupTag>,
    /// Crash-consistent snapshots of the domain's disks, taken while it was stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<crate::disk::DiskSnapshot>,
}

/// Marks the layers of one group checkpoint: every member's layer carries the same tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTag {
    /// The group's name.
    pub name: String,
    /// The group checkpoint's id, increasing in the group (`restore --group NAME@ID`).
    pub id: u64,
    /// The instant every member was stopped, ms since the Unix epoch.
    pub instant_unix_ms: u64,
}
