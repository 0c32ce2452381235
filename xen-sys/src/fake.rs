//! An in-process fake hypervisor behind the same [`XenApi`] table, for tests of the wrappers and
//! of the Xen back-end on hosts without Xen (feature `fake`).
//!
//! Domains live in a process-wide registry keyed by domid; tests running in parallel must use
//! distinct domids. Memory is kept per populated pfn; writes through [`write_page`] are logged
//! in the dirty bitmap while log-dirty mode is on, as Xen would.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::sync::{Mutex, MutexGuard};

use crate::abi::*;
use crate::api::XenApi;
use crate::PAGE_SIZE;

/// What a fake domain looks like.
#[derive(Debug, Clone, Default)]
pub struct FakeDomainSpec {
    /// Domain id.
    pub domid: u32,
    /// uuid (domain handle).
    pub uuid: [u8; 16],
    /// HVM container (HVM or PVH) rather than PV.
    pub hvm: bool,
    /// Size of the pfn space (max gpfn + 1).
    pub pfn_count: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// pfns with no frame behind them.
    pub unpopulated: Vec<u64>,
    /// pfns Xen reports broken.
    pub broken: Vec<u64>,
    /// If set, enabling log-dirty fails with this errno (e.g. EOPNOTSUPP).
    pub logdirty_errno: Option<i32>,
    /// PV: the frame of the shared info page (`xc_domaininfo_t.shared_info_frame`). The fake
    /// has no separate machine frames: a PV guest's p2m written into its pages should map
    /// each pfn to itself.
    pub shared_info_frame: u64,
    /// PV: frames `xc_get_pfn_type_batch` reports with these raw types (page tables).
    pub page_tables: Vec<(u64, u32)>,
}

/// PV fake vCPUs: the start-info frame in vCPU 0's rdx (the suspend record).
pub const FAKE_PV_START_INFO: u64 = 1;
/// PV fake vCPUs: the frame in CR3.
pub const FAKE_PV_CR3: u64 = 2;

struct FakeDomain {
    spec: FakeDomainSpec,
    unpopulated: BTreeSet<u64>,
    broken: BTreeSet<u64>,
    mem: BTreeMap<u64, Vec<u8>>,
    pause_count: u32,
    /// Set while the guest is shut down with this code (2 = suspend).
    shutdown_code: Option<u32>,
    logdirty: bool,
    dirty: Vec<u64>,
}

static DOMAINS: Mutex<BTreeMap<u32, FakeDomain>> = Mutex::new(BTreeMap::new());

fn domains() -> MutexGuard<'static, BTreeMap<u32, FakeDomain>> {
    DOMAINS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Create (or replace) a fake domain; all its populated pages start zero.
pub fn add_domain(spec: FakeDomainSpec) {
    let d = FakeDomain {
        unpopulated: spec.unpopulated.iter().copied().collect(),
        broken: spec.broken.iter().copied().collect(),
        mem: BTreeMap::new(),
        pause_count: 0,
        shutdown_code: None,
        logdirty: false,
        dirty: vec![0; spec.pfn_count.div_ceil(64) as usize],
        spec,
    };
    domains().insert(d.spec.domid, d);
}

/// Make a fake domain act as if its guest suspended itself (`SHUTDOWN_suspend`).
pub fn guest_suspended(domid: u32) {
    if let Some(d) = domains().get_mut(&domid) {
        d.shutdown_code = Some(crate::abi::SHUTDOWN_SUSPEND);
    }
}

/// Whether a fake domain is shut down for suspend now.
pub fn is_suspended(domid: u32) -> bool {
    domains()
        .get(&domid)
        .is_some_and(|d| d.shutdown_code == Some(crate::abi::SHUTDOWN_SUSPEND))
}

/// Destroy a fake domain.
pub fn remove_domain(domid: u32) {
    domains().remove(&domid);
}

/// Write a page of a fake domain as its vCPUs would. Panics on a bad pfn or length.
pub fn write_page(domid: u32, pfn: u64, data: &[u8]) {
    assert_eq!(data.len(), PAGE_SIZE);
    let mut g = domains();
    let d = g.get_mut(&domid).expect("no such fake domain");
    assert!(
        pfn < d.spec.pfn_count && !d.unpopulated.contains(&pfn),
        "pfn {pfn} not populated"
    );
    d.mem.insert(pfn, data.to_vec());
    if d.logdirty {
        d.dirty[(pfn / 64) as usize] |= 1 << (pfn % 64);
    }
}

