//! The fake libxenctrl: domain info, pause, log-dirty, hypercall buffers, page types, HVM and
//! PV state, CPU policy, each answering from the registry of the parent module.

use std::ffi::{c_int, c_uint, c_ulong, c_void};

use super::*;

pub(super) unsafe extern "C" fn xc_open(
    _: *mut XenToolLogger,
    _: *mut XenToolLogger,
    _: c_uint,
) -> *mut XcInterface {
    handle()
}

pub(super) unsafe extern "C" fn xc_close(_: *mut XcInterface) -> c_int {
    0
}

fn info_of(d: &FakeDomain) -> XcDomainInfo {
    let mut flags = if d.spec.hvm {
        XEN_DOMINF_HVM_GUEST | XEN_DOMINF_HAP
    } else {
        0
    };
    flags |= if d.pause_count > 0 {
        XEN_DOMINF_PAUSED
    } else {
        XEN_DOMINF_RUNNING
    };
    if let Some(code) = d.shutdown_code {
        flags |= XEN_DOMINF_SHUTDOWN | (code << XEN_DOMINF_SHUTDOWNSHIFT);
    }
    let populated = d.spec.pfn_count - d.unpopulated.len() as u64;
    XcDomainInfo {
        domain: d.spec.domid as u16,
        flags,
        tot_pages: populated,
        max_pages: d.spec.pfn_count,
        nr_online_vcpus: d.spec.vcpus,
        max_vcpu_id: d.spec.vcpus.saturating_sub(1),
        handle: d.spec.uuid,
        shared_info_frame: d.spec.shared_info_frame,
        ..Default::default()
    }
}

pub(super) unsafe extern "C" fn getinfolist(
    _: *mut XcInterface,
    first: u32,
    max: c_uint,
    info: *mut XcDomainInfo,
) -> c_int {
    let g = domains();
    let mut n = 0;
    for d in g.range(first..).map(|(_, d)| d).take(max as usize) {
        // SAFETY: the caller passes room for `max` entries and `n < max`.
        unsafe { info.add(n).write(info_of(d)) };
        n += 1;
    }
    n as c_int
}

