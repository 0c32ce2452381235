//! [`XenCtrl`]: an open libxenctrl handle and the calls xckpt makes through it.

use std::ffi::{c_int, c_uint};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::abi::{
    ShadowOpStats, VcpuGuestContextAny, XcDomainInfo, XcInterface, XcVcpuInfo, XenCpuidLeaf,
    XenDomctl, XenMsrEntry, EXT_VCPUCONTEXT_SIZE, VCPUEXTSTATE_BUFFER, VCPUEXTSTATE_SIZE,
    VCPUEXTSTATE_XFEATURE_MASK, VCPU_MSRS_COUNT, VCPU_MSRS_MSRS, VCPU_MSR_SIZE,
    XEN_DOMCTL_GETVCPUEXTSTATE, XEN_DOMCTL_GET_ADDRESS_SIZE, XEN_DOMCTL_GET_EXT_VCPUCONTEXT,
    XEN_DOMCTL_GET_VCPU_MSRS, XEN_DOMCTL_PFINFO_LTAB_MASK,
};
use crate::api::{self, XenApi};
use crate::bitmap::HypercallPages;
use crate::{HypercallBitmap, XenError};

/// Frames per `xc_get_pfn_type_batch` call (libxc's save uses 1024 too).
const TYPE_BATCH: usize = 1024;

/// The TSC settings of a domain, as `xc_domain_get_tsc_info` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TscInfo {
    /// TSC mode.
    pub mode: u32,
    /// Elapsed nanoseconds.
    pub nsec: u64,
    /// Guest TSC frequency, kHz.
    pub khz: u32,
    /// Incarnation (bumped on each restore).
    pub incarnation: u32,
}

impl TscInfo {
    /// The libxc `X86_TSC_INFO` record body: mode u32, khz u32, nsec u64, incarnation u32,
    /// reserved u32, little-endian (24 bytes).
    pub fn to_record(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.mode.to_le_bytes());
        v.extend_from_slice(&self.khz.to_le_bytes());
        v.extend_from_slice(&self.nsec.to_le_bytes());
        v.extend_from_slice(&self.incarnation.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }
}

pub(crate) struct CtrlHandle {
    pub(crate) api: &'static XenApi,
    pub(crate) xch: NonNull<XcInterface>,
}

// SAFETY: libxenctrl handles opened without XC_OPENFLAG_NON_REENTRANT may be used from any thread
// and concurrently (libxc serialises internally where it must); the pointer is never freed
// before the last `Arc` drops.
unsafe impl Send for CtrlHandle {}
// SAFETY: as above.
unsafe impl Sync for CtrlHandle {}

impl Drop for CtrlHandle {
    fn drop(&mut self) {
        // SAFETY: `xch` came from xc_interface_open and this is its only close (last Arc).
        unsafe { (self.api.xc_interface_close)(self.xch.as_ptr()) };
    }
}

/// An open `xc_interface`, closed when the last clone drops.
#[derive(Clone)]
pub struct XenCtrl {
    pub(crate) h: Arc<CtrlHandle>,
}

impl std::fmt::Debug for XenCtrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XenCtrl")
    }
}

impl XenCtrl {
    /// Load the libraries (once) and open a control handle.
    pub fn open() -> Result<Self, XenError> {
        let api = api::real()?;
        crate::check_privcmd()?;
        Self::open_with(api)
    }

    /// Open a handle on the in-process fake hypervisor of [`crate::fake`] (Xen 4.17's ABI).
    #[cfg(any(test, feature = "fake"))]
    pub fn open_fake() -> Self {
        Self::open_with(&crate::fake::FAKE_API).expect("the fake xc_interface_open cannot fail")
    }

    /// Open a handle on the fake hypervisor through the table of release `abi`.
    #[cfg(any(test, feature = "fake"))]
    pub fn open_fake_as(abi: &'static crate::Abi) -> Self {
        Self::open_with(crate::fake::api_for(abi)).expect("the fake xc_interface_open cannot fail")
    }

