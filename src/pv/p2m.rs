//! The guest's physical-to-machine map, read through the frame-list tree its shared info
//! points at (`arch.pfn_to_mfn_frame_list_list`):
//!
//! ```text
//! frame list list (1 page) -> frame list pages (mfns) -> p2m leaf pages (mfns) -> p2m entries
//! ```
//!
//! With 512 entries a page, one frame list list covers 512³ pfns. Only its first
//! `max_pfn / 512² + 1` entries and the frame lists' first `max_pfn / 512 + 1` entries matter.

use std::collections::HashMap;

use super::{le64, PvError, FPP, INVALID_MFN, WORD};
use crate::hv::Pfn;

/// Frame-list-list entries in use for a guest whose highest pfn is `max_pfn`.
pub fn fll_entries(max_pfn: u64) -> usize {
    (max_pfn / (FPP * FPP) + 1) as usize
}

/// p2m leaf frames (= frame-list entries) for `max_pfn`.
pub fn leaf_count(max_pfn: u64) -> usize {
    (max_pfn / FPP + 1) as usize
}

/// Check frame numbers read from a frame list (list): none may be 0 (libxc refuses those
/// too: an unset entry).
pub fn check_frames(what: &str, frames: &[u64]) -> Result<(), PvError> {
    match frames.iter().position(|&m| m == 0 || m == INVALID_MFN) {
        Some(i) => Err(PvError::BadP2m(format!(
            "{what} entry {i} is {:#x}",
            frames[i]
        ))),
        None => Ok(()),
    }
}

/// Little-endian words of `bytes`, at most `n`.
pub fn words(bytes: &[u8], n: usize) -> Vec<u64> {
    (0..n.min(bytes.len() / WORD))
        .map(|i| le64(bytes, i))
        .collect()
}

/// A p2m: the mfn of every pfn (`INVALID_MFN` for none), and the mfns of its leaf frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2m {
    /// `mfns[pfn]`.
    pub mfns: Vec<u64>,
    /// The leaf frames holding the p2m, in order (mfns).
    pub leaves: Vec<u64>,
}

impl P2m {
    /// Build from the leaf frames' bytes (concatenated pages) for pfns `0..=max_pfn`.
    pub fn from_leaves(leaves: Vec<u64>, leaf_bytes: &[u8], max_pfn: u64) -> Result<Self, PvError> {
        let n = max_pfn as usize + 1;
        if leaves.len() != leaf_count(max_pfn) || leaf_bytes.len() < n * WORD {
            return Err(PvError::BadP2m(format!(
                "{} leaf frames ({} bytes) for max pfn {max_pfn:#x}",
                leaves.len(),
                leaf_bytes.len()
            )));
        }
        Ok(P2m {
            mfns: words(leaf_bytes, n),
            leaves,
        })
    }

    /// The mfn of `pfn`, if it has one.
    pub fn mfn(&self, pfn: Pfn) -> Option<u64> {
        self.mfns
            .get(pfn as usize)
            .copied()
            .filter(|&m| m != INVALID_MFN)
    }

    /// The inverse map.
    pub fn m2p(&self) -> M2p {
        M2p::new(&self.mfns)
    }

    /// The `PV_P2M` blob: one little-endian u64 mfn per pfn.
    pub fn to_blob(&self) -> Vec<u8> {
        self.mfns.iter().flat_map(|m| m.to_le_bytes()).collect()
    }

    /// The X86_PV_P2M_FRAMES record body: start pfn 0 (u32), end pfn = the highest pfn (u32),
    /// then the pfn of each leaf frame (u64).
    pub fn frames_record(&self, m2p: &M2p) -> Result<Vec<u8>, PvError> {
        let max_pfn = self.mfns.len().saturating_sub(1) as u64;
        let end = u32::try_from(max_pfn)
            .map_err(|_| PvError::BadP2m(format!("max pfn {max_pfn:#x} over 32 bits")))?;
        let mut v = Vec::with_capacity(8 + self.leaves.len() * WORD);
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&end.to_le_bytes());
        for (i, &mfn) in self.leaves.iter().enumerate() {
            let pfn = m2p.pfn(mfn, || format!("p2m frame list entry {i}"))?;
            v.extend_from_slice(&pfn.to_le_bytes());
        }
        Ok(v)
    }
}

/// The pfns of the changed entries between two p2ms (entries present in only one count).
pub fn changed_pfns(old: &[u64], new: &[u64]) -> Vec<Pfn> {
    let n = old.len().max(new.len());
    (0..n)
        .filter(|&i| old.get(i) != new.get(i))
        .map(|i| i as Pfn)
        .collect()
}

