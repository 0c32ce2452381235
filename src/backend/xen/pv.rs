//! PV guests on Xen: their frames are machine frames, so everything goes through the p2m.
//!
//! * The p2m is read through the shared info page's frame-list tree (`crate::pv::p2m`); a
//!   copy is cached and refreshed at every log-dirty CLEAN. Pfns whose mfn changed since the
//!   previous read are reported dirty with that CLEAN, so a page re-backed during the
//!   capture (ballooning, page exchange) is copied again from its new frame.
//! * Page types and mappings translate pfns to mfns first (`xc_get_pfn_type_batch` and
//!   `xenforeignmemory_map` take mfns for a PV guest, as in libxc's PV save).
//! * State, read under the pause: X86_PV_INFO, the CPU policy, TSC info, X86_PV_P2M_FRAMES,
//!   the shared info page, and per online vCPU X86_PV_VCPU_BASIC (normalised),
//!   EXTENDED, XSAVE and MSRS, like libxc's `x86_pv_end_of_checkpoint`; plus xckpt's own
//!   `PV_P2M` and `PV_PAGE_TYPES`, which the restore stream uses to normalise page tables.

use std::sync::Arc;

use xen_sys::abi::{SHINFO_X64_FLL, SHINFO_X64_MAX_PFN, VCPU_CTX_X64_SIZE};

use super::{op_err, XenDomain};
use crate::guestmem::GuestPage;
use crate::hv::{state_kind, Domain, HvError, Pfn, PfnBitmap, StateBlob, PAGE_SIZE};
use crate::pv::{self, p2m, P2m, PageTypes, PvError, INVALID_MFN};

/// Frames per foreign-mapping call when reading p2m leaves and page types.
const BATCH: usize = 1024;

fn word(page: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(page[off..off + 8].try_into().expect("8 bytes"))
}

