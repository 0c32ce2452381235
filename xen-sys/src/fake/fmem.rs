//! The fake libxenforeignmemory: batched mapping of fake guest frames, with per-frame errors.

use std::ffi::{c_int, c_uint, c_void};

use super::*;

pub(super) unsafe extern "C" fn fm_open(
    _: *mut XenToolLogger,
    _: c_uint,
) -> *mut XenForeignMemoryHandle {
    handle()
}

pub(super) unsafe extern "C" fn fm_close(_: *mut XenForeignMemoryHandle) -> c_int {
    0
}

pub(super) unsafe extern "C" fn fm_map(
    _: *mut XenForeignMemoryHandle,
    domid: u32,
    prot: c_int,
    n: usize,
    arr: *const XenPfn,
    err: *mut c_int,
) -> *mut c_void {
    let g = domains();
    let Some(d) = g.get(&domid) else {
        set_errno(libc::ESRCH);
        return std::ptr::null_mut();
    };
    // SAFETY: a fresh anonymous mapping of `n` pages; checked against MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n * PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // SAFETY: the caller passes `n` pfns and `n` error slots.
    let (pfns, errs) = unsafe {
        (
            std::slice::from_raw_parts(arr, n),
            std::slice::from_raw_parts_mut(err, n),
        )
    };
    for (i, (&p, e)) in pfns.iter().zip(errs.iter_mut()).enumerate() {
        let bad = p >= d.spec.pfn_count || d.unpopulated.contains(&p) || d.broken.contains(&p);
        *e = if bad { -libc::ENOENT } else { 0 };
        if let (false, Some(src)) = (bad, d.mem.get(&p)) {
            // SAFETY: page `i` lies inside our `n`-page mapping; `src` is one page.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    base.cast::<u8>().add(i * PAGE_SIZE),
                    PAGE_SIZE,
                )
            };
        }
    }
    // SAFETY: our own mapping; dropping write access as the caller asked.
    unsafe { libc::mprotect(base, n * PAGE_SIZE, prot) };
    base
}

pub(super) unsafe extern "C" fn fm_unmap(
    _: *mut XenForeignMemoryHandle,
    addr: *mut c_void,
    n: usize,
) -> c_int {
    // SAFETY: `addr`/`n` describe a mapping made by `fm_map`.
    unsafe { libc::munmap(addr, n * PAGE_SIZE) }
}
