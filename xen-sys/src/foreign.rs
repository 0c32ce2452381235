//! [`ForeignMemory`] and [`ForeignMapping`]: views of another domain's frames, read-only for a
//! capture, writable for a restore.

use std::ffi::c_void;
use std::ptr::NonNull;

use crate::abi::XenForeignMemoryHandle;
use crate::api::{self, XenApi};
use crate::{XenError, PAGE_SIZE};

/// An open `xenforeignmemory_handle`, closed on drop.
pub struct ForeignMemory {
    api: &'static XenApi,
    h: NonNull<XenForeignMemoryHandle>,
}

// SAFETY: libxenforeignmemory handles are thread-safe (each map/unmap is an independent
// ioctl + mmap on the privcmd fd); the handle outlives every mapping (they borrow it).
unsafe impl Send for ForeignMemory {}
// SAFETY: as above.
unsafe impl Sync for ForeignMemory {}

impl std::fmt::Debug for ForeignMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForeignMemory")
    }
}

impl ForeignMemory {
    /// Load the libraries (once) and open a foreign-memory handle.
    pub fn open() -> Result<Self, XenError> {
        let api = api::real()?;
        crate::check_privcmd()?;
        Self::open_with(api)
    }

    /// Open a handle on the in-process fake hypervisor of [`crate::fake`].
    #[cfg(any(test, feature = "fake"))]
    pub fn open_fake() -> Self {
        Self::open_with(&crate::fake::FAKE_API).expect("the fake xenforeignmemory_open cannot fail")
    }

    fn open_with(api: &'static XenApi) -> Result<Self, XenError> {
        // SAFETY: a NULL logger logs to stderr; flags must be 0.
        let h = unsafe { (api.xenforeignmemory_open)(std::ptr::null_mut(), 0) };
        let h = NonNull::new(h).ok_or_else(|| crate::open_error("xenforeignmemory_open"))?;
        Ok(ForeignMemory { api, h })
    }

    /// Map `pfns` of `domid` read-only, in one call (callers batch; libxc's save maps 1024 at
    /// a time). Frames that cannot be mapped report their errno in [`ForeignMapping::error`].
    pub fn map_read(&self, domid: u32, pfns: &[u64]) -> Result<ForeignMapping<'_>, XenError> {
        self.map(domid, pfns, false)
    }

    /// Map `pfns` of `domid` readable and writable, in one call, as libxc's restore maps the
    /// frames it fills. Frames that cannot be mapped report their errno in
    /// [`ForeignMapping::error`].
    pub fn map_write(&self, domid: u32, pfns: &[u64]) -> Result<ForeignMapping<'_>, XenError> {
        self.map(domid, pfns, true)
    }

    fn map(
        &self,
        domid: u32,
        pfns: &[u64],
        writable: bool,
    ) -> Result<ForeignMapping<'_>, XenError> {
        let n = pfns.len();
        if n == 0 {
            return Ok(ForeignMapping {
                fm: self,
                addr: None,
                err: Vec::new(),
                writable,
            });
        }
        let arr: Vec<crate::abi::XenPfn> = pfns.iter().map(|&p| p as _).collect();
        let mut err = vec![0i32; n];
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: `arr` and `err` hold `n` entries each; the result is checked for NULL.
        let p = unsafe {
            (self.api.xenforeignmemory_map)(
                self.h.as_ptr(),
                domid,
                prot,
                n,
                arr.as_ptr(),
                err.as_mut_ptr(),
            )
        };
        let addr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| XenError::last("xenforeignmemory_map"))?;
        Ok(ForeignMapping {
            fm: self,
            addr: Some(addr),
            err,
            writable,
        })
    }
}

impl Drop for ForeignMemory {
    fn drop(&mut self) {
        // SAFETY: opened by xenforeignmemory_open; every mapping borrowed `self` and is gone.
        unsafe { (self.api.xenforeignmemory_close)(self.h.as_ptr()) };
    }
}

/// A mapping of a batch of guest frames, unmapped on drop.
///
/// Contract relied on by `xckpt::guestmem`: for every `i` where [`Self::page_ptr`] returns
/// `Ok(p)`, `p` is page-aligned and `PAGE_SIZE` bytes from `p` are mapped readable (and
/// writable when [`Self::is_writable`]) until this value drops. The guest may write them at any
/// time, so they must only be accessed volatilely.
pub struct ForeignMapping<'a> {
    fm: &'a ForeignMemory,
    addr: Option<NonNull<u8>>,
    err: Vec<i32>,
    writable: bool,
}

impl std::fmt::Debug for ForeignMapping<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ForeignMapping {{ frames: {} }}", self.err.len())
    }
}

impl ForeignMapping<'_> {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.err.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.err.is_empty()
    }

    /// Whether the frames are mapped writable ([`ForeignMemory::map_write`]).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The per-frame errno array (0 = mapped).
    pub fn errors(&self) -> &[i32] {
        &self.err
    }

    /// The errno for frame `i` (0 when mapped). Panics if out of range.
    pub fn error(&self, i: usize) -> i32 {
        self.err[i]
    }

    /// Frame `i`'s address, or its errno. Panics if out of range.
    pub fn page_ptr(&self, i: usize) -> Result<NonNull<u8>, i32> {
        match (self.err[i], self.addr) {
            (0, Some(a)) => {
                // SAFETY: `i < len`, so the offset stays inside the `len`-page mapping.
                Ok(unsafe { a.add(i * PAGE_SIZE) })
            }
            (0, None) => Err(libc::EFAULT),
            (e, _) => Err(e.abs()),
        }
    }
}

impl Drop for ForeignMapping<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.addr {
            // SAFETY: `a` and `len` are exactly what xenforeignmemory_map returned / was given;
            // unmapped once, and no page view outlives `self` (they borrow it).
            unsafe {
                (self.fm.api.xenforeignmemory_unmap)(
                    self.fm.h.as_ptr(),
                    a.as_ptr().cast::<c_void>(),
                    self.err.len(),
                )
            };
        }
    }
}