impl XenDomain {
    fn pv_err(&self, op: &'static str) -> impl FnOnce(PvError) -> HvError + '_ {
        move |e| HvError::op(self.name(), op, e)
    }

    /// Copy machine frames `mfns` of the guest into one buffer (read-only mappings of at most
    /// [`BATCH`] frames at a time).
    fn read_frames(&self, mfns: &[u64], what: &'static str) -> Result<Vec<u8>, HvError> {
        let mut out = vec![0u8; mfns.len() * PAGE_SIZE];
        for (chunk, dst) in mfns.chunks(BATCH).zip(out.chunks_mut(BATCH * PAGE_SIZE)) {
            let m = self
                .fm
                .map_read(self.domid, chunk)
                .map_err(op_err(self, what))?;
            for (i, d) in dst.chunks_exact_mut(PAGE_SIZE).enumerate() {
                let page = GuestPage::from_foreign(&m, i).map_err(|errno| {
                    HvError::op(
                        self.name(),
                        what,
                        format!(
                            "cannot map mfn {:#x}: {}",
                            chunk[i],
                            std::io::Error::from_raw_os_error(errno)
                        ),
                    )
                })?;
                page.copy_to(d);
            }
        }
        Ok(out)
    }

    /// The shared info page, as the guest has it now.
    fn shared_info(&self) -> Result<Vec<u8>, HvError> {
        let frame = self.xc_info()?.shared_info_frame;
        self.read_frames(&[frame], "map shared info")
    }

    /// Read the guest's p2m through its frame-list tree (libxc's `map_p2m_tree`).
    fn read_p2m(&self) -> Result<P2m, HvError> {
        let op = "read p2m";
        let shinfo = self.shared_info()?;
        let max_pfn = word(&shinfo, SHINFO_X64_MAX_PFN)
            .checked_sub(1)
            .ok_or_else(|| HvError::op(self.name(), op, "shared info has max_pfn 0"))?;
        let fll_mfn = word(&shinfo, SHINFO_X64_FLL);
        p2m::check_frames("the frame list list pointer", &[fll_mfn]).map_err(self.pv_err(op))?;
        let fll = self.read_frames(&[fll_mfn], op)?;
        let mids = p2m::words(&fll, p2m::fll_entries(max_pfn));
        p2m::check_frames("frame list list", &mids).map_err(self.pv_err(op))?;
        let fl = self.read_frames(&mids, op)?;
        let leaves = p2m::words(&fl, p2m::leaf_count(max_pfn));
        p2m::check_frames("frame list", &leaves).map_err(self.pv_err(op))?;
        let leaf_bytes = self.read_frames(&leaves, op)?;
        P2m::from_leaves(leaves, &leaf_bytes, max_pfn).map_err(self.pv_err(op))
    }

    /// The cached p2m, read now if there is none yet.
    pub(crate) fn p2m(&self) -> Result<Arc<P2m>, HvError> {
        let mut g = self.p2m.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = g.as_ref() {
            return Ok(p.clone());
        }
        let p = Arc::new(self.read_p2m()?);
        *g = Some(p.clone());
        Ok(p)
    }

    /// Re-read the p2m and mark every pfn whose mfn changed since the cached copy in `dirty`.
    pub(crate) fn refresh_p2m(&self, dirty: &mut PfnBitmap) -> Result<(), HvError> {
        let new = Arc::new(self.read_p2m()?);
        let mut g = self.p2m.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.as_ref() {
            for pfn in p2m::changed_pfns(&old.mfns, &new.mfns) {
                if let Some(mut b) = dirty.get_mut(pfn as usize) {
                    *b = true;
                }
            }
        }
        *g = Some(new);
        Ok(())
    }

    /// The frames Xen calls `pfns` by: mfns for a PV guest (`INVALID_MFN` where there is
    /// none), the pfns themselves otherwise.
    pub(crate) fn frames(&self, pfns: &[Pfn]) -> Result<Vec<u64>, HvError> {
        if self.guest_type != crate::hv::GuestType::Pv {
            return Ok(pfns.to_vec());
        }
        let p = self.p2m()?;
        Ok(pfns
            .iter()
            .map(|&pfn| p.mfn(pfn).unwrap_or(INVALID_MFN))
            .collect())
    }

    /// Refuse 32-bit PV guests (libxc's compat layout) with one line.
    pub(crate) fn check_pv_width(&self) -> Result<(), HvError> {
        let bits = self
            .xc
            .address_size(self.domid)
            .map_err(op_err(self, "guest width"))?;
        if bits != 64 {
            return Err(HvError::op(self.name(), "checkpoint", PvError::Width(bits)));
        }
        Ok(())
    }

    /// Page-table types of every pfn (read under the pause).
    fn pv_page_types(&self, p2m: &P2m) -> Result<PageTypes, HvError> {
        let mut types = PageTypes::default();
        let pfns: Vec<Pfn> = (0..p2m.mfns.len() as Pfn).collect();
        for chunk in pfns.chunks(BATCH) {
            let mfns: Vec<u64> = chunk
                .iter()
                .map(|&p| p2m.mfn(p).unwrap_or(INVALID_MFN))
                .collect();
            let mut raw = vec![0u32; chunk.len()];
            self.xc
                .pfn_types(self.domid, &mfns, &mut raw)
                .map_err(op_err(self, "page types"))?;
            types.add(chunk, &raw);
        }
        Ok(types)
    }

    /// Every state blob of a PV guest, read while it is paused.
    pub(crate) fn pv_blobs(&self) -> Result<Vec<StateBlob>, HvError> {
        let d = self.domid;
        let p2m = self.p2m()?;
        let m2p = p2m.m2p();
        let blob = |kind, data| StateBlob { kind, data };
        let mut out = vec![blob(state_kind::X86_PV_INFO, pv::pv_info_record())];
        out.extend(self.cpu_policy_blobs()?);
        let frames = p2m.frames_record(&m2p).map_err(self.pv_err("p2m frames"))?;
        out.push(blob(state_kind::X86_PV_P2M_FRAMES, frames));
        out.push(blob(state_kind::PV_P2M, p2m.to_blob()));
        out.push(blob(
            state_kind::PV_PAGE_TYPES,
            self.pv_page_types(&p2m)?.to_blob(),
        ));
        let tsc = self.xc.tsc_info(d).map_err(op_err(self, "TSC info"))?;
        out.push(blob(state_kind::TSC_INFO, tsc.to_record()));
        out.push(blob(state_kind::SHARED_INFO, self.shared_info()?));
        let info = self.xc_info()?;
        for v in 0..=info.max_vcpu_id {
            if !self
                .xc
                .vcpu_online(d, v)
                .map_err(op_err(self, "vCPU info"))?
            {
                continue;
            }
            let ctx = self
                .xc
                .vcpu_context(d, v)
                .map_err(op_err(self, "vCPU context"))?;
            let mut basic = ctx.bytes[..VCPU_CTX_X64_SIZE].to_vec();
            pv::pagetable::normalise_vcpu_basic(&mut basic, v, &m2p)
                .map_err(self.pv_err("vCPU context"))?;
            out.push(blob(
                state_kind::X86_PV_VCPU_BASIC,
                pv::vcpu_record(v, &basic),
            ));
            let parts = [
                (
                    state_kind::X86_PV_VCPU_EXTENDED,
                    self.xc.vcpu_extended(d, v),
                    "vCPU extended state",
                ),
                (
                    state_kind::X86_PV_VCPU_XSAVE,
                    self.xc.vcpu_xsave(d, v),
                    "vCPU xsave state",
                ),
                (
                    state_kind::X86_PV_VCPU_MSRS,
                    self.xc.vcpu_msrs(d, v),
                    "vCPU MSRs",
                ),
            ];
            for (kind, got, what) in parts {
                let data = got.map_err(op_err(self, what))?;
                // libxc skips empty records; so does the restore side.
                if !data.is_empty() {
                    out.push(blob(kind, pv::vcpu_record(v, &data)));
                }
            }
        }
        Ok(out)
    }
}
