//! C structures and constants of the Xen tools ABI (x86_64), mirrored field for field; the
//! same in Xen 4.17 to 4.22 except `XEN_DOMCTL_INTERFACE_VERSION` (in [`crate::version`]).
//!
//! Every struct here is checked against the real headers by `tests/layout.rs`, which compiles a
//! small C program against libxen-dev (bookworm's 4.17 and trixie's 4.20) and compares
//! `sizeof` / `offsetof` with Rust's.

use std::ffi::{c_int, c_void};

/// `xen_pfn_t` on x86: `unsigned long`.
pub type XenPfn = libc::c_ulong;

/// Opaque `xc_interface`.
#[repr(C)]
pub struct XcInterface {
    _private: [u8; 0],
}

/// Opaque `xenforeignmemory_handle`.
#[repr(C)]
pub struct XenForeignMemoryHandle {
    _private: [u8; 0],
}

/// Opaque `xc_cpu_policy_t` (libxenguest).
#[repr(C)]
pub struct XcCpuPolicy {
    _private: [u8; 0],
}

/// Opaque `xentoollog_logger`.
#[repr(C)]
pub struct XenToolLogger {
    _private: [u8; 0],
}

/// `struct xen_arch_domainconfig` (x86).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenArchDomainConfig {
    /// `XEN_X86_EMU_*` flags.
    pub emulation_flags: u32,
    /// `XEN_X86_MSR_RELAXED` etc.
    pub misc_flags: u32,
}

/// `xc_domaininfo_t`, i.e. `struct xen_domctl_getdomaininfo` (domctl interface 0x15).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XcDomainInfo {
    /// Domain id.
    pub domain: u16,
    /// Padding.
    pub pad1: u16,
    /// `XEN_DOMINF_*` flags; shutdown code in bits 16..24.
    pub flags: u32,
    /// Pages currently allocated to the domain.
    pub tot_pages: u64,
    /// Maximum pages.
    pub max_pages: u64,
    /// Outstanding (claimed) pages.
    pub outstanding_pages: u64,
    /// Shared pages.
    pub shr_pages: u64,
    /// Paged-out pages.
    pub paged_pages: u64,
    /// GMFN of the shared_info page.
    pub shared_info_frame: u64,
    /// CPU time used, ns.
    pub cpu_time: u64,
    /// Online vCPUs.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id in use.
    pub max_vcpu_id: u32,
    /// XSM security reference.
    pub ssidref: u32,
    /// The domain handle: its uuid.
    pub handle: [u8; 16],
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address width.
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// Arch configuration.
    pub arch_config: XenArchDomainConfig,
}

/// Domain is dying.
pub const XEN_DOMINF_DYING: u32 = 1 << 0;
/// Domain is an HVM container (HVM or PVH).
pub const XEN_DOMINF_HVM_GUEST: u32 = 1 << 1;
/// Guest has shut down.
pub const XEN_DOMINF_SHUTDOWN: u32 = 1 << 2;
/// Paused by control software.
pub const XEN_DOMINF_PAUSED: u32 = 1 << 3;
/// Shutdown code of a domain that suspended itself (`SHUTDOWN_suspend`).
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// Blocked pending an event.
pub const XEN_DOMINF_BLOCKED: u32 = 1 << 4;
/// Running.
pub const XEN_DOMINF_RUNNING: u32 = 1 << 5;
/// Being debugged.
pub const XEN_DOMINF_DEBUGGED: u32 = 1 << 6;
/// A xenstore domain.
pub const XEN_DOMINF_XS_DOMAIN: u32 = 1 << 7;
/// Uses hardware assisted paging.
pub const XEN_DOMINF_HAP: u32 = 1 << 8;
/// Shift of the shutdown code within `flags`.
pub const XEN_DOMINF_SHUTDOWNSHIFT: u32 = 16;
/// Mask of the shutdown code after shifting.
pub const XEN_DOMINF_SHUTDOWNMASK: u32 = 255;

