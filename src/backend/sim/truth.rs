//! Ground truth: what memory held at an instant, to compare a restore against.

use xxhash_rust::xxh3::xxh3_64;

use crate::hv::PAGE_SIZE;

use super::config::TruthMode;
use super::Inner;

/// The digest recorded for an unpopulated pfn (no page content hashes to it in practice).
pub const UNPOPULATED_DIGEST: u64 = 0x554e_504f_5055_4c41;

/// The digest of one page's content: xxh3-64.
pub fn page_digest(page: &[u8]) -> u64 {
    xxh3_64(page)
}

/// A recorded snapshot of a sim's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// Caller's label, or `pause#N` for automatic snapshots.
    pub label: String,
    /// The sim's write generation counter at the snapshot.
    pub generation: u64,
    /// One digest per pfn ([`UNPOPULATED_DIGEST`] for holes).
    pub digests: Vec<u64>,
    /// With [`TruthMode::Full`]: all of memory, `pfn_count * 4096` bytes (holes read as zero).
    pub memory: Option<Vec<u8>>,
}

impl Truth {
    /// The pfns whose digest differs from `digests` (e.g. [`super::SimDomain::digests`] of a
    /// restored sim). A length mismatch counts every extra pfn as different.
    pub fn differing(&self, digests: &[u64]) -> Vec<u64> {
        let n = self.digests.len().max(digests.len());
        (0..n)
            .filter(|&i| self.digests.get(i) != digests.get(i))
            .map(|i| i as u64)
            .collect()
    }

    /// The recorded content of `pfn`, with [`TruthMode::Full`].
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        let start = usize::try_from(pfn).ok()?.checked_mul(PAGE_SIZE)?;
        self.memory.as_deref()?.get(start..start + PAGE_SIZE)
    }
}

/// Digest every pfn of `inner`; with `full`, also copy memory.
pub(crate) fn snapshot(inner: &Inner, label: String, mode: TruthMode) -> Truth {
    let n = inner.pfn_count as usize;
    let mut memory = (mode == TruthMode::Full).then(|| vec![0u8; n * PAGE_SIZE]);
    let mut buf = vec![0u8; PAGE_SIZE];
    let generation = inner.generation.load(std::sync::atomic::Ordering::SeqCst);
    let digests = (0..inner.pfn_count)
        .map(|pfn| {
            if !inner.populated.get(pfn) {
                return UNPOPULATED_DIGEST;
            }
            let dst = match memory.as_mut() {
                Some(m) => &mut m[pfn as usize * PAGE_SIZE..(pfn as usize + 1) * PAGE_SIZE],
                None => &mut buf[..],
            };
            inner.mem.page(pfn).copy_to(dst);
            page_digest(dst)
        })
        .collect();
    Truth {
        label,
        generation,
        digests,
        memory,
    }
}
