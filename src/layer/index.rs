//! The page index of a layer: what the layer says about each pfn of the domain.
//!
//! One bitmap per kind over the whole pfn space (`covered`, `data`, `zero`, `unpopulated`, and
//! one per [`EvictPolicy`]), plus, for data pages, the frame slot of each page. In memory the
//! bitmaps are [`BlockBits`]: only the 4096-pfn blocks holding a set bit exist, so a PVH
//! guest's index (a million pfns, 65,000 of them populated) costs its populated stretches, not
//! its space. While a capture fills the index the slots live in a chunked table addressed by
//! pfn (cheap random `set`); the packed form, used by readers and on disk, keeps only the data
//! pages' slots, in pfn order, addressed by `rank(data, pfn)` through a rank directory (a
//! prefix popcount per 512 pfns), so a lookup is O(1) and costs 8 bytes per data page.
//!
//! Serialized form (INDEX section payload, before zstd; little-endian):
//!
//! ```text
//! 0   u64 pfn_count        P
//! 8   u64 data_count       D = popcount(data)
//! 16  u32 bitmap_count     7
//! 20  u32 reserved         0
//! 24  7 bitmaps of W = ceil(P / 64) u64 words each, bit i of word i/64 = pfn i:
//!     covered, data, zero, unpopulated, evicted-free, evicted-cache, evicted-balloon
//! ..  D x u64 slot, the slot of each data page in increasing pfn order
//! ```

use super::blockbits::{BlockBits, BLOCK_WORDS};
use super::{EvictPolicy, PageEntry};
use crate::hv::{Pfn, PfnBitmap};

/// Counts of entries in an index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCounts {
    /// Data pages.
    pub data: u64,
    /// Zero pages.
    pub zero: u64,
    /// Evicted pages (all policies).
    pub evicted: u64,
    /// Unpopulated pfns recorded.
    pub unpopulated: u64,
}

const POLICIES: [EvictPolicy; 3] = [EvictPolicy::Free, EvictPolicy::Cache, EvictPolicy::Balloon];
const BITMAPS: usize = 7;
const CHUNK_SHIFT: u32 = 12;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const NO_SLOT: u64 = u64::MAX;
/// Size of the serialized header.
const HEADER: usize = 24;
/// The largest pfn space an index accepts (2^32 pages = 16 TiB).
pub const MAX_PFN_COUNT: u64 = 1 << 32;

fn policy_no(p: EvictPolicy) -> usize {
    match p {
        EvictPolicy::Free => 0,
        EvictPolicy::Cache => 1,
        EvictPolicy::Balloon => 2,
    }
}

#[derive(Debug, Clone)]
enum Slots {
    /// Slot per pfn, in chunks of 4096 pfns allocated on first use.
    Chunked(Vec<Option<Box<[u64]>>>),
    /// Slots of data pages in pfn order, and the rank directory over `data`.
    Packed { slots: Vec<u64>, rank: Vec<u64> },
}

/// Per-pfn entries of one layer, with the frame slot of each data page. Last `set` wins.
#[derive(Debug, Clone)]
pub struct LayerIndex {
    pfn_count: u64,
    covered: BlockBits,
    data: BlockBits,
    zero: BlockBits,
    unpop: BlockBits,
    evict: [BlockBits; 3],
    slots: Slots,
}

fn bitmap(n: u64) -> BlockBits {
    BlockBits::new(n as usize)
}

impl LayerIndex {
    /// An empty index over `pfn_count` pfns (covers nothing).
    pub fn new(pfn_count: u64) -> Self {
        LayerIndex {
            pfn_count,
            covered: bitmap(pfn_count),
            data: bitmap(pfn_count),
            zero: bitmap(pfn_count),
            unpop: bitmap(pfn_count),
            evict: [bitmap(pfn_count), bitmap(pfn_count), bitmap(pfn_count)],
            slots: Slots::Chunked(Vec::new()),
        }
    }

    fn all_mut(&mut self) -> [&mut BlockBits; BITMAPS] {
        let [a, b, c] = &mut self.evict;
        [
            &mut self.covered,
            &mut self.data,
            &mut self.zero,
            &mut self.unpop,
            a,
            b,
            c,
        ]
    }

