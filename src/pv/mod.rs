//! PV guests: the machine-frame bookkeeping a checkpoint of a paravirtualised guest needs,
//! as pure functions over bytes (no hypervisor calls here; `backend::xen::pv` feeds them).
//!
//! A PV guest sees machine frame numbers (mfns): its page tables, its CR3 and GDT frames and
//! its start-info pointer hold mfns, and its physical-to-machine map (p2m) says which mfn backs
//! each of its pfns. A restored guest gets new mfns, so libxc's save *normalises* (mfn → pfn)
//! everything that holds one, and its restore turns pfns back into the new mfns.
//!
//! Where xckpt normalises (see docs/design.md, "PV guests"):
//! * vCPU context (CR3, CR1, GDT frames, vCPU 0's start-info mfn in rdx): at capture, under
//!   the pause, with that instant's p2m ([`pagetable::normalise_vcpu_basic`]).
//! * page-table pages: *not* at capture. Layers store pages raw, as the guest had them, plus
//!   the p2m ([`P2m`], blob `PV_P2M`) and the page-table types ([`PageTypes`], blob
//!   `PV_PAGE_TYPES`) read under the pause. The restore stream normalises with the p2m and
//!   types of the point being restored ([`pagetable::normalise_pagetable`]). A page stored
//!   by an older layer and not dirtied since still holds the same mfns the newest p2m maps
//!   (mfns of a running guest only change when the guest rewrites its p2m, which dirties the
//!   pages involved; Xen marks a page dirty when it becomes a page table), so composing layers
//!   of different captures normalises correctly. A migrated or restored guest has new mfns
//!   and a new incarnation, which makes the next checkpoint a resync anyway.

pub mod p2m;
pub mod pagetable;

pub use p2m::{M2p, P2m};
pub use pagetable::PageTypes;

/// Bytes of a 64-bit guest's p2m entry, and of every frame number in these records.
pub const WORD: usize = 8;
/// p2m entries per page of a 64-bit guest.
pub const FPP: u64 = 512;
/// A p2m entry with no frame behind it.
pub const INVALID_MFN: u64 = u64::MAX;

/// Errors of PV normalisation: each names what held the bad frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PvError {
    /// A frame number that is not one of the guest's (not in its p2m).
    #[error("{what} holds mfn {mfn:#x}, which is not in the guest's p2m")]
    ForeignMfn {
        /// What held it, e.g. "L1 table pfn 0x1234 entry 5".
        what: String,
        /// The frame.
        mfn: u64,
    },
    /// A superpage mapping in a page table (libxc cannot migrate those either).
    #[error("{what} maps a superpage ({pte:#x}); PV superpages cannot be saved")]
    Superpage {
        /// Which table and entry.
        what: String,
        /// The entry.
        pte: u64,
    },
    /// The p2m structures are malformed.
    #[error("bad p2m: {0}")]
    BadP2m(String),
    /// A state blob is malformed.
    #[error("bad {what} blob: {reason}")]
    BadBlob {
        /// Which blob.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Only 64-bit PV guests (4-level page tables) are supported.
    #[error("{0}-bit PV guests are not supported (64-bit only)")]
    Width(u32),
}

fn le64(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * WORD..(i + 1) * WORD].try_into().expect("8 bytes"))
}

/// The X86_PV_INFO record body of a 64-bit guest: guest width 8, 4 page-table levels.
pub fn pv_info_record() -> Vec<u8> {
    vec![8, 4, 0, 0, 0, 0, 0, 0]
}

/// An X86_PV_VCPU_* record body: vcpu_id u32, reserved u32, then `blob`.
pub fn vcpu_record(vcpu: u32, blob: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + blob.len());
    v.extend_from_slice(&vcpu.to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(blob);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        assert_eq!(pv_info_record(), [8, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(vcpu_record(3, &[9, 9]), [3, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
    }
}
