//! The PV parts of the libxc stream (x86 PV domain header, type 1):
//!
//! ```text
//! X86_PV_INFO, X86_CPUID_POLICY, X86_MSR_POLICY (if captured), STATIC_DATA_END
//! X86_PV_P2M_FRAMES
//! PAGE_DATA * n   (page tables typed and normalised mfn -> pfn)
//! X86_TSC_INFO, SHARED_INFO, then per vCPU: X86_PV_VCPU_BASIC, _EXTENDED, _XSAVE, _MSRS
//! END
//! ```
//!
//! The order of `xg_sr_save.c` with `xg_sr_save_x86_pv.c`'s hooks. Page tables are stored raw
//! in the layers; they are normalised here with the p2m and page types captured with the
//! point being restored (see `crate::pv`).

use super::error::StreamWriteError;
use super::format::libxc_rec;
use crate::hv::{state_kind, StateBlob, PAGE_SIZE};
use crate::pv::{self, M2p, PageTypes, FPP};
use xen_sys::abi::VCPU_CTX_X64_SIZE;

/// The PV blobs of an image, checked.
#[derive(Debug)]
pub struct PvStreamState<'a> {
    /// X86_PV_INFO body.
    pub info: &'a [u8],
    /// X86_PV_P2M_FRAMES body.
    pub p2m_frames: &'a [u8],
    /// SHARED_INFO body.
    pub shared_info: &'a [u8],
    /// The vCPU records, (record type, body), in capture order.
    pub vcpus: Vec<(u32, &'a [u8])>,
    /// mfn → pfn at the capture of this point.
    pub m2p: M2p,
    /// Page-table pages at the capture of this point.
    pub types: PageTypes,
}

fn bad(what: &'static str, reason: impl Into<String>) -> StreamWriteError {
    StreamWriteError::BadState {
        what,
        reason: reason.into(),
    }
}

fn last<'a>(
    blobs: &'a [StateBlob],
    kind: u32,
    what: &'static str,
) -> Result<&'a [u8], StreamWriteError> {
    blobs
        .iter()
        .rev()
        .find(|b| b.kind == kind)
        .map(|b| b.data.as_slice())
        .ok_or(StreamWriteError::MissingState(what))
}

/// Pick and check the PV blobs.
pub fn collect_pv(blobs: &[StateBlob]) -> Result<PvStreamState<'_>, StreamWriteError> {
    let info = last(blobs, state_kind::X86_PV_INFO, "X86_PV_INFO")?;
    if info.len() != 8 || info[..2] != [8, 4] {
        return Err(bad(
            "X86_PV_INFO",
            format!("{info:?}: only 64-bit guests (width 8, 4 levels)"),
        ));
    }
    let p2m_frames = last(blobs, state_kind::X86_PV_P2M_FRAMES, "X86_PV_P2M_FRAMES")?;
    check_p2m_frames(p2m_frames)?;
    let shared_info = last(blobs, state_kind::SHARED_INFO, "SHARED_INFO")?;
    if shared_info.len() != PAGE_SIZE {
        return Err(bad(
            "SHARED_INFO",
            format!("{} bytes, expected 4096", shared_info.len()),
        ));
    }
    let kinds = [
        (state_kind::X86_PV_VCPU_BASIC, libxc_rec::X86_PV_VCPU_BASIC),
        (
            state_kind::X86_PV_VCPU_EXTENDED,
            libxc_rec::X86_PV_VCPU_EXTENDED,
        ),
        (state_kind::X86_PV_VCPU_XSAVE, libxc_rec::X86_PV_VCPU_XSAVE),
        (state_kind::X86_PV_VCPU_MSRS, libxc_rec::X86_PV_VCPU_MSRS),
    ];
    let mut vcpus = Vec::new();
    for b in blobs {
        if let Some(&(_, rec)) = kinds.iter().find(|(k, _)| *k == b.kind) {
            if b.data.len() < 8 {
                return Err(bad("X86_PV_VCPU", "a vCPU record shorter than its header"));
            }
            if rec == libxc_rec::X86_PV_VCPU_BASIC && b.data.len() != 8 + VCPU_CTX_X64_SIZE {
                return Err(bad("X86_PV_VCPU_BASIC", format!("{} bytes", b.data.len())));
            }
            vcpus.push((rec, b.data.as_slice()));
        }
    }
    let vcpu0 = vcpus
        .iter()
        .any(|(r, d)| *r == libxc_rec::X86_PV_VCPU_BASIC && d[..4] == [0; 4]);
    if !vcpu0 {
        return Err(StreamWriteError::MissingState(
            "X86_PV_VCPU_BASIC of vCPU 0",
        ));
    }
    let m2p =
        M2p::from_blob(last(blobs, state_kind::PV_P2M, "PV_P2M")?).map_err(StreamWriteError::Pv)?;
    let types = PageTypes::from_blob(last(blobs, state_kind::PV_PAGE_TYPES, "PV_PAGE_TYPES")?)
        .map_err(StreamWriteError::Pv)?;
    Ok(PvStreamState {
        info,
        p2m_frames,
        shared_info,
        vcpus,
        m2p,
        types,
    })
}

/// An X86_PV_P2M_FRAMES body has `end / 512 - start / 512 + 1` frame pfns after its header.
fn check_p2m_frames(b: &[u8]) -> Result<(), StreamWriteError> {
    if b.len() < 8 {
        return Err(bad("X86_PV_P2M_FRAMES", "shorter than its header"));
    }
    let start = u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")));
    let end = u64::from(u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")));
    let want = end
        .checked_sub(start)
        .map(|_| 8 + (end / FPP + 1 - start / FPP) as usize * pv::WORD);
    if want != Some(b.len()) {
        return Err(bad(
            "X86_PV_P2M_FRAMES",
            format!("{} bytes for pfns {start:#x}..={end:#x}", b.len()),
        ));
    }
    Ok(())
}

impl PvStreamState<'_> {
    /// The PAGE_DATA type of `pfn` (a page-table type, or NOTAB).
    pub fn page_type(&self, pfn: u64) -> u32 {
        self.types.get(pfn).unwrap_or(0)
    }

    /// Whether `pfn` is a page table (so [`Self::normalise`] changes it).
    pub fn is_pagetable(&self, pfn: u64) -> bool {
        self.types.get(pfn).is_some()
    }

    /// Normalise page `buf` of `pfn` in place if it is a page table.
    pub fn normalise(
        &self,
        pfn: u64,
        buf: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), StreamWriteError> {
        if let Some(ty) = self.types.get(pfn) {
            pv::pagetable::normalise_pagetable(pfn, ty, buf, scratch, &self.m2p)
                .map_err(StreamWriteError::Pv)?;
            buf.copy_from_slice(scratch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2m_frames_size() {
        let mut b = 0u32.to_le_bytes().to_vec();
        b.extend_from_slice(&600u32.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert!(check_p2m_frames(&b).is_ok());
        b.truncate(16);
        assert!(check_p2m_frames(&b).is_err());
        assert!(check_p2m_frames(&[0; 4]).is_err());
    }
}
