//! Which pages the copy path may evict: free in the agent's report and not dirtied since
//! log-dirty was armed.

use crate::hv::{Pfn, PfnBitmap};
use crate::layer::EvictPolicy;

use super::AgentReply;

/// The agent's report, minus every page dirtied since tracking was armed.
#[derive(Debug, Clone)]
pub struct FreeFilter {
    free: PfnBitmap,
    cache: PfnBitmap,
    /// Every page a fetch-and-clear reported dirty after the arming one.
    dirtied: PfnBitmap,
}

impl FreeFilter {
    /// The filter for `reply` over `pfn_count` pfns (runs past the end are cut).
    pub fn new(pfn_count: u64, reply: &AgentReply) -> Self {
        let n = pfn_count as usize;
        let bits = |runs: &[(u64, u64)]| {
            let mut b = PfnBitmap::repeat(false, n);
            for &(start, len) in runs {
                let s = (start as usize).min(n);
                let e = (start.saturating_add(len) as usize).min(n);
                b[s..e].fill(true);
            }
            b
        };
        FreeFilter {
            free: bits(&reply.free),
            cache: bits(&reply.cache),
            dirtied: PfnBitmap::repeat(false, n),
        }
    }

    /// Take the bits of a fetch-and-clear made after arming.
    pub fn note_dirty(&mut self, bits: &PfnBitmap) {
        if bits.len() == self.dirtied.len() {
            self.dirtied |= bits;
        } else {
            for p in bits.iter_ones() {
                if p < self.dirtied.len() {
                    self.dirtied.set(p, true);
                }
            }
        }
    }

    /// The policy that evicts `pfn` now, if any.
    pub fn evicts(&self, pfn: Pfn) -> Option<EvictPolicy> {
        let i = usize::try_from(pfn).ok()?;
        if self.dirtied.get(i).is_none_or(|b| *b) {
            return None;
        }
        if self.free[i] {
            Some(EvictPolicy::Free)
        } else if self.cache[i] {
            Some(EvictPolicy::Cache)
        } else {
            None
        }
    }

    /// Pages the report gave for `policy` (before the dirty rule).
    pub fn count(&self, policy: EvictPolicy) -> u64 {
        match policy {
            EvictPolicy::Free => self.free.count_ones() as u64,
            EvictPolicy::Cache => self.cache.count_ones() as u64,
            EvictPolicy::Balloon => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evict::GuestMemInfo;

    #[test]
    fn a_page_dirtied_after_arming_is_never_evicted() {
        let reply = AgentReply {
            free: vec![(10, 5)],
            cache: vec![(20, 2), (1000, 10)],
            mem: GuestMemInfo::default(),
            mem_after_drop: None,
        };
        let mut f = FreeFilter::new(64, &reply);
        assert_eq!(f.evicts(9), None);
        assert_eq!(f.evicts(10), Some(EvictPolicy::Free));
        assert_eq!(f.evicts(21), Some(EvictPolicy::Cache));
        assert_eq!(f.evicts(1000), None);
        let mut d = PfnBitmap::repeat(false, 64);
        d.set(12, true);
        d.set(20, true);
        f.note_dirty(&d);
        assert_eq!(f.evicts(12), None);
        assert_eq!(f.evicts(20), None);
        assert_eq!(f.evicts(13), Some(EvictPolicy::Free));
        assert_eq!(f.count(EvictPolicy::Cache), 2);
    }
}