    fn all(&self) -> [&BlockBits; BITMAPS] {
        let [a, b, c] = &self.evict;
        [&self.covered, &self.data, &self.zero, &self.unpop, a, b, c]
    }

    /// Record `entry` for `pfn`; `slot` is the frame slot for [`PageEntry::Data`], else None.
    /// A pfn beyond the pfn space grows it (and [`super::LayerWriter::finish`] then refuses an
    /// index whose size differs from the layer's).
    pub fn set(&mut self, pfn: Pfn, entry: PageEntry, slot: Option<u64>) {
        if pfn >= self.pfn_count {
            self.pfn_count = pfn + 1;
            for b in self.all_mut() {
                b.grow(pfn as usize + 1);
            }
        }
        self.unpack();
        let i = pfn as usize;
        for b in self.all_mut().into_iter().skip(1) {
            b.set(i, false);
        }
        self.covered.set(i, true);
        match entry {
            PageEntry::Data => self.data.set(i, true),
            PageEntry::Zero => self.zero.set(i, true),
            PageEntry::Unpopulated => self.unpop.set(i, true),
            PageEntry::Evicted(p) => self.evict[policy_no(p)].set(i, true),
        }
        if let Slots::Chunked(chunks) = &mut self.slots {
            let c = i >> CHUNK_SHIFT;
            if chunks.len() <= c {
                chunks.resize_with(c + 1, || None);
            }
            let chunk = chunks[c].get_or_insert_with(|| vec![NO_SLOT; CHUNK].into_boxed_slice());
            chunk[i & (CHUNK - 1)] = match entry {
                PageEntry::Data => slot.unwrap_or(NO_SLOT),
                _ => NO_SLOT,
            };
        }
    }

    /// What the layer says about `pfn` (None: not covered, inherit from the parent).
    pub fn get(&self, pfn: Pfn) -> Option<(PageEntry, Option<u64>)> {
        let entry = self.entry(pfn)?;
        if entry != PageEntry::Data {
            return Some((entry, None));
        }
        let slot = self.slot_of(pfn);
        Some((entry, (slot != NO_SLOT).then_some(slot)))
    }

    /// What the layer says about `pfn`, without looking up the slot of a data page.
    pub fn entry(&self, pfn: Pfn) -> Option<PageEntry> {
        let i = usize::try_from(pfn)
            .ok()
            .filter(|&i| i < self.covered.len())?;
        if !self.covered.get(i) {
            None
        } else if self.data.get(i) {
            Some(PageEntry::Data)
        } else if self.zero.get(i) {
            Some(PageEntry::Zero)
        } else if self.unpop.get(i) {
            Some(PageEntry::Unpopulated)
        } else {
            let p = (0..3).find(|&p| self.evict[p].get(i))?;
            Some(PageEntry::Evicted(POLICIES[p]))
        }
    }

    fn slot_of(&self, pfn: Pfn) -> u64 {
        let i = pfn as usize;
        match &self.slots {
            Slots::Chunked(chunks) => chunks
                .get(i >> CHUNK_SHIFT)
                .and_then(|c| c.as_ref())
                .map_or(NO_SLOT, |c| c[i & (CHUNK - 1)]),
            Slots::Packed { slots, rank } => {
                let r = self.data.rank(rank, i);
                slots.get(r).copied().unwrap_or(NO_SLOT)
            }
        }
    }