    fn open_with(api: &'static XenApi) -> Result<Self, XenError> {
        // SAFETY: NULL loggers make libxc log to stderr; flags 0 is a normal reentrant handle.
        let xch = unsafe { (api.xc_interface_open)(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        let xch = NonNull::new(xch).ok_or_else(|| crate::open_error("xc_interface_open"))?;
        Ok(XenCtrl {
            h: Arc::new(CtrlHandle { api, xch }),
        })
    }

    fn api(&self) -> &'static XenApi {
        self.h.api
    }

    /// The Xen release of the loaded tools.
    pub fn abi(&self) -> &'static crate::Abi {
        self.h.api.abi
    }

    fn xch(&self) -> *mut XcInterface {
        self.h.xch.as_ptr()
    }

    /// Map a C return value: negative is failure with errno.
    fn check(rc: c_int, call: &'static str) -> Result<c_int, XenError> {
        if rc < 0 {
            Err(XenError::last(call))
        } else {
            Ok(rc)
        }
    }

    /// Up to `max` domains with id >= `first`, in id order.
    pub fn domain_infos(&self, first: u32, max: u32) -> Result<Vec<XcDomainInfo>, XenError> {
        let mut out = vec![XcDomainInfo::default(); max as usize];
        // SAFETY: `out` holds `max` writable xc_domaininfo_t (layout checked by tests/layout.rs).
        let rc =
            unsafe { (self.api().xc_domain_getinfolist)(self.xch(), first, max, out.as_mut_ptr()) };
        let n = Self::check(rc, "xc_domain_getinfolist")? as usize;
        out.truncate(n.min(max as usize));
        Ok(out)
    }

    /// Every domain on the host.
    pub fn all_domains(&self) -> Result<Vec<XcDomainInfo>, XenError> {
        let mut all = Vec::new();
        let mut next = 0u32;
        loop {
            let batch = self.domain_infos(next, 256)?;
            let Some(last) = batch.last() else { break };
            next = u32::from(last.domain) + 1;
            let full = batch.len() == 256;
            all.extend(batch);
            if !full {
                break;
            }
        }
        Ok(all)
    }

    /// Information about `domid`, or `None` if no such domain exists.
    pub fn domain_info(&self, domid: u32) -> Result<Option<XcDomainInfo>, XenError> {
        let v = self.domain_infos(domid, 1)?;
        Ok(v.into_iter().find(|i| u32::from(i.domain) == domid))
    }

    /// The highest guest frame number of `domid`.
    pub fn maximum_gpfn(&self, domid: u32) -> Result<u64, XenError> {
        let mut gpfn = 0;
        // SAFETY: `gpfn` is a valid xen_pfn_t out-pointer.
        let rc = unsafe { (self.api().xc_domain_maximum_gpfn)(self.xch(), domid, &mut gpfn) };
        Self::check(rc, "xc_domain_maximum_gpfn")?;
        Ok(gpfn)
    }

    /// Pause `domid`.
    pub fn pause(&self, domid: u32) -> Result<(), XenError> {
        // SAFETY: plain call on an open handle.
        let rc = unsafe { (self.api().xc_domain_pause)(self.xch(), domid) };
        Self::check(rc, "xc_domain_pause").map(drop)
    }

    /// Unpause `domid`.
    pub fn unpause(&self, domid: u32) -> Result<(), XenError> {
        // SAFETY: plain call on an open handle.
        let rc = unsafe { (self.api().xc_domain_unpause)(self.xch(), domid) };
        Self::check(rc, "xc_domain_unpause").map(drop)
    }

    /// Resume `domid` after a `SHUTDOWN_suspend`, telling the guest its suspend was cancelled
    /// (`xc_domain_resume(…, fast = 1)`, as `xl save -c` does).
    pub fn resume_cancelled(&self, domid: u32) -> Result<(), XenError> {
        // SAFETY: plain call on an open handle.
        let rc = unsafe { (self.api().xc_domain_resume)(self.xch(), domid, 1) };
        Self::check(rc, "xc_domain_resume").map(drop)
    }

