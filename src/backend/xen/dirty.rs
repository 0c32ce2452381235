//! Log-dirty tracking and guest memory access for [`XenDomain`].
//!
//! Xen has no "is log-dirty on?" query (libxc's save says as much): enabling fails with EINVAL
//! when it is already on (`paging_log_dirty_enable` in xen/arch/x86/mm/paging.c). So:
//! * [`DirtyLog::logdirty_enable`] is a no-op when log-dirty is on already (EINVAL), keeping the
//!   bitmap: a previous checkpoint left it on, and its bits are the next incremental.
//! * [`DirtyLog::logdirty_enabled`] answers from this handle's own state when it enabled
//!   tracking, and otherwise probes: ENABLE failing with EINVAL means on; ENABLE succeeding
//!   means it was off, and it is turned off again at once.
//! * [`DirtyLog::logdirty_clean`] fails with [`HvError::TrackingLost`] while log-dirty is off
//!   (Xen itself would return an empty bitmap) or when it was turned off since this handle's
//!   previous CLEAN (another tool's save ended), and asks for `XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL` when the domain is paused
//!   (the final round), so pages Xen itself maps writably are reported too.

use std::sync::atomic::Ordering;

use xen_sys::abi::{
    XEN_DOMCTL_PFINFO_BROKEN, XEN_DOMCTL_PFINFO_NOTAB, XEN_DOMCTL_PFINFO_XTAB,
    XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL, XEN_DOMCTL_SHADOW_OP_CLEAN,
    XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, XEN_DOMCTL_SHADOW_OP_OFF, XEN_DOMINF_PAUSED,
};
use xen_sys::{ForeignMapping, XenError};

use super::{op_err, XenDomain};
use crate::guestmem::GuestPage;
use crate::hv::{DirtyLog, Domain, GuestMemory, HvError, MappedBatch, PageType, Pfn, PfnBitmap};

impl XenDomain {
    fn shadow(&self, op: u32) -> Result<(), XenError> {
        self.xc.shadow_control(self.domid, op, 0)
    }

    /// Between two CLEANs of one run, another tool may have turned log-dirty off (libxc's save
    /// does so when it ends, `xl migrate` restarts it when it begins): the bits in between
    /// are gone. Probe with ENABLE: EINVAL means still on; success means it was off (and is on
    /// again now, for the next run), so this run's dirty set cannot be trusted.
    fn check_still_tracking(&self) -> Result<(), HvError> {
        if !self.logdirty_ours.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.shadow(XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY) {
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EBUSY)) => Ok(()),
            Ok(()) => Err(HvError::TrackingLost {
                domain: self.name(),
                reason: "another tool, such as xl save or xl migrate, turned it off".into(),
            }),
            Err(e) => Err(op_err(self, "log-dirty probe")(e)),
        }
    }

    fn unsupported(&self, e: &XenError) -> Option<HvError> {
        (e.errno() == Some(libc::EOPNOTSUPP)).then(|| HvError::LogDirtyUnsupported {
            domain: self.name(),
            reason: if self.guest_type == crate::hv::GuestType::Pv {
                format!("{e}; PV guests need a Xen built with CONFIG_SHADOW_PAGING")
            } else {
                e.to_string()
            },
        })
    }
}

impl DirtyLog for XenDomain {
    fn logdirty_enable(&self) -> Result<(), HvError> {
        if self.logdirty_ours.load(Ordering::SeqCst) {
            return Ok(());
        }
        let first = match self.shadow(XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY) {
            Ok(()) => Ok(()),
            // Already on: left on by the previous checkpoint, whose dirty bits since then are
            // exactly what this run needs. Restarting it (as libxc's save does) would lose them.
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        };
        match first {
            Ok(()) => {
                self.logdirty_ours.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) if e.errno() == Some(libc::EINVAL) => Err(HvError::op(
                self.name(),
                "log-dirty ENABLE",
                format!("{e}; Xen refuses log-dirty for domains with passed-through PCI devices"),
            )),
            Err(e) => Err(self
                .unsupported(&e)
                .unwrap_or_else(|| op_err(self, "log-dirty ENABLE")(e))),
        }
    }

