//! An in-process fake hypervisor behind the same [`XenApi`] table, for tests of the wrappers and
//! of the Xen back-end on hosts without Xen (feature `fake`).
//!
//! Domains live in a process-wide registry keyed by domid; tests running in parallel must use
//! distinct domids. Memory is kept per populated pfn; writes through [`write_page`] are logged
//! in the dirty bitmap while log-dirty mode is on, as Xen would.
//!
//! This module keeps the registry, the test controls and the function table; the entry points
//! are in `xc` (libxenctrl) and `fmem` (libxenforeignmemory).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_int;
use std::sync::{Mutex, MutexGuard};

use crate::abi::*;
use crate::api::XenApi;
use crate::PAGE_SIZE;

mod fmem;
mod xc;

use fmem::*;
pub use xc::FAKE_XSAVE_SIZE;
use xc::*;

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
    /// `interface_version` of the last domctl for this domain.
    last_domctl_interface: Option<u32>,
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
        last_domctl_interface: None,
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

/// The `interface_version` the last domctl on `domid` carried.
pub fn last_domctl_interface(domid: u32) -> Option<u32> {
    domains().get(&domid).and_then(|d| d.last_domctl_interface)
}

/// The fake table speaking release `abi` (leaked once per release; tests only).
pub fn api_for(abi: &'static crate::Abi) -> &'static XenApi {
    static TABLES: Mutex<Vec<&'static XenApi>> = Mutex::new(Vec::new());
    let mut t = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = t.iter().find(|a| std::ptr::eq(a.abi, abi)) {
        return a;
    }
    let a: &'static XenApi = Box::leak(Box::new(XenApi { abi, ..FAKE_API }));
    t.push(a);
    a
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

/// The fake function table.
pub static FAKE_API: XenApi = XenApi {
    abi: &crate::version::SUPPORTED[0],
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
    xc_domain_populate_physmap_exact: populate_exact,
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