/// `xc_shadow_op_stats_t` (`struct xen_domctl_shadow_op_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowOpStats {
    /// Log-dirty faults since the last CLEAN.
    pub fault_count: u32,
    /// Pages dirtied since the last CLEAN.
    pub dirty_count: u32,
}

/// Turn shadow / log-dirty mode off.
pub const XEN_DOMCTL_SHADOW_OP_OFF: u32 = 0;
/// Legacy enable of log-dirty mode.
pub const XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY: u32 = 2;
/// Return the bitmap and clear it.
pub const XEN_DOMCTL_SHADOW_OP_CLEAN: u32 = 11;
/// Return the bitmap without clearing it.
pub const XEN_DOMCTL_SHADOW_OP_PEEK: u32 = 12;
/// CLEAN/PEEK mode flag: include pages mapped writably by Xen (final round).
pub const XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL: u32 = 1 << 0;

/// `xc_hypercall_buffer_t`.
#[repr(C)]
#[derive(Debug)]
pub struct XcHypercallBuffer {
    /// Hypercall-safe memory.
    pub hbuf: *mut c_void,
    /// Shadow reference used by libxc's macros; NULL for a buffer we own.
    pub param_shadow: *mut XcHypercallBuffer,
    /// Bounce direction; 0 for no bouncing.
    pub dir: c_int,
    /// User buffer when bouncing; `(void *)-1` when not.
    pub ubuf: *mut c_void,
    /// Size when bouncing; 0 when not.
    pub sz: usize,
}

impl XcHypercallBuffer {
    /// A buffer descriptor as `DECLARE_HYPERCALL_BUFFER` builds it (no bouncing).
    pub fn new_no_bounce() -> Self {
        XcHypercallBuffer {
            hbuf: std::ptr::null_mut(),
            param_shadow: std::ptr::null_mut(),
            dir: 0,
            ubuf: usize::MAX as *mut c_void,
            sz: 0,
        }
    }
}

/// `xen_cpuid_leaf_t`: one serialised CPUID leaf.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenCpuidLeaf {
    /// Leaf.
    pub leaf: u32,
    /// Subleaf, or `XEN_CPUID_NO_SUBLEAF`.
    pub subleaf: u32,
    /// EAX.
    pub a: u32,
    /// EBX.
    pub b: u32,
    /// ECX.
    pub c: u32,
    /// EDX.
    pub d: u32,
}

/// `xen_msr_entry_t`: one serialised MSR.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenMsrEntry {
    /// MSR index.
    pub idx: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Value.
    pub val: u64,
}

/// Size of `vcpu_guest_context_any_t` on x86_64 (the x86_64 member is the larger).
pub const VCPU_GUEST_CONTEXT_ANY_SIZE: usize = 5168;

/// `vcpu_guest_context_any_t`, kept opaque: the bytes of the union, correctly sized and aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct VcpuGuestContextAny {
    /// Raw bytes of the union.
    pub bytes: [u8; VCPU_GUEST_CONTEXT_ANY_SIZE],
}

impl Default for VcpuGuestContextAny {
    fn default() -> Self {
        VcpuGuestContextAny {
            bytes: [0; VCPU_GUEST_CONTEXT_ANY_SIZE],
        }
    }
}

impl std::fmt::Debug for VcpuGuestContextAny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VcpuGuestContextAny { .. }")
    }
}

/// Page-type field of `xc_get_pfn_type_batch` results (top nibble of the low 32 bits).
pub const XEN_DOMCTL_PFINFO_LTAB_MASK: u32 = 0xf << 28;
/// Ordinary page.
pub const XEN_DOMCTL_PFINFO_NOTAB: u32 = 0;
/// Invalid (unpopulated) pfn.
pub const XEN_DOMCTL_PFINFO_XTAB: u32 = 0xf << 28;
/// Allocate-only page.
pub const XEN_DOMCTL_PFINFO_XALLOC: u32 = 0xe << 28;
/// Broken page.
pub const XEN_DOMCTL_PFINFO_BROKEN: u32 = 0xd << 28;