    /// `xc_shadow_control(domid, op, NULL, mode)`, e.g. OFF or ENABLE_LOGDIRTY.
    pub fn shadow_control(&self, domid: u32, op: u32, mode: u32) -> Result<(), XenError> {
        // SAFETY: `mb` may be NULL (only used by the allocation ops).
        let rc = unsafe {
            (self.api().xc_shadow_control)(self.xch(), domid, op, std::ptr::null_mut(), mode)
        };
        Self::check(rc, "xc_shadow_control").map(drop)
    }

    /// A log-dirty bitmap of `bits` bits in hypercall-safe memory.
    pub fn alloc_bitmap(&self, bits: u64) -> Result<HypercallBitmap, XenError> {
        HypercallBitmap::alloc(self.clone(), bits)
    }

    /// `xc_logdirty_control` with `op` CLEAN or PEEK over the whole `bitmap`: the bitmap is
    /// zeroed, then filled by Xen. Returns the pages Xen covered and the stats.
    pub fn logdirty_control(
        &self,
        domid: u32,
        op: u32,
        bitmap: &mut HypercallBitmap,
        mode: u32,
    ) -> Result<(u64, ShadowOpStats), XenError> {
        assert!(
            Arc::ptr_eq(&self.h, &bitmap.mem.ctrl.h),
            "bitmap belongs to another handle"
        );
        bitmap.zero();
        let mut stats = ShadowOpStats::default();
        let pages = bitmap.bits();
        // SAFETY: the buffer descriptor was filled by xc__hypercall_buffer_alloc_pages on this
        // handle and covers at least `pages` bits; `stats` is a valid out-pointer.
        let rc = unsafe {
            (self.api().xc_logdirty_control)(
                self.xch(),
                domid,
                op,
                bitmap.raw(),
                pages as _,
                mode,
                &mut stats,
            )
        };
        if rc < 0 {
            return Err(XenError::last("xc_logdirty_control"));
        }
        Ok((rc as u64, stats))
    }

    /// Populate `domid`'s physmap with one extent of 2^`order` frames at each of `starts`, in
    /// one call, as `xl restore` populates a domain it builds: all of them, or an error (Xen
    /// may have populated some extents before it failed).
    pub fn populate_physmap(&self, domid: u32, order: u32, starts: &[u64]) -> Result<(), XenError> {
        let mut buf: Vec<crate::abi::XenPfn> =
            starts.iter().map(|&p| p as crate::abi::XenPfn).collect();
        // SAFETY: `buf` holds `buf.len()` xen_pfn_t extent starts, which libxc bounces into
        // hypercall memory (and back, as the frames allocated) itself.
        let rc = unsafe {
            (self.api().xc_domain_populate_physmap_exact)(
                self.xch(),
                domid,
                buf.len() as std::ffi::c_ulong,
                order,
                0,
                buf.as_mut_ptr(),
            )
        };
        Self::check(rc, "xc_domain_populate_physmap_exact").map(drop)
    }

    /// Page types of `pfns` (raw `XEN_DOMCTL_PFINFO_*` values, masked to the type nibble),
    /// queried in batches of 1024.
    pub fn pfn_types(&self, domid: u32, pfns: &[u64], out: &mut [u32]) -> Result<(), XenError> {
        assert_eq!(pfns.len(), out.len(), "pfn_types: output length");
        let mut buf = Vec::with_capacity(TYPE_BATCH.min(pfns.len()));
        for (chunk, dst) in pfns.chunks(TYPE_BATCH).zip(out.chunks_mut(TYPE_BATCH)) {
            buf.clear();
            buf.extend(chunk.iter().map(|&p| p as crate::abi::XenPfn));
            // SAFETY: `buf` holds `chunk.len()` (<= 1024) xen_pfn_t, read and overwritten in
            // place with their types; libxc bounces it into hypercall memory itself.
            let rc = unsafe {
                (self.api().xc_get_pfn_type_batch)(
                    self.xch(),
                    domid,
                    chunk.len() as c_uint,
                    buf.as_mut_ptr(),
                )
            };
            Self::check(rc, "xc_get_pfn_type_batch")?;
            for (d, &t) in dst.iter_mut().zip(&buf) {
                *d = (t as u32) & XEN_DOMCTL_PFINFO_LTAB_MASK;
            }
        }
        Ok(())
    }