/// The pause count of a fake domain.
pub fn pause_count(domid: u32) -> u32 {
    domains().get(&domid).map_or(0, |d| d.pause_count)
}

/// Whether log-dirty mode is on for a fake domain.
pub fn logdirty_on(domid: u32) -> bool {
    domains().get(&domid).is_some_and(|d| d.logdirty)
}

/// The HVM context bytes the fake returns for `domid`.
pub fn hvm_context_bytes(domid: u32) -> Vec<u8> {
    let mut v = b"FAKEHVMCTX".to_vec();
    v.extend_from_slice(&domid.to_le_bytes());
    v
}

/// The HVM params of a fake domain: STORE_PFN = pfn_count - 1, CONSOLE_PFN = pfn_count - 2,
/// X87_FIP_WIDTH = 8, every other param 0.
pub fn hvm_param_value(pfn_count: u64, index: u32) -> u64 {
    match index {
        HVM_PARAM_STORE_PFN => pfn_count - 1,
        HVM_PARAM_CONSOLE_PFN => pfn_count - 2,
        HVM_PARAM_X87_FIP_WIDTH => 8,
        _ => 0,
    }
}

/// The TSC info of every fake domain: (mode, nsec, khz, incarnation).
pub const FAKE_TSC: (u32, u64, u32, u32) = (0, 123_456_789, 2_400_000, 3);

/// The CPUID leaves of every fake domain.
pub const FAKE_LEAVES: [XenCpuidLeaf; 2] = [
    XenCpuidLeaf {
        leaf: 0,
        subleaf: u32::MAX,
        a: 0xd,
        b: 0x756e_6547,
        c: 0x6c65_746e,
        d: 0x4965_6e69,
    },
    XenCpuidLeaf {
        leaf: 7,
        subleaf: 0,
        a: 0,
        b: 0x9c6f_bbfb,
        c: 0,
        d: 0,
    },
];

/// The MSR entries of every fake domain.
pub const FAKE_MSRS: [XenMsrEntry; 1] = [XenMsrEntry {
    idx: 0xce,
    flags: 0,
    val: 0x8000_0000,
}];

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Run `f` on domain `domid`, or fail with ESRCH like Xen.
fn with_dom<R>(domid: u32, f: impl FnOnce(&mut FakeDomain) -> Result<R, i32>) -> Result<R, i32> {
    let mut g = domains();
    let d = g.get_mut(&domid).ok_or(libc::ESRCH)?;
    f(d)
}

fn rc(r: Result<c_int, i32>) -> c_int {
    r.unwrap_or_else(|e| {
        set_errno(e);
        -1
    })
}

static HANDLE_MARK: u8 = 0;

fn handle<T>() -> *mut T {
    std::ptr::addr_of!(HANDLE_MARK).cast_mut().cast()
}

unsafe extern "C" fn xc_open(
    _: *mut XenToolLogger,
    _: *mut XenToolLogger,
    _: c_uint,
) -> *mut XcInterface {
    handle()
}