    /// Evicted pages per policy (policies with none left out).
    pub fn evicted_by(&self) -> std::collections::BTreeMap<EvictPolicy, u64> {
        POLICIES
            .iter()
            .zip(&self.evict)
            .map(|(&p, b)| (p, b.count_ones() as u64))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Counts per kind.
    pub fn counts(&self) -> IndexCounts {
        IndexCounts {
            data: self.data.count_ones() as u64,
            zero: self.zero.count_ones() as u64,
            evicted: self.evict.iter().map(|b| b.count_ones() as u64).sum(),
            unpopulated: self.unpop.count_ones() as u64,
        }
    }

    /// Size of the pfn space.
    pub fn pfn_count(&self) -> u64 {
        self.pfn_count
    }

    /// The covered pfns, in increasing order.
    pub fn covered(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.covered.iter_ones().map(|i| i as Pfn)
    }

    /// Lay this layer over `populated` (the pfns of the layers below that are populated): the
    /// pfns it covers become populated unless it records them unpopulated; the others keep
    /// their bit. Word by word, and only the words this layer covers.
    pub fn overlay_populated(&self, populated: &mut PfnBitmap) {
        let len = self.covered.len().min(populated.len());
        let words = populated.as_raw_mut_slice();
        for (w, cov, unpop) in self.covered_words(len) {
            words[w] = (words[w] & !cov) | (cov & !unpop);
        }
    }

    /// The words of the covered bitmap with a pfn below `len` covered, ascending, each with
    /// the covered pfns this layer records unpopulated: word `w` holds pfns `64w..64w+63`
    /// (bit `k` is pfn `64w + k`), those from `len` on cleared.
    pub fn covered_words(&self, len: usize) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.covered
            .words()
            .take_while(move |&(w, _)| w * 64 < len)
            .map(move |(w, bits)| {
                let mask = match len - w * 64 {
                    rest @ 1..=63 => (1u64 << rest) - 1,
                    _ => u64::MAX,
                };
                (w, bits & mask, self.unpop.word(w) & mask)
            })
            .filter(|&(_, bits, _)| bits != 0)
    }

