//! Reading guest memory that changes under us.
//!
//! Guest frames are mapped from another agent (the guest's vCPUs, or the simulator's writer
//! threads), which may write them at any moment. They are therefore never seen as `&[u8]`: they
//! are reached only through raw pointers, as rust-vmm's volatile slices are. Like those, a whole
//! page moves with one `copy_nonoverlapping` (the C library's `memcpy`: vector moves, a fraction
//! of the instructions of a word loop, and instructions are what a one-vCPU dom0 under emulation
//! pays for), and single words are read volatilely. A copy taken while the guest writes may mix
//! old and new bytes; the capture never relies on it, since log-dirty sends such a page again.
//! This is the only module of the `xckpt` crate allowed `unsafe` code (`src/lib.rs` denies it
//! everywhere else).

/// Size of a guest page in bytes (also `hv::PAGE_SIZE`, the name the rest of the crate uses).
pub const PAGE_SIZE: usize = 4096;

const WORDS: usize = PAGE_SIZE / 8;
/// Words `is_zero` ORs together before it tests them.
const ZERO_BLOCK: usize = 8;
// `is_zero` reads whole blocks: a partial last block would read past the page.
const _: () = assert!(WORDS % ZERO_BLOCK == 0);

/// A read-only view of one mapped guest page, valid for `'a`.
#[derive(Clone, Copy)]
pub struct GuestPage<'a> {
    ptr: *const u64,
    _life: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> GuestPage<'a> {
    /// Wrap a mapped guest page.
    ///
    /// # Safety
    /// `ptr` must be page-aligned and point to `PAGE_SIZE` readable bytes that stay mapped for
    /// `'a`. Other agents may write them concurrently; this type only reads them volatilely.
    pub unsafe fn new(ptr: *const u8) -> Self {
        debug_assert_eq!(ptr as usize % PAGE_SIZE, 0);
        GuestPage {
            ptr: ptr.cast(),
            _life: std::marker::PhantomData,
        }
    }

    /// View frame `i` of a read-only foreign mapping made by `xen-sys`, or the errno Xen gave
    /// for that frame. The view borrows the mapping, so it cannot outlive the unmap.
    pub fn from_foreign(mapping: &'a xen_sys::ForeignMapping<'_>, i: usize) -> Result<Self, i32> {
        let ptr = mapping.page_ptr(i)?;
        // SAFETY: an `Ok` pointer from `page_ptr` is page-aligned, with PAGE_SIZE readable bytes
        // mapped until the mapping drops; the view borrows the mapping for 'a, and GuestPage
        // only reads volatilely, so concurrent guest writes are fine.
        Ok(unsafe { GuestPage::new(ptr.as_ptr()) })
    }

    /// Copy the page into `dst`: a bulk copy, as rust-vmm's `VolatileSlice` makes for anything
    /// longer than a word. Bytes the guest writes meanwhile may be old or new.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), PAGE_SIZE);
        // SAFETY: `new`'s contract keeps PAGE_SIZE bytes at `ptr` mapped and readable for 'a;
        // `dst` is PAGE_SIZE bytes of our own memory (checked above), which cannot overlap a
        // mapping of guest memory. No reference to the guest page is formed: only raw reads.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.cast::<u8>(), dst.as_mut_ptr(), PAGE_SIZE)
        };
    }

    /// Whether every byte of the page is zero now. Words are read volatilely, eight at a time
    /// between tests, and the scan ends at the first block holding a set bit.
    pub fn is_zero(&self) -> bool {
        (0..WORDS).step_by(ZERO_BLOCK).all(|b| {
            (b..b + ZERO_BLOCK).fold(0u64, |acc, i| {
                // SAFETY: `i < WORDS` (WORDS is a multiple of ZERO_BLOCK, asserted above), so the read stays
                // inside the page that `new`'s contract keeps mapped and readable for 'a; the
                // pointer is page-aligned, so every word is aligned.
                acc | unsafe { self.ptr.add(i).read_volatile() }
            }) == 0
        })
    }
}

/// A writable view of one page of memory owned by the simulator, shared with reader threads,
/// valid for `'a` (it borrows the mapping, so it cannot outlive the unmap).
#[derive(Clone, Copy)]
pub struct SharedPageMut<'a> {
    ptr: *mut u64,
    _life: std::marker::PhantomData<&'a [u8]>,
}

// SAFETY: the pointer refers to memory that stays mapped for 'a (the borrow of the mapping or the
// contract of `new`), and every access through it is volatile.
unsafe impl Send for SharedPageMut<'_> {}
// SAFETY: as above; concurrent volatile reads and writes of aligned words are the intended use.
unsafe impl Sync for SharedPageMut<'_> {}