    /// The whole HVM context of `domid` (the HVM_CONTEXT record body).
    pub fn hvm_context(&self, domid: u32) -> Result<Vec<u8>, XenError> {
        // SAFETY: a NULL buffer with size 0 asks for the needed size.
        let rc = unsafe {
            (self.api().xc_domain_hvm_getcontext)(self.xch(), domid, std::ptr::null_mut(), 0)
        };
        let size = Self::check(rc, "xc_domain_hvm_getcontext")? as usize;
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has `size` writable bytes.
        let rc = unsafe {
            (self.api().xc_domain_hvm_getcontext)(self.xch(), domid, buf.as_mut_ptr(), size as u32)
        };
        let got = Self::check(rc, "xc_domain_hvm_getcontext")? as usize;
        buf.truncate(got.min(size));
        Ok(buf)
    }

    /// One HVM param.
    pub fn hvm_param(&self, domid: u32, index: u32) -> Result<u64, XenError> {
        let mut v = 0u64;
        // SAFETY: `v` is a valid out-pointer.
        let rc = unsafe { (self.api().xc_hvm_param_get)(self.xch(), domid, index, &mut v) };
        Self::check(rc, "xc_hvm_param_get")?;
        Ok(v)
    }

    /// TSC settings of `domid`.
    pub fn tsc_info(&self, domid: u32) -> Result<TscInfo, XenError> {
        let mut t = TscInfo::default();
        // SAFETY: four valid out-pointers of the declared types.
        let rc = unsafe {
            (self.api().xc_domain_get_tsc_info)(
                self.xch(),
                domid,
                &mut t.mode,
                &mut t.nsec,
                &mut t.khz,
                &mut t.incarnation,
            )
        };
        Self::check(rc, "xc_domain_get_tsc_info")?;
        Ok(t)
    }

    /// The domain's CPUID and MSR policy, serialised as libxc's save does.
    pub fn cpu_policy(
        &self,
        domid: u32,
    ) -> Result<(Vec<XenCpuidLeaf>, Vec<XenMsrEntry>), XenError> {
        let api = self.api();
        let (mut nl, mut nm) = (0u32, 0u32);
        // SAFETY: two valid out-pointers.
        let rc = unsafe { (api.xc_cpu_policy_get_size)(self.xch(), &mut nl, &mut nm) };
        Self::check(rc, "xc_cpu_policy_get_size")?;
        let mut leaves = vec![XenCpuidLeaf::default(); nl as usize];
        let mut msrs = vec![XenMsrEntry::default(); nm as usize];
        // SAFETY: plain allocation; checked for NULL below and destroyed by `Policy::drop`.
        let p = unsafe { (api.xc_cpu_policy_init)() };
        let policy = Policy { api, p };
        if policy.p.is_null() {
            return Err(XenError::last("xc_cpu_policy_init"));
        }
        // SAFETY: `policy.p` is a live policy object.
        let rc = unsafe { (api.xc_cpu_policy_get_domain)(self.xch(), domid, policy.p) };
        Self::check(rc, "xc_cpu_policy_get_domain")?;
        // SAFETY: the arrays hold `nl` / `nm` entries, as the counts in/out say.
        let rc = unsafe {
            (api.xc_cpu_policy_serialise)(
                self.xch(),
                policy.p,
                leaves.as_mut_ptr(),
                &mut nl,
                msrs.as_mut_ptr(),
                &mut nm,
            )
        };
        Self::check(rc, "xc_cpu_policy_serialise")?;
        leaves.truncate(nl as usize);
        msrs.truncate(nm as usize);
        Ok((leaves, msrs))
    }

