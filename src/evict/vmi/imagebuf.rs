//! The buffer the guest kernel's image is read into, kept from one discovery to the next.
//!
//! The image spans more than the 32 MiB up to which glibc serves a block from its heaps, so a
//! new buffer is a new mapping and every page read into it is faulted in afresh; in a PV dom0
//! each fault is a trip through the hypervisor (2,287 of them, about 200 ms, in a base of the
//! test bed's PVH guest). A process that takes one base after another (`xckpt serve`) reuses
//! the pages already there.
//!
//! What the search relies on is kept: a page of the buffer it did not read is zero.

use std::sync::Mutex;

use crate::hv::PAGE_SIZE;

/// A buffer whose pages are zero except those flagged in `written`.
struct Kept {
    bytes: Vec<u8>,
    written: Vec<bool>,
}

/// At most one buffer, kept between a [`Pool::give`] and the next [`Pool::take`].
pub struct Pool(Mutex<Option<Kept>>);

/// The image buffers of this process.
pub static IMAGES: Pool = Pool::new();

impl Pool {
    /// An empty pool.
    pub const fn new() -> Self {
        Pool(Mutex::new(None))
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `overwritten.len()` pages, each zero unless flagged in `overwritten` (those
    /// are the caller's to overwrite whole and may hold anything): the kept one if there is
    /// one, its other written pages zeroed, else a new one.
    pub fn take(&self, overwritten: &[bool]) -> Vec<u8> {
        let len = overwritten.len() * PAGE_SIZE;
        let Some(Kept { mut bytes, written }) = self.kept().take() else {
            return vec![0u8; len];
        };
        let pages = bytes.len() / PAGE_SIZE;
        for (k, _) in written
            .iter()
            .zip(overwritten)
            .enumerate()
            .take(pages)
            .filter(|(_, (&w, &o))| w && !o)
        {
            bytes[k * PAGE_SIZE..(k + 1) * PAGE_SIZE].fill(0);
        }
        // Pages past the old length come zeroed; those past the new length go.
        bytes.resize(len, 0);
        bytes
    }

    /// Keep `bytes` for the next [`Pool::take`]; `written[k]` for each page `k` that may not
    /// be zero (pages past `written` must be zero).
    pub fn give(&self, bytes: Vec<u8>, written: Vec<bool>) {
        if bytes.len() % PAGE_SIZE == 0 {
            *self.kept() = Some(Kept { bytes, written });
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_is_zero_where_it_is_not_overwritten() {
        let pool = Pool::new();
        let mut b = pool.take(&[false; 4]);
        assert!(b.iter().all(|&x| x == 0) && b.len() == 4 * PAGE_SIZE);
        b.fill(7);
        pool.give(b, vec![true; 4]);
        // Shorter, page 1 to be overwritten: pages 0 and 2 zero again, page 1 left as it was.
        let b = pool.take(&[false, true, false]);
        assert_eq!(b.len(), 3 * PAGE_SIZE);
        assert!(b[..PAGE_SIZE].iter().all(|&x| x == 0));
        assert!(b[PAGE_SIZE..2 * PAGE_SIZE].iter().all(|&x| x == 7));
        assert!(b[2 * PAGE_SIZE..].iter().all(|&x| x == 0));
        pool.give(b, vec![false, true, false]);
        // Longer: the new pages are zero too.
        let b = pool.take(&[false; 6]);
        assert_eq!(b.len(), 6 * PAGE_SIZE);
        assert!(b.iter().all(|&x| x == 0));
        pool.give(b, vec![false; 6]);
    }
}