unsafe extern "C" fn xc_close(_: *mut XcInterface) -> c_int {
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

unsafe extern "C" fn getinfolist(
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

unsafe extern "C" fn max_gpfn(_: *mut XcInterface, domid: u32, out: *mut XenPfn) -> c_int {
    rc(with_dom(domid, |d| {
        // SAFETY: valid out-pointer from the caller.
        unsafe { *out = d.spec.pfn_count - 1 };
        Ok(0)
    }))
}

unsafe extern "C" fn pause(_: *mut XcInterface, domid: u32) -> c_int {
    rc(with_dom(domid, |d| {
        d.pause_count += 1;
        Ok(0)
    }))
}

unsafe extern "C" fn unpause(_: *mut XcInterface, domid: u32) -> c_int {
    rc(with_dom(domid, |d| {
        d.pause_count = d.pause_count.checked_sub(1).ok_or(libc::EINVAL)?;
        Ok(0)
    }))
}

unsafe extern "C" fn resume(_: *mut XcInterface, domid: u32, _fast: c_int) -> c_int {
    rc(with_dom(domid, |d| {
        d.shutdown_code = None;
        Ok(0)
    }))
}

unsafe extern "C" fn shadow_control(
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

unsafe extern "C" fn logdirty_control(
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

unsafe extern "C" fn hbuf_alloc(
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

unsafe extern "C" fn hbuf_free(_: *mut XcInterface, b: *mut XcHypercallBuffer, nr: c_int) {
    // SAFETY: `hbuf` is the mapping `hbuf_alloc` made with the same page count.
    unsafe { libc::munmap((*b).hbuf, nr as usize * PAGE_SIZE) };
}

unsafe extern "C" fn pfn_types(
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

unsafe extern "C" fn hvm_getcontext(
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

unsafe extern "C" fn hvm_param(_: *mut XcInterface, domid: u32, idx: u32, v: *mut u64) -> c_int {
    rc(with_dom(domid, |d| {
        // SAFETY: valid out-pointer.
        unsafe { *v = hvm_param_value(d.spec.pfn_count, idx) };
        Ok(0)
    }))
}

unsafe extern "C" fn tsc_info(
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

unsafe extern "C" fn vcpu_ctx(
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

unsafe extern "C" fn vcpu_info(
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
unsafe extern "C" fn domctl(_: *mut XcInterface, dc: *mut XenDomctl) -> c_int {
    // SAFETY: the caller passes a valid domctl.
    let d = unsafe { &mut *dc };
    rc(with_dom(u32::from(d.domain), |dom| {
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

unsafe extern "C" fn policy_init() -> *mut XcCpuPolicy {
    Box::into_raw(Box::new(u32::MAX)).cast()
}

unsafe extern "C" fn policy_destroy(p: *mut XcCpuPolicy) {
    if !p.is_null() {
        // SAFETY: `p` came from `policy_init`'s Box and is destroyed once.
        drop(unsafe { Box::from_raw(p.cast::<u32>()) });
    }
}

unsafe extern "C" fn policy_get_domain(
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

unsafe extern "C" fn policy_serialise(
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

unsafe extern "C" fn policy_size(_: *mut XcInterface, nl: *mut u32, nm: *mut u32) -> c_int {
    // SAFETY: valid out-pointers.
    unsafe { (*nl, *nm) = (FAKE_LEAVES.len() as u32 + 2, FAKE_MSRS.len() as u32 + 2) };
    0
}

unsafe extern "C" fn fm_open(_: *mut XenToolLogger, _: c_uint) -> *mut XenForeignMemoryHandle {
    handle()
}

unsafe extern "C" fn fm_close(_: *mut XenForeignMemoryHandle) -> c_int {
    0
}

unsafe extern "C" fn fm_map(
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

unsafe extern "C" fn fm_unmap(
    _: *mut XenForeignMemoryHandle,
    addr: *mut c_void,
    n: usize,
) -> c_int {
    // SAFETY: `addr`/`n` describe a mapping made by `fm_map`.
    unsafe { libc::munmap(addr, n * PAGE_SIZE) }
}

/// The fake function table.
pub static FAKE_API: XenApi = XenApi {
    xc_interface_open: xc_open,
    xc_interface_close: xc_close,
    xc_domain_getinfolist: getinfolist,
    xc_domain_maximum_gpfn: max_gpfn,
    xc_domain_pause: pause,
    xc_domain_unpause: unpause,
    xc_domain_resume: resume,
    xc_shadow_control: shadow_control,
    xc_logdirty_control: logdirty_control,
    xc__hypercall_buffer_alloc_pages: hbuf_alloc,
    xc__hypercall_buffer_free_pages: hbuf_free,
    xc_get_pfn_type_batch: pfn_types,
    xc_domain_hvm_getcontext: hvm_getcontext,
    xc_hvm_param_get: hvm_param,
    xc_domain_get_tsc_info: tsc_info,
    xc_vcpu_getcontext: vcpu_ctx,
    xc_vcpu_getinfo: vcpu_info,
    xc_domctl: domctl,
    xc_cpu_policy_init: policy_init,
    xc_cpu_policy_destroy: policy_destroy,
    xc_cpu_policy_get_domain: policy_get_domain,
    xc_cpu_policy_serialise: policy_serialise,
    xc_cpu_policy_get_size: policy_size,
    xenforeignmemory_open: fm_open,
    xenforeignmemory_close: fm_close,
    xenforeignmemory_map: fm_map,
    xenforeignmemory_unmap: fm_unmap,
};