pub(super) unsafe extern "C" fn max_gpfn(
    _: *mut XcInterface,
    domid: u32,
    out: *mut XenPfn,
) -> c_int {
    rc(with_dom(domid, |d| {
        // SAFETY: valid out-pointer from the caller.
        unsafe { *out = d.spec.pfn_count - 1 };
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn pause(_: *mut XcInterface, domid: u32) -> c_int {
    rc(with_dom(domid, |d| {
        d.pause_count += 1;
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn unpause(_: *mut XcInterface, domid: u32) -> c_int {
    rc(with_dom(domid, |d| {
        d.pause_count = d.pause_count.checked_sub(1).ok_or(libc::EINVAL)?;
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn resume(_: *mut XcInterface, domid: u32, _fast: c_int) -> c_int {
    rc(with_dom(domid, |d| {
        d.shutdown_code = None;
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn shadow_control(
    _: *mut XcInterface,
    domid: u32,
    op: c_uint,
    _: *mut c_uint,
    _: c_uint,
) -> c_int {
    rc(with_dom(domid, |d| match op {
        XEN_DOMCTL_SHADOW_OP_OFF => {
            // Xen frees the log-dirty bitmap when turning it off.
            d.logdirty = false;
            d.dirty.iter_mut().for_each(|w| *w = 0);
            Ok(0)
        }
        XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY => {
            if let Some(e) = d.spec.logdirty_errno {
                return Err(e);
            }
            if d.logdirty {
                return Err(libc::EINVAL);
            }
            d.logdirty = true;
            d.dirty.iter_mut().for_each(|w| *w = 0);
            Ok(0)
        }
        _ => Err(libc::EINVAL),
    }))
}

pub(super) unsafe extern "C" fn logdirty_control(
    _: *mut XcInterface,
    domid: u32,
    op: c_uint,
    bm: *mut XcHypercallBuffer,
    pages: c_ulong,
    _: c_uint,
    stats: *mut ShadowOpStats,
) -> i64 {
    let r = with_dom(domid, |d| {
        if op != XEN_DOMCTL_SHADOW_OP_CLEAN && op != XEN_DOMCTL_SHADOW_OP_PEEK {
            return Err(libc::EINVAL);
        }
        let pages = pages.min(d.spec.pfn_count);
        let words = pages.div_ceil(64) as usize;
        // SAFETY: the caller's descriptor points at a buffer of at least `pages` bits.
        let dst = unsafe { std::slice::from_raw_parts_mut((*bm).hbuf.cast::<u64>(), words) };
        dst.copy_from_slice(&d.dirty[..words]);
        let dirty: u32 = d.dirty.iter().map(|w| w.count_ones()).sum();
        // SAFETY: valid out-pointer from the caller.
        unsafe {
            *stats = ShadowOpStats {
                fault_count: dirty,
                dirty_count: dirty,
            }
        };
        if op == XEN_DOMCTL_SHADOW_OP_CLEAN {
            d.dirty.iter_mut().for_each(|w| *w = 0);
        }
        Ok(pages as i64)
    });
    r.unwrap_or_else(|e| {
        set_errno(e);
        -1
    })
}

pub(super) unsafe extern "C" fn hbuf_alloc(
    _: *mut XcInterface,
    b: *mut XcHypercallBuffer,
    nr: c_int,
) -> *mut c_void {
    // SAFETY: a fresh anonymous mapping; checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            nr as usize * PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // SAFETY: the caller's descriptor is valid for writes.
    unsafe { (*b).hbuf = p };
    p
}

pub(super) unsafe extern "C" fn hbuf_free(
    _: *mut XcInterface,
    b: *mut XcHypercallBuffer,
    nr: c_int,
) {
    // SAFETY: `hbuf` is the mapping `hbuf_alloc` made with the same page count.
    unsafe { libc::munmap((*b).hbuf, nr as usize * PAGE_SIZE) };
}

/// Populate 2^`order` pfns from each extent start, all or none: EINVAL past the pfn space,
/// EBUSY on a pfn already populated (Xen would replace its frame; a restore never asks that).
pub(super) unsafe extern "C" fn populate_exact(
    _: *mut XcInterface,
    domid: u32,
    nr: std::ffi::c_ulong,
    order: c_uint,
    _flags: c_uint,
    starts: *mut XenPfn,
) -> c_int {
    rc(with_dom(domid, |d| {
        // SAFETY: the caller passes `nr` extent starts.
        let starts = unsafe { std::slice::from_raw_parts(starts, nr as usize) };
        let pfns = || starts.iter().flat_map(|&s| s..s + (1u64 << order));
        for p in pfns() {
            if p >= d.spec.pfn_count {
                return Err(libc::EINVAL);
            }
            if !d.unpopulated.contains(&p) {
                return Err(libc::EBUSY);
            }
        }
        for p in pfns() {
            d.unpopulated.remove(&p);
        }
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn pfn_types(
    _: *mut XcInterface,
    domid: u32,
    num: c_uint,
    arr: *mut XenPfn,
) -> c_int {
    rc(with_dom(domid, |d| {
        // SAFETY: the caller passes `num` entries.
        let a = unsafe { std::slice::from_raw_parts_mut(arr, num as usize) };
        for p in a {
            let t = if *p >= d.spec.pfn_count || d.unpopulated.contains(p) {
                XEN_DOMCTL_PFINFO_XTAB
            } else if d.broken.contains(p) {
                XEN_DOMCTL_PFINFO_BROKEN
            } else if let Some(&(_, t)) = d.spec.page_tables.iter().find(|(f, _)| f == p) {
                t
            } else {
                XEN_DOMCTL_PFINFO_NOTAB
            };
            *p = XenPfn::from(t);
        }
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn hvm_getcontext(
    _: *mut XcInterface,
    domid: u32,
    buf: *mut u8,
    size: u32,
) -> c_int {
    rc(with_dom(domid, |d| {
        if !d.spec.hvm {
            return Err(libc::EINVAL);
        }
        let ctx = hvm_context_bytes(domid);
        if !buf.is_null() {
            let n = ctx.len().min(size as usize);
            // SAFETY: the caller's buffer has `size` bytes and `n <= size`.
            unsafe { std::ptr::copy_nonoverlapping(ctx.as_ptr(), buf, n) };
        }
        Ok(ctx.len() as c_int)
    }))
}

pub(super) unsafe extern "C" fn hvm_param(
    _: *mut XcInterface,
    domid: u32,
    idx: u32,
    v: *mut u64,
) -> c_int {
    rc(with_dom(domid, |d| {
        // SAFETY: valid out-pointer.
        unsafe { *v = hvm_param_value(d.spec.pfn_count, idx) };
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn tsc_info(
    _: *mut XcInterface,
    domid: u32,
    m: *mut u32,
    ns: *mut u64,
    khz: *mut u32,
    inc: *mut u32,
) -> c_int {
    rc(with_dom(domid, |_| {
        // SAFETY: four valid out-pointers.
        unsafe { (*m, *ns, *khz, *inc) = FAKE_TSC };
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn vcpu_ctx(
    _: *mut XcInterface,
    domid: u32,
    vcpu: u32,
    c: *mut VcpuGuestContextAny,
) -> c_int {
    rc(with_dom(domid, |d| {
        if vcpu >= d.spec.vcpus {
            return Err(libc::ESRCH);
        }
        // SAFETY: valid, aligned out-pointer.
        let bytes = unsafe { &mut (*c).bytes };
        if d.spec.hvm {
            bytes.fill(vcpu as u8 + 1);
        } else {
            bytes.fill(0);
            let mut set =
                |off: usize, v: u64| bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
            set(VCPU_CTX_X64_RDX, FAKE_PV_START_INFO);
            set(VCPU_CTX_X64_CTRLREG + 24, FAKE_PV_CR3 << 12);
        }
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn vcpu_info(
    _: *mut XcInterface,
    domid: u32,
    vcpu: u32,
    out: *mut XcVcpuInfo,
) -> c_int {
    rc(with_dom(domid, |d| {
        if vcpu >= d.spec.vcpus {
            return Err(libc::ESRCH);
        }
        // SAFETY: valid out-pointer from the caller.
        unsafe {
            *out = XcVcpuInfo {
                vcpu,
                online: 1,
                ..Default::default()
            }
        };
        Ok(0)
    }))
}

/// Size of the xsave area every fake vCPU reports.
pub const FAKE_XSAVE_SIZE: u64 = 576;

/// The domctls of the PV save: address size (64), extended context (16 bytes: vcpu, size, then a marker), xsave
/// state (mask 3, [`FAKE_XSAVE_SIZE`] bytes of `vcpu + 1`), one MSR (0xc0000103 = vcpu).
pub(super) unsafe extern "C" fn domctl(_: *mut XcInterface, dc: *mut XenDomctl) -> c_int {
    // SAFETY: the caller passes a valid domctl.
    let d = unsafe { &mut *dc };
    rc(with_dom(u32::from(d.domain), |dom| {
        // Xen refuses a domctl of another interface version with EACCES; the fake accepts
        // every supported one and remembers which it saw.
        if !crate::version::SUPPORTED
            .iter()
            .any(|a| a.domctl_interface == d.interface_version)
        {
            return Err(libc::EACCES);
        }
        dom.last_domctl_interface = Some(d.interface_version);
        if d.cmd == XEN_DOMCTL_GET_ADDRESS_SIZE {
            d.u[0] = 64;
            return Ok(0);
        }
        let vcpu = (d.u[0] & 0xffff_ffff) as u32;
        if vcpu >= dom.spec.vcpus {
            return Err(libc::ESRCH);
        }
        match d.cmd {
            XEN_DOMCTL_GET_EXT_VCPUCONTEXT => {
                d.u[0] = u64::from(vcpu) | (16 << 32);
                d.u[1] = 0x5845_5443_5456_4350;
            }
            XEN_DOMCTL_GETVCPUEXTSTATE => {
                d.u[1] = 3;
                let buf = d.u[VCPUEXTSTATE_BUFFER / 8] as *mut u8;
                if !buf.is_null() {
                    // SAFETY: the caller's hypercall buffer holds `size` bytes.
                    unsafe { std::ptr::write_bytes(buf, vcpu as u8 + 1, FAKE_XSAVE_SIZE as usize) };
                }
                d.u[2] = FAKE_XSAVE_SIZE;
            }
            XEN_DOMCTL_GET_VCPU_MSRS => {
                d.u[0] = u64::from(vcpu) | (1 << 32);
                let buf = d.u[VCPU_MSRS_MSRS / 8] as *mut u64;
                if !buf.is_null() {
                    // SAFETY: the caller's hypercall buffer holds one 16-byte entry.
                    unsafe {
                        buf.write(0xc000_0103);
                        buf.add(1).write(u64::from(vcpu));
                    }
                }
            }
            _ => return Err(libc::ENOSYS),
        }
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn policy_init() -> *mut XcCpuPolicy {
    Box::into_raw(Box::new(u32::MAX)).cast()
}

pub(super) unsafe extern "C" fn policy_destroy(p: *mut XcCpuPolicy) {
    if !p.is_null() {
        // SAFETY: `p` came from `policy_init`'s Box and is destroyed once.
        drop(unsafe { Box::from_raw(p.cast::<u32>()) });
    }
}

pub(super) unsafe extern "C" fn policy_get_domain(
    _: *mut XcInterface,
    domid: u32,
    p: *mut XcCpuPolicy,
) -> c_int {
    rc(with_dom(domid, |_| {
        // SAFETY: `p` is a live policy from `policy_init`.
        unsafe { *p.cast::<u32>() = domid };
        Ok(0)
    }))
}

pub(super) unsafe extern "C" fn policy_serialise(
    _: *mut XcInterface,
    _: *const XcCpuPolicy,
    leaves: *mut XenCpuidLeaf,
    nl: *mut u32,
    msrs: *mut XenMsrEntry,
    nm: *mut u32,
) -> c_int {
    // SAFETY: the counts are valid in/out pointers and the arrays hold that many entries.
    unsafe {
        if (*nl as usize) < FAKE_LEAVES.len() || (*nm as usize) < FAKE_MSRS.len() {
            set_errno(libc::ENOBUFS);
            return -1;
        }
        std::ptr::copy_nonoverlapping(FAKE_LEAVES.as_ptr(), leaves, FAKE_LEAVES.len());
        std::ptr::copy_nonoverlapping(FAKE_MSRS.as_ptr(), msrs, FAKE_MSRS.len());
        *nl = FAKE_LEAVES.len() as u32;
        *nm = FAKE_MSRS.len() as u32;
    }
    0
}

pub(super) unsafe extern "C" fn policy_size(
    _: *mut XcInterface,
    nl: *mut u32,
    nm: *mut u32,
) -> c_int {
    // SAFETY: valid out-pointers.
    unsafe { (*nl, *nm) = (FAKE_LEAVES.len() as u32 + 2, FAKE_MSRS.len() as u32 + 2) };
    0
}