    /// Every covered pfn with its entry and slot, in increasing pfn order.
    pub fn iter(&self) -> impl Iterator<Item = (Pfn, PageEntry, Option<u64>)> + '_ {
        self.covered()
            .filter_map(|pfn| self.get(pfn).map(|(e, s)| (pfn, e, s)))
    }

    /// The data pages with their slots, in increasing pfn order.
    pub fn data_slots(&self) -> impl Iterator<Item = (Pfn, u64)> + '_ {
        let packed = match &self.slots {
            Slots::Packed { slots, .. } => Some(slots),
            Slots::Chunked(_) => None,
        };
        self.data.iter_ones().enumerate().map(move |(r, i)| {
            let slot = match packed {
                Some(slots) => slots.get(r).copied().unwrap_or(NO_SLOT),
                None => self.slot_of(i as Pfn),
            };
            (i as Pfn, slot)
        })
    }

    /// Switch to the compact read-only form (slots in pfn order with a rank directory).
    /// `set` after `pack` unpacks again.
    pub fn pack(&mut self) {
        if let Slots::Chunked(_) = self.slots {
            let slots: Vec<u64> = self.data_slots().map(|(_, s)| s).collect();
            let rank = self.data.rank_directory();
            self.slots = Slots::Packed { slots, rank };
        }
    }

    fn unpack(&mut self) {
        if let Slots::Packed { .. } = self.slots {
            let pairs: Vec<(Pfn, u64)> = self.data_slots().collect();
            let mut chunks: Vec<Option<Box<[u64]>>> = Vec::new();
            for (pfn, slot) in pairs {
                let i = pfn as usize;
                let c = i >> CHUNK_SHIFT;
                if chunks.len() <= c {
                    chunks.resize_with(c + 1, || None);
                }
                let chunk =
                    chunks[c].get_or_insert_with(|| vec![NO_SLOT; CHUNK].into_boxed_slice());
                chunk[i & (CHUNK - 1)] = slot;
            }
            self.slots = Slots::Chunked(chunks);
        }
    }

    /// The serialized form (see the module doc), uncompressed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let words = self.pfn_count.div_ceil(64) as usize;
        let data_count = self.data.count_ones();
        let mut out = Vec::with_capacity(HEADER + (BITMAPS * words + data_count) * 8);
        out.extend_from_slice(&self.pfn_count.to_le_bytes());
        out.extend_from_slice(&(data_count as u64).to_le_bytes());
        out.extend_from_slice(&(BITMAPS as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for b in self.all() {
            // Bits past pfn_count are never set: `set` only touches bits below it.
            for w in 0..words {
                out.extend_from_slice(&b.word(w).to_le_bytes());
            }
        }
        for (_, slot) in self.data_slots() {
            out.extend_from_slice(&slot.to_le_bytes());
        }
        out
    }

    /// The serialized size of an index over `pfn_count` pfns with `data_count` data pages.
    pub fn serialized_len(pfn_count: u64, data_count: u64) -> Option<usize> {
        let words = pfn_count.checked_add(63)? / 64;
        let n = (BITMAPS as u64)
            .checked_mul(words)?
            .checked_add(data_count)?;
        usize::try_from(n.checked_mul(8)?.checked_add(HEADER as u64)?).ok()
    }

    /// Parse the serialized form, checking its consistency: sizes, disjoint kind bitmaps whose
    /// union is `covered`, no bits past the pfn space, and every slot below `slot_count`.
    pub fn from_bytes(bytes: &[u8], slot_count: u64) -> Result<LayerIndex, String> {
        let (pfn_count, data_count) = parse_header(bytes)?;
        let expect = LayerIndex::serialized_len(pfn_count, data_count)
            .ok_or_else(|| format!("index of {pfn_count} pfns is too large"))?;
        if bytes.len() != expect {
            return Err(format!("index is {} bytes, {expect} expected", bytes.len()));
        }
        let words = pfn_count.div_ceil(64) as usize;
        let mut maps: Vec<BlockBits> = Vec::with_capacity(BITMAPS);
        for b in 0..BITMAPS {
            let start = HEADER + b * words * 8;
            let raw = &bytes[start..start + words * 8];
            let tail = pfn_count % 64;
            if tail != 0 && le_u64(&raw[raw.len() - 8..]) >> tail != 0 {
                return Err(format!("bitmap {b} has bits past pfn {pfn_count}"));
            }
            maps.push(BlockBits::from_words(
                pfn_count as usize,
                raw.chunks_exact(8).map(le_u64),
            ));
        }
        check_partition(&maps)?;
        let slots_at = HEADER + BITMAPS * words * 8;
        let slots: Vec<u64> = bytes[slots_at..].chunks_exact(8).map(le_u64).collect();
        if maps[1].count_ones() as u64 != data_count {
            return Err(format!(
                "data bitmap disagrees with data count {data_count}"
            ));
        }
        if let Some(bad) = slots.iter().find(|&&s| s >= slot_count) {
            return Err(format!(
                "slot {bad} beyond the {slot_count} slots of the frames"
            ));
        }
        let rank = maps[1].rank_directory();
        let mut it = maps.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(LayerIndex {
            pfn_count,
            covered: next(),
            data: next(),
            zero: next(),
            unpop: next(),
            evict: [next(), next(), next()],
            slots: Slots::Packed { slots, rank },
        })
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

fn parse_header(bytes: &[u8]) -> Result<(u64, u64), String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "index of {} bytes is shorter than its header",
            bytes.len()
        ));
    }
    let pfn_count = le_u64(&bytes[0..8]);
    let data_count = le_u64(&bytes[8..16]);
    let nmaps = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if nmaps as usize != BITMAPS {
        return Err(format!("index has {nmaps} bitmaps, {BITMAPS} expected"));
    }
    if pfn_count > MAX_PFN_COUNT {
        return Err(format!("pfn count {pfn_count} exceeds {MAX_PFN_COUNT}"));
    }
    if data_count > pfn_count {
        return Err(format!(
            "{data_count} data pages in a space of {pfn_count} pfns"
        ));
    }
    Ok((pfn_count, data_count))
}

/// Kinds (maps 1..) must be pairwise disjoint and their union must be `covered` (map 0); only
/// the blocks some map holds are looked at.
fn check_partition(maps: &[BlockBits]) -> Result<(), String> {
    let blocks = maps.iter().map(BlockBits::block_count).max().unwrap_or(0);
    for b in (0..blocks).filter(|&b| maps.iter().any(|m| m.has_block(b))) {
        for w in b * BLOCK_WORDS..(b + 1) * BLOCK_WORDS {
            let (mut union, mut overlap) = (0u64, 0u64);
            for m in &maps[1..] {
                let v = m.word(w);
                overlap |= union & v;
                union |= v;
            }
            if overlap != 0 {
                return Err(format!(
                    "pfn {} has two kinds",
                    w * 64 + overlap.trailing_zeros() as usize
                ));
            }
            if union != maps[0].word(w) {
                return Err(format!(
                    "covered bitmap disagrees with the kinds near pfn {}",
                    w * 64
                ));
            }
        }
    }
    Ok(())
}