/// HVM params libxc's save writes into HVM_PARAMS (xg_sr_save_x86_hvm.c), in its order.
pub const HVM_PARAMS_SAVED: [u32; 16] = [
    HVM_PARAM_STORE_PFN,
    HVM_PARAM_IOREQ_PFN,
    HVM_PARAM_BUFIOREQ_PFN,
    HVM_PARAM_PAGING_RING_PFN,
    HVM_PARAM_MONITOR_RING_PFN,
    HVM_PARAM_SHARING_RING_PFN,
    HVM_PARAM_VM86_TSS_SIZED,
    HVM_PARAM_CONSOLE_PFN,
    HVM_PARAM_ACPI_IOPORTS_LOCATION,
    HVM_PARAM_VIRIDIAN,
    HVM_PARAM_IDENT_PT,
    HVM_PARAM_VM_GENERATION_ID_ADDR,
    HVM_PARAM_IOREQ_SERVER_PFN,
    HVM_PARAM_NR_IOREQ_SERVER_PAGES,
    HVM_PARAM_X87_FIP_WIDTH,
    HVM_PARAM_MCA_CAP,
];

/// xenstore ring pfn.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// ioreq page pfn.
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
/// Buffered ioreq page pfn.
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
/// Viridian enlightenments.
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// Identity page table (EPT without unrestricted guest).
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// ACPI I/O ports location.
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
/// Memory paging ring pfn.
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
/// Monitor ring pfn.
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
/// Sharing ring pfn.
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
/// Console ring pfn.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// VM generation id address.
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
/// First ioreq server pfn.
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
/// Number of ioreq server pages.
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
/// VM86 TSS location and size.
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
/// x87 FIP width.
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
/// MCA capabilities.
pub const HVM_PARAM_MCA_CAP: u32 = 38;

/// `XEN_DOMCTL_get_address_size`: `u.address_size.size` (u32) is the guest's width in bits.
pub const XEN_DOMCTL_GET_ADDRESS_SIZE: u32 = 36;
/// `XEN_DOMCTL_get_ext_vcpucontext`.
pub const XEN_DOMCTL_GET_EXT_VCPUCONTEXT: u32 = 43;
/// `XEN_DOMCTL_getvcpuextstate`.
pub const XEN_DOMCTL_GETVCPUEXTSTATE: u32 = 63;
/// `XEN_DOMCTL_get_vcpu_msrs`.
pub const XEN_DOMCTL_GET_VCPU_MSRS: u32 = 72;

/// `struct xen_domctl`: the command header and a 128-byte union, kept as words (the PV save
/// only uses the small `ext_vcpucontext`, `vcpuextstate` and `vcpu_msrs` members; their
/// offsets are the `DOMCTL_*` constants below, checked by `tests/layout.rs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenDomctl {
    /// `XEN_DOMCTL_*` command.
    pub cmd: u32,
    /// Interface version (set by `xc_domctl`).
    pub interface_version: u32,
    /// Target domain.
    pub domain: u16,
    /// Padding.
    pub pad: [u16; 3],
    /// The command's union member.
    pub u: [u64; 16],
}

impl XenDomctl {
    /// A domctl `cmd` for `domid`, of interface version `interface` (the release's
    /// `XEN_DOMCTL_INTERFACE_VERSION`; libxc's `xc_domctl` sets it again itself).
    pub fn new(cmd: u32, domid: u32, interface: u32) -> Self {
        XenDomctl {
            cmd,
            interface_version: interface,
            domain: domid as u16,
            ..Default::default()
        }
    }