    fn logdirty_disable(&self) -> Result<(), HvError> {
        self.shadow(XEN_DOMCTL_SHADOW_OP_OFF)
            .map_err(op_err(self, "log-dirty OFF"))?;
        self.logdirty_ours.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn logdirty_enabled(&self) -> Result<bool, HvError> {
        if self.logdirty_ours.load(Ordering::SeqCst) {
            return Ok(true);
        }
        match self.shadow(XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY) {
            Ok(()) => {
                self.shadow(XEN_DOMCTL_SHADOW_OP_OFF)
                    .map_err(op_err(self, "log-dirty OFF"))?;
                Ok(false)
            }
            Err(e) if e.errno() == Some(libc::EINVAL) => Ok(true),
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(op_err(self, "log-dirty probe")(e)),
        }
    }

    fn logdirty_clean(&self, into: &mut PfnBitmap) -> Result<u64, HvError> {
        // Xen answers a CLEAN with an empty bitmap when log-dirty is off; fail loudly instead,
        // as the sim does, so a capture that forgot to enable tracking cannot lose writes.
        if !self.logdirty_ours.load(Ordering::SeqCst) && !self.logdirty_enabled()? {
            return Err(HvError::TrackingLost {
                domain: self.name(),
                reason: "log-dirty mode is off".into(),
            });
        }
        self.check_still_tracking()?;
        let pfn_count = self.pfn_count()?;
        // The final round runs paused: ask Xen to include pages it maps writably itself.
        let paused =
            self.xc_info()?.flags & XEN_DOMINF_PAUSED != 0 || self.suspended.load(Ordering::SeqCst);
        let mode = if paused {
            XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL
        } else {
            0
        };
        let mut slot = self.bitmap.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|b| b.bits() != pfn_count) {
            *slot = None;
            *slot = Some(
                self.xc
                    .alloc_bitmap(pfn_count)
                    .map_err(op_err(self, "log-dirty bitmap"))?,
            );
        }
        let bm = slot.as_mut().expect("allocated above");
        self.xc
            .logdirty_control(self.domid, XEN_DOMCTL_SHADOW_OP_CLEAN, bm, mode)
            .map_err(op_err(self, "log-dirty CLEAN"))?;
        copy_bitmap(bm.words(), pfn_count, into);
        drop(slot);
        if self.guest_type == crate::hv::GuestType::Pv {
            self.refresh_p2m(into)?;
        }
        Ok(into.count_ones() as u64)
    }
}

/// Overwrite `into` with the first `bits` bits of `words` (Xen's layout, bit i of word i/64).
pub(crate) fn copy_bitmap(words: &[u64], bits: u64, into: &mut PfnBitmap) {
    into.clear();
    into.resize(bits as usize, false);
    let raw = into.as_raw_mut_slice();
    raw.copy_from_slice(&words[..raw.len()]);
    let tail = bits % 64;
    if tail != 0 {
        if let Some(last) = raw.last_mut() {
            *last &= (1u64 << tail) - 1;
        }
    }
}

/// Classify a raw `XEN_DOMCTL_PFINFO_*` type.
pub(crate) fn page_type(raw: u32) -> PageType {
    match raw {
        XEN_DOMCTL_PFINFO_XTAB => PageType::Unpopulated,
        XEN_DOMCTL_PFINFO_BROKEN => PageType::Broken,
        XEN_DOMCTL_PFINFO_NOTAB => PageType::Normal,
        // Anything else (PV page-table types, XALLOC, which libxc also sends without data) is
        // kept raw for the caller to decide.
        other => PageType::Other(other),
    }
}

/// A batch of frames mapped through libxenforeignmemory.
struct XenBatch<'a> {
    m: ForeignMapping<'a>,
}

impl MappedBatch for XenBatch<'_> {
    fn len(&self) -> usize {
        self.m.len()
    }

    fn page(&self, i: usize) -> Result<GuestPage<'_>, i32> {
        GuestPage::from_foreign(&self.m, i)
    }
}

impl GuestMemory for XenDomain {
    fn page_types(&self, pfns: &[Pfn], out: &mut [PageType]) -> Result<(), HvError> {
        assert_eq!(pfns.len(), out.len(), "page_types: output length");
        let mut raw = vec![0u32; pfns.len()];
        let frames = self.frames(pfns)?;
        self.xc
            .pfn_types(self.domid, &frames, &mut raw)
            .map_err(op_err(self, "page types"))?;
        for ((o, r), f) in out.iter_mut().zip(raw).zip(frames) {
            *o = if f == crate::pv::INVALID_MFN {
                PageType::Unpopulated
            } else {
                page_type(r)
            };
        }
        Ok(())
    }

    /// `tot_pages`: the pages the domain owns, each typed populated where the guest maps it
    /// (`XEN_DOMCTL_getpageframeinfo3` types Xen's own pages the guest maps, such as grant
    /// table frames and shared info, `XTAB`, and Xen does not count them). A page shared away
    /// is typed populated and counted in `shr_pages` instead, a paged-out one the reverse: with
    /// either, no count.
    fn counted_pages(&self) -> Result<Option<u64>, HvError> {
        let info = self.xc_info()?;
        Ok((info.shr_pages == 0 && info.paged_pages == 0).then_some(info.tot_pages))
    }

    fn map_batch<'a>(&'a self, pfns: &[Pfn]) -> Result<Box<dyn MappedBatch + 'a>, HvError> {
        let frames = self.frames(pfns)?;
        let m = self
            .fm
            .map_read(self.domid, &frames)
            .map_err(op_err(self, "map guest frames"))?;
        Ok(Box::new(XenBatch { m }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_copy_masks_the_tail() {
        let mut b = PfnBitmap::new();
        copy_bitmap(&[u64::MAX, u64::MAX], 70, &mut b);
        assert_eq!(b.len(), 70);
        assert_eq!(b.count_ones(), 70);
        assert_eq!(b.as_raw_slice(), &[u64::MAX, 0x3f]);
        copy_bitmap(&[0b1010], 4, &mut b);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn page_type_classes() {
        assert_eq!(page_type(XEN_DOMCTL_PFINFO_XTAB), PageType::Unpopulated);
        assert_eq!(page_type(XEN_DOMCTL_PFINFO_BROKEN), PageType::Broken);
        assert_eq!(page_type(0), PageType::Normal);
        assert_eq!(page_type(0x1 << 28), PageType::Other(0x1 << 28));
        assert_eq!(page_type(0xe << 28), PageType::Other(0xe << 28));
    }
}