    /// The context of one vCPU (needed for PV guests).
    pub fn vcpu_context(
        &self,
        domid: u32,
        vcpu: u32,
    ) -> Result<Box<VcpuGuestContextAny>, XenError> {
        let mut ctx = Box::<VcpuGuestContextAny>::default();
        // SAFETY: `ctx` is a correctly sized and aligned vcpu_guest_context_any_t.
        let rc = unsafe { (self.api().xc_vcpu_getcontext)(self.xch(), domid, vcpu, &mut *ctx) };
        Self::check(rc, "xc_vcpu_getcontext")?;
        Ok(ctx)
    }
}

/// Read a little-endian u32 / u64 at byte `off` of a domctl union.
fn u_u32(d: &XenDomctl, off: usize) -> u32 {
    let b = d.u_bytes();
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u_u64(d: &XenDomctl, off: usize) -> u64 {
    d.u[off / 8]
}

/// Set the u32 at byte `off` (4-aligned) of a domctl union.
fn set_u32(d: &mut XenDomctl, off: usize, v: u32) {
    let w = &mut d.u[off / 8];
    let shift = (off % 8) * 8;
    *w = (*w & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
}

impl XenCtrl {
    /// Whether vCPU `vcpu` of `domid` is online (`xc_vcpu_getinfo`).
    pub fn vcpu_online(&self, domid: u32, vcpu: u32) -> Result<bool, XenError> {
        let mut info = XcVcpuInfo::default();
        // SAFETY: `info` is a valid xc_vcpuinfo_t out-pointer (layout checked).
        let rc = unsafe { (self.api().xc_vcpu_getinfo)(self.xch(), domid, vcpu, &mut info) };
        Self::check(rc, "xc_vcpu_getinfo")?;
        Ok(info.online != 0)
    }

    /// A domctl of this release's interface version.
    fn new_domctl(&self, cmd: u32, domid: u32) -> XenDomctl {
        XenDomctl::new(cmd, domid, self.abi().domctl_interface)
    }

    fn domctl(&self, d: &mut XenDomctl, call: &'static str) -> Result<(), XenError> {
        // SAFETY: `d` is a complete xen_domctl (layout checked); any guest handle in it points
        // into a live HypercallPages buffer of the caller.
        let rc = unsafe { (self.api().xc_domctl)(self.xch(), d) };
        Self::check(rc, call).map(drop)
    }

    /// The guest's address width in bits (64, or 32 for a compat PV guest).
    pub fn address_size(&self, domid: u32) -> Result<u32, XenError> {
        let mut d = self.new_domctl(XEN_DOMCTL_GET_ADDRESS_SIZE, domid);
        self.domctl(&mut d, "xc_domctl(get_address_size)")?;
        Ok(u_u32(&d, 0))
    }

    /// The extended context of a PV vCPU (`XEN_DOMCTL_get_ext_vcpucontext`): the first `size`
    /// bytes of `xen_domctl_ext_vcpucontext`, as libxc's X86_PV_VCPU_EXTENDED record holds
    /// them; empty when Xen reports none.
    pub fn vcpu_extended(&self, domid: u32, vcpu: u32) -> Result<Vec<u8>, XenError> {
        let mut d = self.new_domctl(XEN_DOMCTL_GET_EXT_VCPUCONTEXT, domid);
        set_u32(&mut d, 0, vcpu);
        self.domctl(&mut d, "xc_domctl(get_ext_vcpucontext)")?;
        let size = (u_u32(&d, 4) as usize).min(EXT_VCPUCONTEXT_SIZE);
        Ok(d.u_bytes()[..size].to_vec())
    }

    /// The xsave state of a vCPU (`XEN_DOMCTL_getvcpuextstate`): the X86_PV_VCPU_XSAVE blob
    /// (xfeature mask, size, then the xsave area, as Xen writes it), or empty without xsave.
    pub fn vcpu_xsave(&self, domid: u32, vcpu: u32) -> Result<Vec<u8>, XenError> {
        let call = "xc_domctl(getvcpuextstate)";
        let mut d = self.new_domctl(XEN_DOMCTL_GETVCPUEXTSTATE, domid);
        set_u32(&mut d, 0, vcpu);
        self.domctl(&mut d, call)?;
        if u_u64(&d, VCPUEXTSTATE_XFEATURE_MASK) == 0 {
            return Ok(Vec::new());
        }
        let size = u_u64(&d, VCPUEXTSTATE_SIZE) as usize;
        let mut mem = HypercallPages::alloc(self.clone(), size.div_ceil(crate::PAGE_SIZE) as u64)?;
        mem.zero();
        d.u[VCPUEXTSTATE_BUFFER / 8] = mem.ptr() as u64;
        self.domctl(&mut d, call)?;
        let got = (u_u64(&d, VCPUEXTSTATE_SIZE) as usize).min(mem.len());
        Ok(mem.bytes(got).to_vec())
    }

    /// The MSRs of a vCPU (`XEN_DOMCTL_get_vcpu_msrs`): `xen_domctl_vcpu_msr_t` entries as
    /// the X86_PV_VCPU_MSRS blob holds them, or empty.
    pub fn vcpu_msrs(&self, domid: u32, vcpu: u32) -> Result<Vec<u8>, XenError> {
        let call = "xc_domctl(get_vcpu_msrs)";
        let mut d = self.new_domctl(XEN_DOMCTL_GET_VCPU_MSRS, domid);
        set_u32(&mut d, 0, vcpu);
        self.domctl(&mut d, call)?;
        let count = u_u32(&d, VCPU_MSRS_COUNT) as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = count * VCPU_MSR_SIZE;
        let mut mem = HypercallPages::alloc(self.clone(), bytes.div_ceil(crate::PAGE_SIZE) as u64)?;
        mem.zero();
        d.u[VCPU_MSRS_MSRS / 8] = mem.ptr() as u64;
        self.domctl(&mut d, call)?;
        let got = (u_u32(&d, VCPU_MSRS_COUNT) as usize * VCPU_MSR_SIZE).min(bytes);
        Ok(mem.bytes(got).to_vec())
    }
}

/// A libxenguest policy object, destroyed on drop.
struct Policy {
    api: &'static XenApi,
    p: *mut crate::abi::XcCpuPolicy,
}

impl Drop for Policy {
    fn drop(&mut self) {
        // SAFETY: `p` came from xc_cpu_policy_init (destroy accepts NULL too) and is freed once.
        unsafe { (self.api.xc_cpu_policy_destroy)(self.p) };
    }
}

/// Serialise CPUID leaves as the X86_CPUID_POLICY record body (array of xen_cpuid_leaf_t, LE).
pub fn cpuid_record(leaves: &[XenCpuidLeaf]) -> Vec<u8> {
    let mut v = Vec::with_capacity(leaves.len() * 24);
    for l in leaves {
        for w in [l.leaf, l.subleaf, l.a, l.b, l.c, l.d] {
            v.extend_from_slice(&w.to_le_bytes());
        }
    }
    v
}

/// Serialise MSR entries as the X86_MSR_POLICY record body (array of xen_msr_entry_t, LE).
pub fn msr_record(msrs: &[XenMsrEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msrs.len() * 16);
    for m in msrs {
        v.extend_from_slice(&m.idx.to_le_bytes());
        v.extend_from_slice(&m.flags.to_le_bytes());
        v.extend_from_slice(&m.val.to_le_bytes());
    }
    v
}
