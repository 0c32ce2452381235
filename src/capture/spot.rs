//! The spot check of an incremental: pages the dirty log did not report must equal the chain.
//!
//! A random sample of the pages the parent layer stores as data is read from the domain
//! *before* round 0's fetch-and-clear. A sampled page that differs from the chain was written
//! since the last layer, before that fetch, so the fetch must report it. If it does not, the
//! log lost writes (another consumer cleared it, or it was restarted) and the run becomes a
//! resync.
//!
//! The sample is drawn when a layer is committed ([`draw`]) and kept in the chain's tracking
//! state, so the next run reads its pages from the domain without opening any layer. Where
//! none was kept (an encrypted chain, an older manifest), the parent layer is opened and the
//! sample drawn from it: one layer, not the whole chain.

use super::CaptureError;
use crate::hv::{Checkpointable, Pfn, PfnBitmap, PAGE_SIZE};
use crate::layer::{LayerIndex, PageDigest};
use crate::store::{Chain, SpotPage};

/// Pages sampled per incremental.
pub const SAMPLES: usize = 64;

/// Up to [`SAMPLES`] random data pages of `index`, in pfn order, with the digest of their
/// slot. The pages a layer stores are the chain's pages at that point by definition, and
/// every sample is a populated page however sparse the pfn space (a PVH guest's is mostly
/// hole); they are the pages the guest wrote in that layer's interval, the likeliest to be
/// written again.
pub fn draw(index: &LayerIndex, digest: impl Fn(u64) -> Option<PageDigest>) -> Vec<SpotPage> {
    // A reservoir: each page at most once, uniformly, in memory for SAMPLES pages whatever
    // the layer's size (the pages of a large base are not collected).
    let mut rng = fastrand::Rng::new();
    let mut picked: Vec<(Pfn, u64)> = Vec::with_capacity(SAMPLES);
    for (seen, page) in index.data_slots().enumerate() {
        if picked.len() < SAMPLES {
            picked.push(page);
        } else if let Some(at) = picked.get_mut(rng.usize(0..=seen)) {
            *at = page;
        }
    }
    picked.sort_unstable();
    picked
        .into_iter()
        .filter_map(|(pfn, slot)| {
            let d = digest(slot)?;
            Some(SpotPage {
                pfn,
                digest: d.value,
                hash: d.kind,
            })
        })
        .collect()
}

/// Sampled pfns that differ from the chain at `parent`, read now: the sample `kept` at the
/// parent's commit, or, if there is none, one drawn from the parent layer.
pub fn differing<D: Checkpointable + ?Sized>(
    dom: &D,
    chain: &Chain,
    parent: u64,
    kept: &[SpotPage],
) -> Result<Vec<Pfn>, CaptureError> {
    let drawn;
    let sample = if kept.is_empty() {
        let layer = chain.open_layer(parent)?;
        drawn = draw(layer.index(), |slot| layer.slot_digest(slot));
        &drawn[..]
    } else {
        kept
    };
    if sample.is_empty() {
        return Ok(Vec::new());
    }
    let pfns: Vec<Pfn> = sample.iter().map(|s| s.pfn).collect();
    let mapped = dom.map_batch(&pfns)?;
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut out = Vec::new();
    for (i, s) in sample.iter().enumerate() {
        // A page that cannot be mapped now (ballooned out) differs from the chain's data.
        let same = match mapped.page(i) {
            Ok(page) => {
                page.copy_to(&mut buf);
                s.recorded().matches(&buf)
            }
            Err(_) => false,
        };
        if !same {
            out.push(s.pfn);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{DigestKind, PageEntry};

    fn index(data: u64) -> LayerIndex {
        let mut idx = LayerIndex::new(4 * data + 8);
        for i in 0..data {
            idx.set(4 * i, PageEntry::Data, Some(100 + i));
            idx.set(4 * i + 1, PageEntry::Zero, None);
        }
        idx
    }

    #[test]
    fn a_sample_holds_distinct_data_pages_with_their_slots_digests() {
        for data in [0u64, 10, 64, 65, 5000] {
            let sample = draw(&index(data), |slot| {
                Some(PageDigest {
                    kind: DigestKind::Xxh64,
                    value: slot * 3,
                })
            });
            assert_eq!(
                sample.len() as u64,
                data.min(SAMPLES as u64),
                "{data} pages"
            );
            assert!(
                sample.windows(2).all(|w| w[0].pfn < w[1].pfn),
                "sorted, distinct"
            );
            for s in &sample {
                assert_eq!(s.pfn % 4, 0, "a data page");
                assert_eq!(s.digest, (100 + s.pfn / 4) * 3, "its own slot's digest");
                assert_eq!(s.hash, DigestKind::Xxh64, "and its hash");
            }
        }
    }
}