impl<'a> SharedPageMut<'a> {
    /// Wrap a page of shared memory for volatile writes.
    ///
    /// # Safety
    /// `ptr` must be page-aligned and point to `PAGE_SIZE` writable bytes that stay mapped for
    /// `'a`.
    pub unsafe fn new(ptr: *mut u8) -> Self {
        debug_assert_eq!(ptr as usize % PAGE_SIZE, 0);
        SharedPageMut {
            ptr: ptr.cast(),
            _life: std::marker::PhantomData,
        }
    }

    /// View frame `i` of a writable foreign mapping made by `xen-sys` (a domain being restored),
    /// or the errno Xen gave for that frame (`EACCES` for a read-only mapping). The view
    /// borrows the mapping, so it cannot outlive the unmap.
    pub fn from_foreign(mapping: &'a xen_sys::ForeignMapping<'_>, i: usize) -> Result<Self, i32> {
        if !mapping.is_writable() {
            return Err(libc::EACCES);
        }
        let ptr = mapping.page_ptr(i)?;
        // SAFETY: an `Ok` pointer from `page_ptr` of a writable mapping is page-aligned, with
        // PAGE_SIZE readable and writable bytes mapped until the mapping drops; the view borrows
        // the mapping for 'a, and every access through it is a raw copy or write.
        Ok(unsafe { SharedPageMut::new(ptr.as_ptr()) })
    }

    /// Overwrite the page with zeros.
    pub fn zero(&self) {
        // SAFETY: `new`'s contract keeps PAGE_SIZE bytes at `ptr` mapped and writable for 'a; no
        // reference to the page is formed.
        unsafe { std::ptr::write_bytes(self.ptr.cast::<u8>(), 0, PAGE_SIZE) };
    }

    /// Overwrite the page with `src` (a bulk copy; readers may see old and new bytes mixed).
    pub fn write_from(&self, src: &[u8]) {
        assert_eq!(src.len(), PAGE_SIZE);
        // SAFETY: `new`'s contract keeps PAGE_SIZE bytes at `ptr` mapped and writable for 'a;
        // `src` is PAGE_SIZE bytes (checked above) of other memory, borrowed immutably, so the
        // two cannot overlap. Readers of the page never form references to it.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.cast::<u8>(), PAGE_SIZE) };
    }

    /// A read view of the same page.
    pub fn as_page(&self) -> GuestPage<'a> {
        // SAFETY: the page is mapped and readable for 'a (contract of `new`).
        unsafe { GuestPage::new(self.ptr.cast::<u8>()) }
    }
}

/// Fault in the whole pages of `buf` with one `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+),
/// rather than one page fault per page as each is first written: in a PV dom0 every fault is
/// a trip through the hypervisor, which the kernel's own loop does not take. The bytes are not
/// changed. On a kernel without it (`EINVAL`) the pages fault in when written, as before.
pub fn prefault<T>(buf: &mut [T]) {
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let (first, last) = (start.next_multiple_of(PAGE_SIZE), end - end % PAGE_SIZE);
    if last <= first {
        return;
    }
    // SAFETY: [first, last) lies inside `buf`, memory of this process borrowed mutably for the
    // call; MADV_POPULATE_WRITE only makes its pages present and writable, as writing each
    // would, and leaves their content as it is. A failure changes nothing.
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_POPULATE_WRITE,
        )
    };
}

/// Make `buf` `len` bytes long for a caller about to overwrite all of it: a buffer that must
/// grow is replaced by a new zeroed one whose pages are faulted in at once ([`prefault`]); its
/// old bytes are not kept.
pub fn resize_for_overwrite(buf: &mut Vec<u8>, len: usize) {
    if buf.capacity() < len {
        *buf = prefaulted(len);
    } else {
        buf.resize(len, 0);
    }
}

/// A zeroed buffer of `len` bytes whose pages are present already ([`prefault`]).
pub fn prefaulted(len: usize) -> Vec<u8> {
    let mut fresh = vec![0u8; len];
    prefault(&mut fresh);
    fresh
}

/// Anonymous memory mapped for the simulator's guest RAM, unmapped on drop.
pub struct AnonMapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain process memory; all accesses go through volatile page views.
unsafe impl Send for AnonMapping {}
// SAFETY: as above.
unsafe impl Sync for AnonMapping {}

