//! The function table: every C entry point xckpt uses, with its signature (the same in Xen 4.17
//! to 4.22), loaded once at run time from the libraries of the release [`crate::version`] picks.
//!
//! The safe wrappers call through a `&'static XenApi`, so tests (and the `fake` feature) can hand
//! them a table of Rust functions instead of the real libraries.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::sync::OnceLock;

use libloading::Library;

use crate::abi::{
    ShadowOpStats, VcpuGuestContextAny, XcCpuPolicy, XcDomainInfo, XcHypercallBuffer, XcInterface,
    XcVcpuInfo, XenCpuidLeaf, XenDomctl, XenForeignMemoryHandle, XenMsrEntry, XenPfn,
    XenToolLogger,
};
use crate::version::{self, Abi};
use crate::XenError;

/// libxenforeignmemory's soname (stable across releases; libxenctrl's and libxenguest's are
/// per release, in [`Abi`]).
pub const LIBXENFOREIGNMEMORY: &str = "libxenforeignmemory.so.1";

/// C entry points, as declared in xenctrl.h, xenguest.h, xenforeignmemory.h (and xc_private.h
/// for `xc_get_pfn_type_batch`, which libxenctrl exports).
#[allow(missing_docs, non_snake_case)]
#[derive(Clone, Copy)]
pub struct XenApi {
    /// The release these entry points belong to (its domctl interface version goes into
    /// every [`crate::abi::XenDomctl`]).
    pub abi: &'static Abi,
    pub xc_interface_open: unsafe extern "C" fn(
        logger: *mut XenToolLogger,
        dombuild_logger: *mut XenToolLogger,
        open_flags: c_uint,
    ) -> *mut XcInterface,
    pub xc_interface_close: unsafe extern "C" fn(xch: *mut XcInterface) -> c_int,
    pub xc_domain_getinfolist: unsafe extern "C" fn(
        xch: *mut XcInterface,
        first_domain: u32,
        max_domains: c_uint,
        info: *mut XcDomainInfo,
    ) -> c_int,
    pub xc_domain_maximum_gpfn:
        unsafe extern "C" fn(xch: *mut XcInterface, domid: u32, gpfns: *mut XenPfn) -> c_int,
    pub xc_domain_pause: unsafe extern "C" fn(xch: *mut XcInterface, domid: u32) -> c_int,
    pub xc_domain_unpause: unsafe extern "C" fn(xch: *mut XcInterface, domid: u32) -> c_int,
    /// From libxenguest: resume a domain suspended by `SHUTDOWN_suspend`; `fast` tells the
    /// guest its suspend was cancelled (it resumes in place, as after `xl save -c`).
    pub xc_domain_resume:
        unsafe extern "C" fn(xch: *mut XcInterface, domid: u32, fast: c_int) -> c_int,
    pub xc_shadow_control: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        sop: c_uint,
        mb: *mut c_uint,
        mode: c_uint,
    ) -> c_int,
    pub xc_logdirty_control: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        sop: c_uint,
        dirty_bitmap: *mut XcHypercallBuffer,
        pages: c_ulong,
        mode: c_uint,
        stats: *mut ShadowOpStats,
    ) -> i64,
    pub xc__hypercall_buffer_alloc_pages: unsafe extern "C" fn(
        xch: *mut XcInterface,
        b: *mut XcHypercallBuffer,
        nr_pages: c_int,
    ) -> *mut c_void,
    pub xc__hypercall_buffer_free_pages:
        unsafe extern "C" fn(xch: *mut XcInterface, b: *mut XcHypercallBuffer, nr_pages: c_int),
    pub xc_domain_populate_physmap_exact: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        nr_extents: c_ulong,
        extent_order: c_uint,
        mem_flags: c_uint,
        extent_start: *mut XenPfn,
    ) -> c_int,
    pub xc_get_pfn_type_batch: unsafe extern "C" fn(
        xch: *mut XcInterface,
        dom: u32,
        num: c_uint,
        arr: *mut XenPfn,
    ) -> c_int,
    pub xc_domain_hvm_getcontext: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        ctxt_buf: *mut u8,
        size: u32,
    ) -> c_int,
    pub xc_hvm_param_get: unsafe extern "C" fn(
        handle: *mut XcInterface,
        dom: u32,
        param: u32,
        value: *mut u64,
    ) -> c_int,
    pub xc_domain_get_tsc_info: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        tsc_mode: *mut u32,
        elapsed_nsec: *mut u64,
        gtsc_khz: *mut u32,
        incarnation: *mut u32,
    ) -> c_int,
    pub xc_vcpu_getcontext: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        vcpu: u32,
        ctxt: *mut VcpuGuestContextAny,
    ) -> c_int,
    pub xc_vcpu_getinfo: unsafe extern "C" fn(
        xch: *mut XcInterface,
        domid: u32,
        vcpu: u32,
        info: *mut XcVcpuInfo,
    ) -> c_int,
    /// A raw domctl (the PV save's extended vCPU, xsave and MSR state); libxc bounces the
    /// struct itself, buffers it points to must be hypercall memory.
    pub xc_domctl: unsafe extern "C" fn(xch: *mut XcInterface, domctl: *mut XenDomctl) -> c_int,
    pub xc_cpu_policy_init: unsafe extern "C" fn() -> *mut XcCpuPolicy,
    pub xc_cpu_policy_destroy: unsafe extern "C" fn(policy: *mut XcCpuPolicy),
    pub xc_cpu_policy_get_domain:
        unsafe extern "C" fn(xch: *mut XcInterface, domid: u32, policy: *mut XcCpuPolicy) -> c_int,
    pub xc_cpu_policy_serialise: unsafe extern "C" fn(
        xch: *mut XcInterface,
        policy: *const XcCpuPolicy,
        leaves: *mut XenCpuidLeaf,
        nr_leaves: *mut u32,
        msrs: *mut XenMsrEntry,
        nr_msrs: *mut u32,
    ) -> c_int,
    pub xc_cpu_policy_get_size: unsafe extern "C" fn(
        xch: *mut XcInterface,
        nr_leaves: *mut u32,
        nr_msrs: *mut u32,
    ) -> c_int,
    pub xenforeignmemory_open: unsafe extern "C" fn(
        logger: *mut XenToolLogger,
        open_flags: c_uint,
    ) -> *mut XenForeignMemoryHandle,
    pub xenforeignmemory_close: unsafe extern "C" fn(fmem: *mut XenForeignMemoryHandle) -> c_int,
    pub xenforeignmemory_map: unsafe extern "C" fn(
        fmem: *mut XenForeignMemoryHandle,
        dom: u32,
        prot: c_int,
        pages: usize,
        arr: *const XenPfn,
        err: *mut c_int,
    ) -> *mut c_void,
    pub xenforeignmemory_unmap: unsafe extern "C" fn(
        fmem: *mut XenForeignMemoryHandle,
        addr: *mut c_void,
        pages: usize,
    ) -> c_int,
}

