//! A bitmap of atomic words, set by writers and fetched-and-cleared by readers.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::hv::PfnBitmap;

/// One bit per pfn in `AtomicU64` words, Xen's log-dirty layout (bit `i % 64` of word `i / 64`).
pub(crate) struct AtomicBitmap {
    words: Box<[AtomicU64]>,
    bits: u64,
}

impl AtomicBitmap {
    pub(crate) fn new(bits: u64) -> Self {
        let words = (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        AtomicBitmap { words, bits }
    }

    /// Set bit `i`; returns whether it was clear before.
    #[inline]
    pub(crate) fn set(&self, i: u64) -> bool {
        let mask = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(mask, Ordering::AcqRel) & mask == 0
    }

    /// Clear bit `i`; returns whether it was set before.
    pub(crate) fn clear(&self, i: u64) -> bool {
        let mask = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_and(!mask, Ordering::AcqRel) & mask != 0
    }

    #[inline]
    pub(crate) fn get(&self, i: u64) -> bool {
        i < self.bits
            && self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Clear every bit.
    pub(crate) fn clear_all(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Release);
        }
    }

    /// Move every bit into `into` (resized to the bitmap's length) and clear it, word by word
    /// with an atomic swap: a bit set concurrently is either moved now or stays for next time.
    /// Returns the number of bits moved.
    pub(crate) fn take_into(&self, into: &mut PfnBitmap) -> u64 {
        into.clear();
        into.resize(self.bits as usize, false);
        let raw = into.as_raw_mut_slice();
        let mut count = 0u64;
        for (dst, w) in raw.iter_mut().zip(self.words.iter()) {
            let v = if w.load(Ordering::Relaxed) == 0 {
                0
            } else {
                w.swap(0, Ordering::AcqRel)
            };
            *dst = v;
            count += u64::from(v.count_ones());
        }
        count
    }

    /// Number of set bits.
    pub(crate) fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum()
    }

    /// Set bits as maximal ranges.
    pub(crate) fn ranges(&self) -> Vec<std::ops::Range<u64>> {
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        for i in 0..self.bits {
            if self.get(i) {
                match out.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => out.push(i..i + 1),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_moves_and_clears() {
        let b = AtomicBitmap::new(130);
        assert!(b.set(0));
        assert!(!b.set(0));
        b.set(129);
        let mut out = PfnBitmap::new();
        assert_eq!(b.take_into(&mut out), 2);
        assert_eq!(out.len(), 130);
        assert!(out[0] && out[129] && !out[1]);
        assert_eq!(b.take_into(&mut out), 0);
        assert!(out.not_any());
        b.set(5);
        b.set(6);
        b.set(9);
        assert_eq!(b.ranges(), vec![5..7, 9..10]);
    }
}