impl AnonMapping {
    /// Map `pages` zeroed pages (lazily backed: untouched pages cost nothing).
    pub fn new(pages: u64) -> std::io::Result<Self> {
        let len = usize::try_from(pages)
            .ok()
            .and_then(|p| p.checked_mul(PAGE_SIZE))
            .filter(|&l| l > 0)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice; no existing
        // memory is affected. The result is checked against MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(AnonMapping {
            base: base.cast(),
            len,
        })
    }

    /// Number of pages mapped.
    pub fn pages(&self) -> u64 {
        (self.len / PAGE_SIZE) as u64
    }

    /// A writable view of page `pfn`, valid while `self` lives. Panics if out of range.
    ///
    /// The view cannot outlive the mapping:
    ///
    /// ```compile_fail,E0597
    /// let page = {
    ///     let m = xckpt::guestmem::AnonMapping::new(1).unwrap();
    ///     m.page_mut(0)
    /// };
    /// page.write_from(&[0u8; 4096]);
    /// ```
    pub fn page_mut(&self, pfn: u64) -> SharedPageMut<'_> {
        assert!(pfn < self.pages(), "pfn {pfn} out of range");
        // SAFETY: `pfn` is in range, so the page lies inside the mapping; the view borrows
        // `self`, so it cannot outlive the mapping.
        unsafe { SharedPageMut::new(self.base.add(pfn as usize * PAGE_SIZE)) }
    }

    /// A read view of page `pfn`, valid while `self` lives. Panics if out of range.
    pub fn page(&self, pfn: u64) -> GuestPage<'_> {
        assert!(pfn < self.pages(), "pfn {pfn} out of range");
        // SAFETY: in range, and borrowed from `self`, so it cannot outlive the mapping.
        unsafe { GuestPage::new(self.base.add(pfn as usize * PAGE_SIZE)) }
    }

    /// Give pages `[pfn, pfn+count)` back to the kernel; they read as zero afterwards. Panics if
    /// the range is not inside the mapping.
    pub fn discard(&self, pfn: u64, count: u64) {
        let end = pfn.checked_add(count);
        assert!(
            end.is_some_and(|end| end <= self.pages()),
            "range {pfn}+{count} out of mapping"
        );
        // SAFETY: the range lies inside our own private anonymous mapping (checked above without
        // overflow, so the products below fit `len`); MADV_DONTNEED on it only replaces its
        // contents with zero pages.
        unsafe {
            libc::madvise(
                self.base.add(pfn as usize * PAGE_SIZE).cast(),
                count as usize * PAGE_SIZE,
                libc::MADV_DONTNEED,
            );
        }
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; no view outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(align(4096))]
    struct Aligned([u8; PAGE_SIZE]);

    #[test]
    fn a_buffer_resized_for_overwrite_has_the_length_and_reads_zero_when_grown() {
        let mut v = vec![7u8; 10];
        resize_for_overwrite(&mut v, 3 * PAGE_SIZE + 5);
        assert_eq!(v.len(), 3 * PAGE_SIZE + 5);
        assert!(v.iter().all(|&b| b == 0));
        v[0] = 9;
        resize_for_overwrite(&mut v, PAGE_SIZE);
        assert_eq!((v.len(), v[0]), (PAGE_SIZE, 9), "kept: no growth");
        let mut w = vec![5u8; 2 * PAGE_SIZE + 100];
        prefault(&mut w[1..]);
        assert!(w.iter().all(|&b| b == 5), "prefault changed bytes");
    }

    #[test]
    fn copy_and_zero() {
        let mut buf = Box::new(Aligned([0u8; PAGE_SIZE]));
        // SAFETY: `buf` is page-aligned, PAGE_SIZE bytes, and outlives `w`.
        let w = unsafe { SharedPageMut::new(buf.0.as_mut_ptr()) };
        assert!(w.as_page().is_zero());
        let src: Vec<u8> = (0..PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        w.write_from(&src);
        let mut out = vec![0u8; PAGE_SIZE];
        w.as_page().copy_to(&mut out);
        assert_eq!(out, src);
        assert!(!w.as_page().is_zero());
    }

    #[test]
    fn discard_zeroes_and_checks_its_range() {
        let m = AnonMapping::new(4).unwrap();
        m.page_mut(1).write_from(&[7u8; PAGE_SIZE]);
        m.discard(1, 1);
        assert!(m.page(1).is_zero());
        for (pfn, count) in [(3, 2), (u64::MAX, 2), (1, u64::MAX)] {
            let r = std::panic::catch_unwind(|| m.discard(pfn, count));
            assert!(r.is_err(), "discard({pfn}, {count}) accepted");
        }
    }
}
