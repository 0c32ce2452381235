//! [`HypercallBitmap`]: a log-dirty bitmap in hypercall-safe memory, owned by Rust.

use std::ffi::c_int;

use crate::abi::XcHypercallBuffer;
use crate::{XenCtrl, XenError, PAGE_SIZE};

/// Bits in one page of bitmap.
const BITS_PER_PAGE: u64 = (PAGE_SIZE * 8) as u64;

/// Pages of hypercall-safe memory from `xc__hypercall_buffer_alloc_pages`, freed on drop.
pub(crate) struct HypercallPages {
    pub(crate) ctrl: XenCtrl,
    /// Boxed so its address stays put: libxc may record it in `param_shadow` chains.
    buf: Box<XcHypercallBuffer>,
    pages: c_int,
}

impl HypercallPages {
    /// At least one page (libxc does not clear them; callers that need zeros call `zero`).
    pub(crate) fn alloc(ctrl: XenCtrl, pages: u64) -> Result<Self, XenError> {
        let pages = c_int::try_from(pages.max(1)).map_err(|_| XenError::Call {
            call: "xc__hypercall_buffer_alloc_pages",
            errno: libc::E2BIG,
        })?;
        let mut buf = Box::new(XcHypercallBuffer::new_no_bounce());
        let api = ctrl.h.api;
        // SAFETY: `buf` is a fresh no-bounce descriptor as DECLARE_HYPERCALL_BUFFER makes one;
        // libxc stores the allocation in `buf.hbuf` and returns it.
        let p = unsafe {
            (api.xc__hypercall_buffer_alloc_pages)(ctrl.h.xch.as_ptr(), &mut *buf, pages)
        };
        if p.is_null() {
            return Err(XenError::last("xc__hypercall_buffer_alloc_pages"));
        }
        buf.hbuf = p;
        Ok(HypercallPages { ctrl, buf, pages })
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.pages as usize * PAGE_SIZE
    }

    /// The memory's address (what a guest handle passed to Xen holds).
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.buf.hbuf.cast()
    }

    /// The first `n` bytes (at most [`Self::len`]).
    pub(crate) fn bytes(&self, n: usize) -> &[u8] {
        assert!(n <= self.len(), "hypercall buffer overrun");
        // SAFETY: `hbuf` points to `pages` pages owned by `self`; n is within them, and Xen
        // writes them only during calls that borrow `self` mutably.
        unsafe { std::slice::from_raw_parts(self.ptr(), n) }
    }

    /// Zero the whole buffer.
    pub(crate) fn zero(&mut self) {
        // SAFETY: as in `bytes`, and `&mut self` excludes any other access.
        unsafe { std::ptr::write_bytes(self.ptr(), 0, self.len()) };
    }

    pub(crate) fn raw(&mut self) -> *mut XcHypercallBuffer {
        &mut *self.buf
    }
}

impl Drop for HypercallPages {
    fn drop(&mut self) {
        // SAFETY: the descriptor and page count are exactly those of the allocation, freed once.
        unsafe {
            (self.ctrl.h.api.xc__hypercall_buffer_free_pages)(
                self.ctrl.h.xch.as_ptr(),
                &mut *self.buf,
                self.pages,
            )
        };
    }
}

/// A bitmap of `bits` bits in hypercall-safe pages, freed on drop.
/// Bit `i` of word `i / 64` is pfn `i`, as Xen writes it.
pub struct HypercallBitmap {
    pub(crate) mem: HypercallPages,
    bits: u64,
}

// SAFETY: the buffer is plain memory owned by this value; it is only written by Xen during
// `XenCtrl::logdirty_control`, which takes `&mut self`.
unsafe impl Send for HypercallBitmap {}
// SAFETY: shared access only reads the words.
unsafe impl Sync for HypercallBitmap {}

impl std::fmt::Debug for HypercallBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HypercallBitmap {{ bits: {}, bytes: {} }}",
            self.bits,
            self.mem.len()
        )
    }
}

impl HypercallBitmap {
    pub(crate) fn alloc(ctrl: XenCtrl, bits: u64) -> Result<Self, XenError> {
        let mem = HypercallPages::alloc(ctrl, bits.div_ceil(BITS_PER_PAGE))?;
        Ok(HypercallBitmap { mem, bits })
    }

    /// Number of meaningful bits (pfns).
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// The bitmap words covering [`Self::bits`] bits (bits past the end of the last word are
    /// zero after a `logdirty_control` call).
    pub fn words(&self) -> &[u64] {
        let n = self.bits.div_ceil(64) as usize;
        // SAFETY: the pages are page-aligned, owned by `self.mem`, and n * 8 <= their length;
        // nothing writes them while `self` is borrowed shared.
        unsafe { std::slice::from_raw_parts(self.mem.ptr().cast::<u64>(), n) }
    }

    /// Number of bits set.
    pub fn count_ones(&self) -> u64 {
        self.words().iter().map(|w| u64::from(w.count_ones())).sum()
    }

    pub(crate) fn zero(&mut self) {
        self.mem.zero();
    }

    pub(crate) fn raw(&mut self) -> *mut XcHypercallBuffer {
        self.mem.raw()
    }
}
