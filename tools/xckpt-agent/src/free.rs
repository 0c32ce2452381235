//! Which guest frames are free in the Linux page allocator, from /proc/kpageflags.

use std::io::Read;

use crate::kcore::Kcore;

const KPF_BUDDY: u64 = 1 << 10;
const KPF_NOPAGE: u64 = 1 << 20;

/// Free frames as `(start, len)` runs, ascending.
pub struct Scan {
    pub runs: Vec<(u64, u64)>,
    /// Where block sizes came from: "kcore", or "heads" (one page per free block).
    pub orders: &'static str,
}

impl Scan {
    pub fn pages(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }
}

fn kpageflags() -> Result<Vec<u64>, String> {
    let mut raw = Vec::new();
    std::fs::File::open("/proc/kpageflags")
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| format!("cannot read /proc/kpageflags: {e}"))?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// Scan the guest's memory now.
pub fn scan() -> Result<Scan, String> {
    let flags = kpageflags()?;
    let kcore = Kcore::open().ok();
    Ok(
        free_runs(&flags, |pfn| kcore.as_ref().and_then(|k| k.order(pfn)))
            .with_orders(kcore.is_some()),
    )
}

impl Scan {
    fn with_orders(mut self, kcore: bool) -> Self {
        self.orders = if kcore { "kcore" } else { "heads" };
        self
    }
}

/// The free runs given each frame's kpageflags and a way to learn a free block's order. A
/// block counts only as far as its tail pages look free too (no flags at all): a block that
/// changed between the two reads shrinks to its head page.
pub fn free_runs(flags: &[u64], order: impl Fn(u64) -> Option<u32>) -> Scan {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut pfn = 0usize;
    while pfn < flags.len() {
        let f = flags[pfn];
        if f & KPF_BUDDY == 0 || f & KPF_NOPAGE != 0 {
            pfn += 1;
            continue;
        }
        let mut len = 1usize << order(pfn as u64).unwrap_or(0);
        if !pfn.is_multiple_of(len)
            || pfn + len > flags.len()
            || flags[pfn + 1..pfn + len].iter().any(|&t| t != 0)
        {
            len = 1;
        }
        match runs.last_mut() {
            Some((s, l)) if *s + *l == pfn as u64 => *l += len as u64,
            _ => runs.push((pfn as u64, len as u64)),
        }
        pfn += len;
    }
    Scan {
        runs,
        orders: "heads",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_extend_by_their_order_unless_a_tail_looks_used() {
        let mut flags = vec![1u64 << 5; 32]; // LRU pages
                                             // An order-2 block at 4, an order-1 block at 8 (adjacent run), an order-3 block at 16
                                             // whose tail 20 has flags (changed since): only its head counts.
        flags[4] = KPF_BUDDY;
        flags[5..8].fill(0);
        flags[8] = KPF_BUDDY;
        flags[9] = 0;
        flags[16] = KPF_BUDDY;
        flags[17..24].fill(0);
        flags[20] = 1 << 7;
        let order = |pfn| match pfn {
            4 => Some(2),
            8 => Some(1),
            16 => Some(3),
            _ => None,
        };
        let s = free_runs(&flags, order);
        assert_eq!(s.runs, vec![(4, 6), (16, 1)]);
        // Without orders, heads only.
        assert_eq!(
            free_runs(&flags, |_| None).runs,
            vec![(4, 1), (8, 1), (16, 1)]
        );
    }

    #[test]
    fn a_block_past_the_end_or_misaligned_or_without_a_page_is_one_page_or_none() {
        let mut flags = vec![0u64; 12];
        flags[0] = 1 << 5; // in use
        flags[2] = KPF_BUDDY; // order 2 claimed, but 2 is not a multiple of 4
        flags[8] = KPF_BUDDY; // order 3 claimed, runs past the 12 frames
        flags[11] = KPF_BUDDY | KPF_NOPAGE; // a hole, not free memory
        let order = |pfn| match pfn {
            2 => Some(2),
            8 => Some(3),
            _ => None,
        };
        let s = free_runs(&flags, order);
        assert_eq!(s.runs, vec![(2, 1), (8, 1)]);
        assert_eq!(s.pages(), 2);
        assert!(free_runs(&[], |_| Some(10)).runs.is_empty());
        // A whole buddy block of the largest order.
        let mut big = vec![0u64; 1 << 10];
        big[0] = KPF_BUDDY;
        assert_eq!(free_runs(&big, |_| Some(10)).runs, vec![(0, 1 << 10)]);
    }
}