/// The loaded libraries, kept open for the life of the process, and the table into them.
struct Loaded {
    _libs: [Library; 3],
    api: XenApi,
}

static LOADED: OnceLock<Result<Loaded, XenError>> = OnceLock::new();

/// The real table, picking the release ([`version::detect`]) and loading its libraries on
/// first use. The error (an unsupported release, a missing library or symbol) is remembered
/// and returned again on every later call.
pub fn real() -> Result<&'static XenApi, XenError> {
    match LOADED.get_or_init(|| load(version::detect()?)) {
        Ok(l) => Ok(&l.api),
        Err(e) => Err(e.clone()),
    }
}

/// The release whose tools xckpt loaded (loading them if not yet done).
pub fn tools_abi() -> Result<&'static Abi, XenError> {
    real().map(|a| a.abi)
}

pub(crate) fn open_lib(name: &'static str, abi: &Abi) -> Result<Library, XenError> {
    // SAFETY: loading a Xen tools library runs its ELF initialisers; these libraries have no
    // initialisers with preconditions (they only set up internal state lazily on open).
    unsafe { Library::new(name) }.map_err(|e| XenError::Load {
        lib: name,
        tools: abi.version.to_string(),
        reason: first_line(&e.to_string()),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// Look up `name` in `lib` as a value of fn-pointer type `T`.
///
/// # Safety
/// `T` must be the exact C signature of the symbol as declared in the headers of every
/// supported release.
pub(crate) unsafe fn sym<T: Copy>(
    lib: &Library,
    libname: &'static str,
    name: &'static str,
) -> Result<T, XenError> {
    // SAFETY: the caller guarantees `T` matches the symbol's C type; the library stays loaded
    // for the process lifetime (kept in `LOADED`), so the copied pointer never dangles.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| XenError::Symbol {
            lib: libname,
            symbol: name,
            reason: first_line(&e.to_string()),
        })
}

fn load(abi: &'static Abi) -> Result<Loaded, XenError> {
    let ctrl = open_lib(abi.libxenctrl, abi)?;
    let fmem = open_lib(LIBXENFOREIGNMEMORY, abi)?;
    let guest = open_lib(abi.libxenguest, abi)?;
    // SAFETY: each field's type in `XenApi` is the signature from the 4.17 and 4.20 headers
    // (checked by tests/layout.rs, with the structs they take), and each symbol is looked up
    // by that name.
    let api = unsafe {
        macro_rules! c {
            ($n:literal) => {
                sym(&ctrl, abi.libxenctrl, $n)?
            };
        }
        macro_rules! f {
            ($n:literal) => {
                sym(&fmem, LIBXENFOREIGNMEMORY, $n)?
            };
        }
        macro_rules! g {
            ($n:literal) => {
                sym(&guest, abi.libxenguest, $n)?
            };
        }
        XenApi {
            abi,
            xc_interface_open: c!("xc_interface_open"),
            xc_interface_close: c!("xc_interface_close"),
            xc_domain_getinfolist: c!("xc_domain_getinfolist"),
            xc_domain_maximum_gpfn: c!("xc_domain_maximum_gpfn"),
            xc_domain_pause: c!("xc_domain_pause"),
            xc_domain_unpause: c!("xc_domain_unpause"),
            xc_domain_resume: g!("xc_domain_resume"),
            xc_shadow_control: c!("xc_shadow_control"),
            xc_logdirty_control: c!("xc_logdirty_control"),
            xc__hypercall_buffer_alloc_pages: c!("xc__hypercall_buffer_alloc_pages"),
            xc__hypercall_buffer_free_pages: c!("xc__hypercall_buffer_free_pages"),
            xc_domain_populate_physmap_exact: c!("xc_domain_populate_physmap_exact"),
            xc_get_pfn_type_batch: c!("xc_get_pfn_type_batch"),
            xc_domain_hvm_getcontext: c!("xc_domain_hvm_getcontext"),
            xc_hvm_param_get: c!("xc_hvm_param_get"),
            xc_domain_get_tsc_info: c!("xc_domain_get_tsc_info"),
            xc_vcpu_getcontext: c!("xc_vcpu_getcontext"),
            xc_vcpu_getinfo: c!("xc_vcpu_getinfo"),
            xc_domctl: c!("xc_domctl"),
            xc_cpu_policy_init: g!("xc_cpu_policy_init"),
            xc_cpu_policy_destroy: g!("xc_cpu_policy_destroy"),
            xc_cpu_policy_get_domain: g!("xc_cpu_policy_get_domain"),
            xc_cpu_policy_serialise: g!("xc_cpu_policy_serialise"),
            xc_cpu_policy_get_size: g!("xc_cpu_policy_get_size"),
            xenforeignmemory_open: f!("xenforeignmemory_open"),
            xenforeignmemory_close: f!("xenforeignmemory_close"),
            xenforeignmemory_map: f!("xenforeignmemory_map"),
            xenforeignmemory_unmap: f!("xenforeignmemory_unmap"),
        }
    };
    Ok(Loaded {
        _libs: [ctrl, fmem, guest],
        api,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_one_line_naming_it() {
        let abi = &version::SUPPORTED[3];
        let e = open_lib("libxckpt-missing.so.0", abi).expect_err("cannot load");
        let m = e.to_string();
        assert!(m.starts_with("cannot load libxckpt-missing.so.0 ("), "{m}");
        assert!(
            m.contains("xen-utils-4.20 / libxenmisc4.20") && m.contains("not a Xen dom0"),
            "{m}"
        );
        assert!(!m.contains('\n'), "{m}");
    }
}