/// Machine-to-physical: the inverse of a p2m.
#[derive(Debug, Clone, Default)]
pub struct M2p {
    map: HashMap<u64, Pfn>,
}

impl M2p {
    /// Invert `mfns` (indexed by pfn; `INVALID_MFN` entries skipped).
    pub fn new(mfns: &[u64]) -> Self {
        let map = mfns
            .iter()
            .enumerate()
            .filter(|(_, &m)| m != INVALID_MFN)
            .map(|(p, &m)| (m, p as Pfn))
            .collect();
        M2p { map }
    }

    /// Invert a `PV_P2M` blob.
    pub fn from_blob(blob: &[u8]) -> Result<Self, PvError> {
        if blob.len() % WORD != 0 {
            return Err(PvError::BadBlob {
                what: "PV_P2M",
                reason: format!("{} bytes is not a multiple of 8", blob.len()),
            });
        }
        Ok(M2p::new(&words(blob, blob.len() / WORD)))
    }

    /// The pfn of `mfn`, or an error naming `what()` held it.
    pub fn pfn(&self, mfn: u64, what: impl FnOnce() -> String) -> Result<Pfn, PvError> {
        self.map
            .get(&mfn)
            .copied()
            .ok_or_else(|| PvError::ForeignMfn { what: what(), mfn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn tree_sizes() {
        assert_eq!(fll_entries(0), 1);
        assert_eq!(fll_entries(512 * 512 - 1), 1);
        assert_eq!(fll_entries(512 * 512), 2);
        assert_eq!(leaf_count(511), 1);
        assert_eq!(leaf_count(512), 2);
        assert_eq!(leaf_count(0xffff), 128);
    }

    #[test]
    fn zero_frame_entries_are_refused() {
        assert!(check_frames("fll", &[5, 6]).is_ok());
        let e = check_frames("frame list", &[5, 0]).unwrap_err();
        assert_eq!(e.to_string(), "bad p2m: frame list entry 1 is 0x0");
    }

    #[test]
    fn p2m_from_leaves_and_frames_record() {
        // 600 pfns: two leaf frames (mfns 0x900, 0x901), which the guest's own pfns 3 and 4
        // back; pfn i -> mfn 0x1000 + i, pfn 7 unpopulated.
        let max_pfn = 599;
        let mut mfns: Vec<u64> = (0..600).map(|i| 0x1000 + i).collect();
        mfns[7] = INVALID_MFN;
        mfns[3] = 0x900;
        mfns[4] = 0x901;
        let mut leaf = bytes(&mfns);
        leaf.resize(2 * 4096, 0xff);
        let p = P2m::from_leaves(vec![0x900, 0x901], &leaf, max_pfn).unwrap();
        assert_eq!(p.mfns.len(), 600);
        assert_eq!(p.mfn(7), None);
        assert_eq!(p.mfn(8), Some(0x1008));
        assert_eq!(p.mfn(600), None);
        let m2p = p.m2p();
        let rec = p.frames_record(&m2p).unwrap();
        let mut want = 0u32.to_le_bytes().to_vec();
        want.extend_from_slice(&599u32.to_le_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&4u64.to_le_bytes());
        assert_eq!(rec, want);
        // The blob round-trips into the same inverse.
        let back = M2p::from_blob(&p.to_blob()).unwrap();
        assert_eq!(back.pfn(0x1008, String::new).unwrap(), 8);
        assert!(P2m::from_leaves(vec![0x900], &leaf, max_pfn).is_err());
    }

    #[test]
    fn a_leaf_outside_the_p2m_is_an_error() {
        let mfns: Vec<u64> = (0..10).map(|i| 0x1000 + i).collect();
        let mut leaf = bytes(&mfns);
        leaf.resize(4096, 0);
        let p = P2m::from_leaves(vec![0x77], &leaf, 9).unwrap();
        let e = p.frames_record(&p.m2p()).unwrap_err();
        assert_eq!(
            e,
            PvError::ForeignMfn {
                what: "p2m frame list entry 0".into(),
                mfn: 0x77
            }
        );
    }

    #[test]
    fn changed_entries() {
        assert_eq!(changed_pfns(&[1, 2, 3], &[1, 5, 3, 4]), vec![1, 3]);
        assert!(changed_pfns(&[1], &[1]).is_empty());
    }

    #[test]
    fn bad_blob() {
        assert!(M2p::from_blob(&[0; 7]).is_err());
    }
}