    /// The union as bytes.
    pub fn u_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        for (d, w) in b.chunks_exact_mut(8).zip(self.u) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// Size of `struct xen_domctl_ext_vcpucontext`.
pub const EXT_VCPUCONTEXT_SIZE: usize = 64;
/// Offset of `xen_domctl_vcpuextstate.xfeature_mask` (u64 word 1 of the union).
pub const VCPUEXTSTATE_XFEATURE_MASK: usize = 8;
/// Offset of `xen_domctl_vcpuextstate.size`.
pub const VCPUEXTSTATE_SIZE: usize = 16;
/// Offset of `xen_domctl_vcpuextstate.buffer` (a 64-bit guest handle).
pub const VCPUEXTSTATE_BUFFER: usize = 24;
/// Offset of `xen_domctl_vcpu_msrs.msr_count` (u32).
pub const VCPU_MSRS_COUNT: usize = 4;
/// Offset of `xen_domctl_vcpu_msrs.msrs` (a 64-bit guest handle).
pub const VCPU_MSRS_MSRS: usize = 8;
/// Size of `xen_domctl_vcpu_msr_t`.
pub const VCPU_MSR_SIZE: usize = 16;

/// `xc_vcpuinfo_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XcVcpuInfo {
    /// vCPU id.
    pub vcpu: u32,
    /// Online (not down).
    pub online: u8,
    /// Blocked waiting for an event.
    pub blocked: u8,
    /// Currently scheduled.
    pub running: u8,
    /// CPU time used, ns.
    pub cpu_time: u64,
    /// Physical CPU it runs on.
    pub cpu: u32,
}

/// `sizeof(vcpu_guest_context_x86_64_t)`: the body of an X86_PV_VCPU_BASIC record of a
/// 64-bit guest after its 8-byte header.
pub const VCPU_CTX_X64_SIZE: usize = 5168;
/// Offset of `user_regs.rdx` in `vcpu_guest_context_x86_64_t`.
pub const VCPU_CTX_X64_RDX: usize = 616;
/// Offset of `gdt_frames[16]`.
pub const VCPU_CTX_X64_GDT_FRAMES: usize = 4832;
/// Offset of `gdt_ents`.
pub const VCPU_CTX_X64_GDT_ENTS: usize = 4960;
/// Offset of `ctrlreg[8]`.
pub const VCPU_CTX_X64_CTRLREG: usize = 4984;
/// `FIRST_RESERVED_GDT_ENTRY`: the most GDT entries a PV guest may own.
pub const FIRST_RESERVED_GDT_ENTRY: u32 = 7168;

/// Offset of `arch.max_pfn` in a 64-bit guest's `shared_info`.
pub const SHINFO_X64_MAX_PFN: usize = 3088;
/// Offset of `arch.pfn_to_mfn_frame_list_list`.
pub const SHINFO_X64_FLL: usize = 3096;
/// `HYPERVISOR_VIRT_START` of x86_64 PV guests.
pub const HYPERVISOR_VIRT_START_X86_64: u64 = 0xffff_8000_0000_0000;
/// `HYPERVISOR_VIRT_END` of x86_64 PV guests.
pub const HYPERVISOR_VIRT_END_X86_64: u64 = 0xffff_8800_0000_0000;

/// PV page-table types of `xc_get_pfn_type_batch` (bits 28..30), and the pinned flag (bit 31).
pub const XEN_DOMCTL_PFINFO_L1TAB: u32 = 0x1 << 28;
/// L2 page table.
pub const XEN_DOMCTL_PFINFO_L2TAB: u32 = 0x2 << 28;
/// L3 page table.
pub const XEN_DOMCTL_PFINFO_L3TAB: u32 = 0x3 << 28;
/// L4 page table.
pub const XEN_DOMCTL_PFINFO_L4TAB: u32 = 0x4 << 28;
/// Mask of the table level.
pub const XEN_DOMCTL_PFINFO_LTABTYPE_MASK: u32 = 0x7 << 28;
/// The table is pinned.
pub const XEN_DOMCTL_PFINFO_LPINTAB: u32 = 0x1 << 31;
