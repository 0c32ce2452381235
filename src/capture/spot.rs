//! The spot check of an incremental: pages the dirty log did not report must equal the chain.
//!
//! A random sample of pages the chain holds as data is read from the domain *before* round 0's
//! fetch-and-clear. A sampled page that differs from the chain was written since the last layer,
//! before that fetch, so the fetch must report it. If it does not, the log lost writes (another
//! consumer cleared it, or it was restarted) and the run becomes a resync.

use super::CaptureError;
use crate::compose::PageState;
use crate::hv::{Checkpointable, Pfn, PfnBitmap, PAGE_SIZE};
use crate::layer::page_digest;
use crate::store::Chain;

/// Pages sampled per incremental.
pub const SAMPLES: usize = 64;

/// Sampled pfns that differ from the chain at `parent`, read now.
pub fn differing<D: Checkpointable + ?Sized>(
    dom: &D,
    chain: &Chain,
    parent: u64,
) -> Result<Vec<Pfn>, CaptureError> {
    // A few lookups: the layers are opened, not composed (no pass over every pfn).
    let image = chain.layers(Some(parent))?;
    let n = image.pfn_count();
    let mut rng = fastrand::Rng::new();
    let mut pfns: Vec<Pfn> = (0..SAMPLES * 8)
        .map(|_| rng.u64(0..n.max(1)))
        .filter(|&p| matches!(image.page_state(p), PageState::Data(_)))
        .take(SAMPLES)
        .collect();
    pfns.sort_unstable();
    pfns.dedup();
    if pfns.is_empty() {
        return Ok(Vec::new());
    }
    let mapped = dom.map_batch(&pfns)?;
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut out = Vec::new();
    for (i, &pfn) in pfns.iter().enumerate() {
        // A page that cannot be mapped now (ballooned out) differs from the chain's data.
        let same = match mapped.page(i) {
            Ok(page) => {
                page.copy_to(&mut buf);
                image.page_digest(pfn) == Some(page_digest(&buf))
            }
            Err(_) => false,
        };
        if !same {
            out.push(pfn);
        }
    }
    Ok(out)
}

/// The sampled pages that differ but were not reported dirty: evidence of lost tracking.
pub fn unexplained(differing: &[Pfn], dirty: &PfnBitmap) -> Vec<Pfn> {
    differing
        .iter()
        .copied()
        .filter(|&p| !dirty.get(p as usize).is_some_and(|b| *b))
        .collect()
}
