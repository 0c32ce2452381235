//! The page index of a layer. INTERFACE STUB.

use super::PageEntry;
use crate::hv::Pfn;

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

/// Per-pfn entries of one layer, with the frame slot of each data page. Last `set` wins.
#[derive(Debug, Clone)]
pub struct LayerIndex {}

impl LayerIndex {
    /// An empty index over `pfn_count` pfns (covers nothing).
    pub fn new(pfn_count: u64) -> Self {
        let _ = pfn_count;
        todo!()
    }
    /// Record `entry` for `pfn`; `slot` is the frame slot for [`PageEntry::Data`], else None.
    pub fn set(&mut self, pfn: Pfn, entry: PageEntry, slot: Option<u64>) {
        let _ = (pfn, entry, slot);
        todo!()
    }
    /// What the layer says about `pfn` (None: not covered, inherit from the parent).
    pub fn get(&self, pfn: Pfn) -> Option<(PageEntry, Option<u64>)> {
        let _ = pfn;
        todo!()
    }
    /// Counts per kind.
    pub fn counts(&self) -> IndexCounts {
        todo!()
    }
    /// Size of the pfn space.
    pub fn pfn_count(&self) -> u64 {
        todo!()
    }
}
