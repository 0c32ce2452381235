//! Compare the Rust mirrors of Xen's structs and constants with the real headers of every
//! release this machine can get: Debian bookworm's libxen-dev (Xen 4.17) and trixie's (4.20),
//! downloaded with `tools/suite-apt` (a private apt configuration; nothing installed) and
//! unpacked with `dpkg -x` under the target directory. A C program compiled against each prints
//! sizeof / offsetof / values, and every line must equal Rust's for that release's ABI
//! (`xen_sys::version::SUPPORTED`). A release is skipped, with the reason printed, only when
//! the Debian archive cannot be reached (or there is no apt-get / C compiler).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use xen_sys::abi::*;
use xen_sys::version::{abi_of, Abi, XenVersion};

const C_PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenforeignmemory.h>
#include <xen/hvm/params.h>
#include <libxl.h>
#define S(n, t) printf("size %s %zu\n", n, sizeof(t))
#define O(n, t, f) printf("off %s.%s %zu\n", n, #f, offsetof(t, f))
#define V(n) printf("val %s %llu\n", #n, (unsigned long long)(n))

/* The C signatures the Rust function table (src/api.rs) transcribes; a mismatch with the
 * headers fails compilation. xc_get_pfn_type_batch is declared in libxc's private header. */
#define SIG(f, T) _Static_assert(__builtin_types_compatible_p(__typeof__(&f), T), #f)
SIG(xc_interface_open, xc_interface *(*)(xentoollog_logger *, xentoollog_logger *, unsigned));
SIG(xc_interface_close, int (*)(xc_interface *));
SIG(xc_domain_getinfolist, int (*)(xc_interface *, uint32_t, unsigned int, xc_domaininfo_t *));
SIG(xc_domain_maximum_gpfn, int (*)(xc_interface *, uint32_t, xen_pfn_t *));
SIG(xc_domain_pause, int (*)(xc_interface *, uint32_t));
SIG(xc_domain_unpause, int (*)(xc_interface *, uint32_t));
SIG(xc_domain_resume, int (*)(xc_interface *, uint32_t, int));
SIG(xc_shadow_control, int (*)(xc_interface *, uint32_t, unsigned int, unsigned int *, unsigned int));
SIG(xc_logdirty_control, long long (*)(xc_interface *, uint32_t, unsigned int, xc_hypercall_buffer_t *,
                                       unsigned long, unsigned int, xc_shadow_op_stats_t *));
SIG(xc__hypercall_buffer_alloc_pages, void *(*)(xc_interface *, xc_hypercall_buffer_t *, int));
SIG(xc__hypercall_buffer_free_pages, void (*)(xc_interface *, xc_hypercall_buffer_t *, int));
SIG(xc_domain_hvm_getcontext, int (*)(xc_interface *, uint32_t, uint8_t *, uint32_t));
SIG(xc_domain_populate_physmap_exact, int (*)(xc_interface *, uint32_t, unsigned long, unsigned int,
                                              unsigned int, xen_pfn_t *));
SIG(xc_hvm_param_get, int (*)(xc_interface *, uint32_t, uint32_t, uint64_t *));
SIG(xc_domain_get_tsc_info, int (*)(xc_interface *, uint32_t, uint32_t *, uint64_t *, uint32_t *, uint32_t *));
SIG(xc_vcpu_getcontext, int (*)(xc_interface *, uint32_t, uint32_t, vcpu_guest_context_any_t *));
SIG(xc_vcpu_getinfo, int (*)(xc_interface *, uint32_t, uint32_t, xc_vcpuinfo_t *));
SIG(xc_domctl, int (*)(xc_interface *, struct xen_domctl *));
SIG(xc_cpu_policy_init, xc_cpu_policy_t *(*)(void));
SIG(xc_cpu_policy_destroy, void (*)(xc_cpu_policy_t *));
SIG(xc_cpu_policy_get_domain, int (*)(xc_interface *, uint32_t, xc_cpu_policy_t *));
SIG(xc_cpu_policy_serialise, int (*)(xc_interface *, const xc_cpu_policy_t *, xen_cpuid_leaf_t *,
                                     uint32_t *, xen_msr_entry_t *, uint32_t *));
SIG(xc_cpu_policy_get_size, int (*)(xc_interface *, uint32_t *, uint32_t *));
SIG(xenforeignmemory_open, xenforeignmemory_handle *(*)(xentoollog_logger *, unsigned));
SIG(xenforeignmemory_close, int (*)(xenforeignmemory_handle *));
SIG(xenforeignmemory_map, void *(*)(xenforeignmemory_handle *, uint32_t, int, size_t,
                                    const xen_pfn_t *, int *));
SIG(xenforeignmemory_unmap, int (*)(xenforeignmemory_handle *, void *, size_t));
/* src/libxl.rs: a domain's configuration through libxenlight. */
SIG(libxl_ctx_alloc, int (*)(libxl_ctx **, int, unsigned, xentoollog_logger *));
SIG(libxl_ctx_free, int (*)(libxl_ctx *));
SIG(libxl_domain_config_init, void (*)(libxl_domain_config *));
SIG(libxl_domain_config_dispose, void (*)(libxl_domain_config *));
SIG(libxl_retrieve_domain_configuration,
    int (*)(libxl_ctx *, uint32_t, libxl_domain_config *, const libxl_asyncop_how *));
SIG(libxl_domain_config_to_json, char *(*)(libxl_ctx *, libxl_domain_config *));
SIG(xtl_createlogger_stdiostream,
    xentoollog_logger_stdiostream *(*)(FILE *, xentoollog_level, unsigned));
SIG(xtl_logger_destroy, void (*)(struct xentoollog_logger *));
int main(void)
{
    /* The room src/libxl.rs gives a libxl_domain_config (-DXCKPT_ROOM) holds it. */
    printf("fits libxl_domain_config %d\n",
           sizeof(libxl_domain_config) <= XCKPT_ROOM && _Alignof(libxl_domain_config) <= 16);
    V(LIBXL_VERSION); V(XTL_ERROR);
    S("domaininfo", xc_domaininfo_t);
    O("domaininfo", xc_domaininfo_t, domain);
    O("domaininfo", xc_domaininfo_t, flags);
    O("domaininfo", xc_domaininfo_t, tot_pages);
    O("domaininfo", xc_domaininfo_t, max_pages);
    O("domaininfo", xc_domaininfo_t, outstanding_pages);
    O("domaininfo", xc_domaininfo_t, shr_pages);
    O("domaininfo", xc_domaininfo_t, paged_pages);
    O("domaininfo", xc_domaininfo_t, shared_info_frame);
    O("domaininfo", xc_domaininfo_t, cpu_time);
    O("domaininfo", xc_domaininfo_t, nr_online_vcpus);
    O("domaininfo", xc_domaininfo_t, max_vcpu_id);
    O("domaininfo", xc_domaininfo_t, ssidref);
    O("domaininfo", xc_domaininfo_t, handle);
    O("domaininfo", xc_domaininfo_t, cpupool);
    O("domaininfo", xc_domaininfo_t, gpaddr_bits);
    O("domaininfo", xc_domaininfo_t, arch_config);
    S("archconfig", struct xen_arch_domainconfig);
    O("archconfig", struct xen_arch_domainconfig, misc_flags);
    S("vcpuctx", vcpu_guest_context_any_t);
    printf("align vcpuctx %zu\n", _Alignof(vcpu_guest_context_any_t));
    S("stats", xc_shadow_op_stats_t);
    O("stats", xc_shadow_op_stats_t, dirty_count);
    S("hbuf", xc_hypercall_buffer_t);
    O("hbuf", xc_hypercall_buffer_t, hbuf);
    O("hbuf", xc_hypercall_buffer_t, param_shadow);
    O("hbuf", xc_hypercall_buffer_t, dir);
    O("hbuf", xc_hypercall_buffer_t, ubuf);
    O("hbuf", xc_hypercall_buffer_t, sz);
    S("cpuid", xen_cpuid_leaf_t);
    O("cpuid", xen_cpuid_leaf_t, subleaf);
    O("cpuid", xen_cpuid_leaf_t, a);
    O("cpuid", xen_cpuid_leaf_t, d);
    S("msr", xen_msr_entry_t);
    O("msr", xen_msr_entry_t, flags);
    O("msr", xen_msr_entry_t, val);
    S("pfn", xen_pfn_t);
    V(XEN_DOMINF_dying); V(XEN_DOMINF_hvm_guest); V(XEN_DOMINF_shutdown);
    V(XEN_DOMINF_paused); V(XEN_DOMINF_blocked); V(XEN_DOMINF_running);
    V(XEN_DOMINF_debugged); V(XEN_DOMINF_xs_domain); V(XEN_DOMINF_hap);
    V(XEN_DOMINF_shutdownshift); V(XEN_DOMINF_shutdownmask);
    V(XEN_DOMCTL_SHADOW_OP_OFF); V(XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY);
    V(XEN_DOMCTL_SHADOW_OP_CLEAN); V(XEN_DOMCTL_SHADOW_OP_PEEK);
    V(XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL);
    V(XEN_DOMCTL_PFINFO_LTAB_MASK); V(XEN_DOMCTL_PFINFO_NOTAB); V(XEN_DOMCTL_PFINFO_XTAB);
    V(XEN_DOMCTL_PFINFO_XALLOC); V(XEN_DOMCTL_PFINFO_BROKEN);
    V(HVM_PARAM_STORE_PFN); V(HVM_PARAM_IOREQ_PFN); V(HVM_PARAM_BUFIOREQ_PFN);
    V(HVM_PARAM_PAGING_RING_PFN); V(HVM_PARAM_MONITOR_RING_PFN); V(HVM_PARAM_SHARING_RING_PFN);
    V(HVM_PARAM_VM86_TSS_SIZED); V(HVM_PARAM_CONSOLE_PFN); V(HVM_PARAM_ACPI_IOPORTS_LOCATION);
    V(HVM_PARAM_VIRIDIAN); V(HVM_PARAM_IDENT_PT); V(HVM_PARAM_VM_GENERATION_ID_ADDR);
    V(HVM_PARAM_IOREQ_SERVER_PFN); V(HVM_PARAM_NR_IOREQ_SERVER_PAGES);
    V(HVM_PARAM_X87_FIP_WIDTH); V(HVM_PARAM_MCA_CAP);
    S("domctl", struct xen_domctl);
    O("domctl", struct xen_domctl, interface_version);
    O("domctl", struct xen_domctl, domain);
    O("domctl", struct xen_domctl, u);
    printf("align domctl %zu\n", _Alignof(struct xen_domctl));
    S("extvcpu", struct xen_domctl_ext_vcpucontext);
    O("extstate", struct xen_domctl_vcpuextstate, xfeature_mask);
    O("extstate", struct xen_domctl_vcpuextstate, size);
    O("extstate", struct xen_domctl_vcpuextstate, buffer);
    O("msrs", struct xen_domctl_vcpu_msrs, msr_count);
    O("msrs", struct xen_domctl_vcpu_msrs, msrs);
    S("vcpumsr", xen_domctl_vcpu_msr_t);
    S("vcpuinfo", xc_vcpuinfo_t);
    O("vcpuinfo", xc_vcpuinfo_t, online);
    O("vcpuinfo", xc_vcpuinfo_t, blocked);
    O("vcpuinfo", xc_vcpuinfo_t, running);
    O("vcpuinfo", xc_vcpuinfo_t, cpu_time);
    O("vcpuinfo", xc_vcpuinfo_t, cpu);
    S("ctx64", vcpu_guest_context_x86_64_t);
    O("ctx64", vcpu_guest_context_x86_64_t, user_regs.rdx);
    O("ctx64", vcpu_guest_context_x86_64_t, gdt_frames);
    O("ctx64", vcpu_guest_context_x86_64_t, gdt_ents);
    O("ctx64", vcpu_guest_context_x86_64_t, ctrlreg);
    O("shinfo64", shared_info_x86_64_t, arch.max_pfn);
    O("shinfo64", shared_info_x86_64_t, arch.pfn_to_mfn_frame_list_list);
    V(HYPERVISOR_VIRT_START); V(HYPERVISOR_VIRT_END); V(FIRST_RESERVED_GDT_ENTRY);
    V(XEN_DOMCTL_INTERFACE_VERSION); V(XEN_DOMCTL_get_ext_vcpucontext); V(XEN_DOMCTL_get_address_size);
    V(XEN_DOMCTL_getvcpuextstate); V(XEN_DOMCTL_get_vcpu_msrs);
    V(XEN_DOMCTL_PFINFO_L1TAB); V(XEN_DOMCTL_PFINFO_L2TAB); V(XEN_DOMCTL_PFINFO_L3TAB);
    V(XEN_DOMCTL_PFINFO_L4TAB); V(XEN_DOMCTL_PFINFO_LTABTYPE_MASK); V(XEN_DOMCTL_PFINFO_LPINTAB);
    return 0;
}
"#;

fn rust_values(abi: &Abi) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let mut s = |k: &str, v: usize| m.insert(k.to_string(), v as u64);
    s("fits libxl_domain_config", 1);
    s("val LIBXL_VERSION", xen_sys::libxl::LIBXL_VERSION as usize);
    s("val XTL_ERROR", xen_sys::libxl::XTL_ERROR as usize);
    s("size domaininfo", size_of::<XcDomainInfo>());
    s("off domaininfo.domain", offset_of!(XcDomainInfo, domain));
    s("off domaininfo.flags", offset_of!(XcDomainInfo, flags));
    s(
        "off domaininfo.tot_pages",
        offset_of!(XcDomainInfo, tot_pages),
    );
    s(
        "off domaininfo.max_pages",
        offset_of!(XcDomainInfo, max_pages),
    );
    s(
        "off domaininfo.outstanding_pages",
        offset_of!(XcDomainInfo, outstanding_pages),
    );
    s(
        "off domaininfo.shr_pages",
        offset_of!(XcDomainInfo, shr_pages),
    );
    s(
        "off domaininfo.paged_pages",
        offset_of!(XcDomainInfo, paged_pages),
    );
    s(
        "off domaininfo.shared_info_frame",
        offset_of!(XcDomainInfo, shared_info_frame),
    );
    s(
        "off domaininfo.cpu_time",
        offset_of!(XcDomainInfo, cpu_time),
    );
    s(
        "off domaininfo.nr_online_vcpus",
        offset_of!(XcDomainInfo, nr_online_vcpus),
    );
    s(
        "off domaininfo.max_vcpu_id",
        offset_of!(XcDomainInfo, max_vcpu_id),
    );
    s("off domaininfo.ssidref", offset_of!(XcDomainInfo, ssidref));
    s("off domaininfo.handle", offset_of!(XcDomainInfo, handle));
    s("off domaininfo.cpupool", offset_of!(XcDomainInfo, cpupool));
    s(
        "off domaininfo.gpaddr_bits",
        offset_of!(XcDomainInfo, gpaddr_bits),
    );
    s(
        "off domaininfo.arch_config",
        offset_of!(XcDomainInfo, arch_config),
    );
    s("size archconfig", size_of::<XenArchDomainConfig>());
    s(
        "off archconfig.misc_flags",
        offset_of!(XenArchDomainConfig, misc_flags),
    );
    s("size vcpuctx", size_of::<VcpuGuestContextAny>());
    s("align vcpuctx", std::mem::align_of::<VcpuGuestContextAny>());
    s("size stats", size_of::<ShadowOpStats>());
    s(
        "off stats.dirty_count",
        offset_of!(ShadowOpStats, dirty_count),
    );
    s("size hbuf", size_of::<XcHypercallBuffer>());
    s("off hbuf.hbuf", offset_of!(XcHypercallBuffer, hbuf));
    s(
        "off hbuf.param_shadow",
        offset_of!(XcHypercallBuffer, param_shadow),
    );
    s("off hbuf.dir", offset_of!(XcHypercallBuffer, dir));
    s("off hbuf.ubuf", offset_of!(XcHypercallBuffer, ubuf));
    s("off hbuf.sz", offset_of!(XcHypercallBuffer, sz));
    s("size cpuid", size_of::<XenCpuidLeaf>());
    s("off cpuid.subleaf", offset_of!(XenCpuidLeaf, subleaf));
    s("off cpuid.a", offset_of!(XenCpuidLeaf, a));
    s("off cpuid.d", offset_of!(XenCpuidLeaf, d));
    s("size msr", size_of::<XenMsrEntry>());
    s("off msr.flags", offset_of!(XenMsrEntry, flags));
    s("off msr.val", offset_of!(XenMsrEntry, val));
    s("size pfn", size_of::<XenPfn>());
    s("size domctl", size_of::<XenDomctl>());
    s(
        "off domctl.interface_version",
        offset_of!(XenDomctl, interface_version),
    );
    s("off domctl.domain", offset_of!(XenDomctl, domain));
    s("off domctl.u", offset_of!(XenDomctl, u));
    s("align domctl", std::mem::align_of::<XenDomctl>());
    s("size extvcpu", EXT_VCPUCONTEXT_SIZE);
    s("off extstate.xfeature_mask", VCPUEXTSTATE_XFEATURE_MASK);
    s("off extstate.size", VCPUEXTSTATE_SIZE);
    s("off extstate.buffer", VCPUEXTSTATE_BUFFER);
    s("off msrs.msr_count", VCPU_MSRS_COUNT);
    s("off msrs.msrs", VCPU_MSRS_MSRS);
    s("size vcpumsr", VCPU_MSR_SIZE);
    s("size vcpuinfo", size_of::<XcVcpuInfo>());
    s("off vcpuinfo.online", offset_of!(XcVcpuInfo, online));
    s("off vcpuinfo.blocked", offset_of!(XcVcpuInfo, blocked));
    s("off vcpuinfo.running", offset_of!(XcVcpuInfo, running));
    s("off vcpuinfo.cpu_time", offset_of!(XcVcpuInfo, cpu_time));
    s("off vcpuinfo.cpu", offset_of!(XcVcpuInfo, cpu));
    s("size ctx64", VCPU_CTX_X64_SIZE);
    s("off ctx64.user_regs.rdx", VCPU_CTX_X64_RDX);
    s("off ctx64.gdt_frames", VCPU_CTX_X64_GDT_FRAMES);
    s("off ctx64.gdt_ents", VCPU_CTX_X64_GDT_ENTS);
    s("off ctx64.ctrlreg", VCPU_CTX_X64_CTRLREG);
    s("off shinfo64.arch.max_pfn", SHINFO_X64_MAX_PFN);
    s(
        "off shinfo64.arch.pfn_to_mfn_frame_list_list",
        SHINFO_X64_FLL,
    );
    m.insert(
        "val HYPERVISOR_VIRT_START".into(),
        HYPERVISOR_VIRT_START_X86_64,
    );
    m.insert("val HYPERVISOR_VIRT_END".into(), HYPERVISOR_VIRT_END_X86_64);
    let mut v = |k: &str, x: u32| m.insert(format!("val {k}"), u64::from(x));
    v("FIRST_RESERVED_GDT_ENTRY", FIRST_RESERVED_GDT_ENTRY);
    v("XEN_DOMCTL_INTERFACE_VERSION", abi.domctl_interface);
    v(
        "XEN_DOMCTL_get_ext_vcpucontext",
        XEN_DOMCTL_GET_EXT_VCPUCONTEXT,
    );
    v("XEN_DOMCTL_get_address_size", XEN_DOMCTL_GET_ADDRESS_SIZE);
    v("XEN_DOMCTL_getvcpuextstate", XEN_DOMCTL_GETVCPUEXTSTATE);
    v("XEN_DOMCTL_get_vcpu_msrs", XEN_DOMCTL_GET_VCPU_MSRS);
    v("XEN_DOMCTL_PFINFO_L1TAB", XEN_DOMCTL_PFINFO_L1TAB);
    v("XEN_DOMCTL_PFINFO_L2TAB", XEN_DOMCTL_PFINFO_L2TAB);
    v("XEN_DOMCTL_PFINFO_L3TAB", XEN_DOMCTL_PFINFO_L3TAB);
    v("XEN_DOMCTL_PFINFO_L4TAB", XEN_DOMCTL_PFINFO_L4TAB);
    v(
        "XEN_DOMCTL_PFINFO_LTABTYPE_MASK",
        XEN_DOMCTL_PFINFO_LTABTYPE_MASK,
    );
    v("XEN_DOMCTL_PFINFO_LPINTAB", XEN_DOMCTL_PFINFO_LPINTAB);
    v("XEN_DOMINF_dying", XEN_DOMINF_DYING);
    v("XEN_DOMINF_hvm_guest", XEN_DOMINF_HVM_GUEST);
    v("XEN_DOMINF_shutdown", XEN_DOMINF_SHUTDOWN);
    v("XEN_DOMINF_paused", XEN_DOMINF_PAUSED);
    v("XEN_DOMINF_blocked", XEN_DOMINF_BLOCKED);
    v("XEN_DOMINF_running", XEN_DOMINF_RUNNING);
    v("XEN_DOMINF_debugged", XEN_DOMINF_DEBUGGED);
    v("XEN_DOMINF_xs_domain", XEN_DOMINF_XS_DOMAIN);
    v("XEN_DOMINF_hap", XEN_DOMINF_HAP);
    v("XEN_DOMINF_shutdownshift", XEN_DOMINF_SHUTDOWNSHIFT);
    v("XEN_DOMINF_shutdownmask", XEN_DOMINF_SHUTDOWNMASK);
    v("XEN_DOMCTL_SHADOW_OP_OFF", XEN_DOMCTL_SHADOW_OP_OFF);
    v(
        "XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY",
        XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
    );
    v("XEN_DOMCTL_SHADOW_OP_CLEAN", XEN_DOMCTL_SHADOW_OP_CLEAN);
    v("XEN_DOMCTL_SHADOW_OP_PEEK", XEN_DOMCTL_SHADOW_OP_PEEK);
    v(
        "XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL",
        XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL,
    );
    v("XEN_DOMCTL_PFINFO_LTAB_MASK", XEN_DOMCTL_PFINFO_LTAB_MASK);
    v("XEN_DOMCTL_PFINFO_NOTAB", XEN_DOMCTL_PFINFO_NOTAB);
    v("XEN_DOMCTL_PFINFO_XTAB", XEN_DOMCTL_PFINFO_XTAB);
    v("XEN_DOMCTL_PFINFO_XALLOC", XEN_DOMCTL_PFINFO_XALLOC);
    v("XEN_DOMCTL_PFINFO_BROKEN", XEN_DOMCTL_PFINFO_BROKEN);
    let params = [
        "STORE_PFN",
        "IOREQ_PFN",
        "BUFIOREQ_PFN",
        "PAGING_RING_PFN",
        "MONITOR_RING_PFN",
        "SHARING_RING_PFN",
        "VM86_TSS_SIZED",
        "CONSOLE_PFN",
        "ACPI_IOPORTS_LOCATION",
        "VIRIDIAN",
        "IDENT_PT",
        "VM_GENERATION_ID_ADDR",
        "IOREQ_SERVER_PFN",
        "NR_IOREQ_SERVER_PAGES",
        "X87_FIP_WIDTH",
        "MCA_CAP",
    ];
    // HVM_PARAMS_SAVED is in libxc's order, which is the order of `params`.
    for (name, idx) in params.iter().zip(HVM_PARAMS_SAVED) {
        v(&format!("HVM_PARAM_{name}"), idx);
    }
    m
}

/// The Debian releases whose libxen-dev the test checks against.
const SUITES: [&str; 2] = ["bookworm", "trixie"];

/// Downloads and unpacks `suite`'s libxen-dev (once; kept under the target directory).
/// Returns the unpacked root, or why it cannot.
fn fetch_headers(suite: &str) -> Result<PathBuf, String> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xen-headers");
    let root = base.join(suite).join("root");
    if root.join("usr/include/xenctrl.h").exists() {
        return Ok(root);
    }
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/suite-apt");
    let debs = base.join(suite).join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    let out = Command::new(&tool)
        .arg(suite)
        .arg(base.join(suite).join("apt"))
        .args(["download", "libxen-dev"])
        .current_dir(&debs)
        .output()
        .map_err(|e| format!("cannot run {} ({e}): no apt-get here?", tool.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => return Err(stderr.trim().to_string()),
        _ => panic!("tools/suite-apt {suite} download libxen-dev failed:\n{stderr}"),
    }
    let deb = std::fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("apt-get download left a .deb");
    let tmp = base.join(suite).join("root.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let st = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()
        .expect("run dpkg -x");
    assert!(st.success(), "dpkg -x {} failed", deb.display());
    std::fs::rename(&tmp, &root).map_err(|e| e.to_string())?;
    Ok(root)
}

/// The release of an unpacked libxen-dev: where its `libxenctrl.so` link points.
fn release_of(root: &Path) -> XenVersion {
    let link = root.join("usr/lib/x86_64-linux-gnu/libxenctrl.so");
    let target = std::fs::read_link(&link).expect("libxen-dev has the libxenctrl.so link");
    let name = target.file_name().unwrap().to_string_lossy().to_string();
    let v = name
        .strip_prefix("libxenctrl.so.")
        .and_then(XenVersion::parse)
        .unwrap_or_else(|| panic!("libxenctrl.so points to {name}"));
    let abi = abi_of(v, &name).expect("a supported release");
    assert!(
        name.starts_with(abi.libxenctrl),
        "{name} vs {}",
        abi.libxenctrl
    );
    v
}

fn c_values(include: &Path) -> Result<BTreeMap<String, u64>, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let dir = std::env::temp_dir().join(format!(
        "xen-sys-layout-{}-{}",
        std::process::id(),
        include.display().to_string().len()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, C_PROGRAM).map_err(|e| e.to_string())?;
    let out = Command::new(&cc)
        .arg(format!(
            "-DXCKPT_ROOM={}",
            xen_sys::libxl::DOMAIN_CONFIG_ROOM
        ))
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Err(format!("no C compiler ({cc}: {e})")),
    };
    assert!(
        out.status.success(),
        "compiling against the Xen headers failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run layout probe");
    assert!(run.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(run.stdout).expect("utf8");
    Ok(text
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("key value");
            (k.to_string(), v.parse().expect("number"))
        })
        .collect())
}

#[test]
fn structs_and_constants_match_xen_headers() {
    let mut checked = Vec::new();
    for suite in SUITES {
        let root = match fetch_headers(suite) {
            Ok(r) => r,
            Err(why) => {
                eprintln!("SKIPPED layout check against {suite}'s libxen-dev: {why}");
                continue;
            }
        };
        let v = release_of(&root);
        let abi = abi_of(v, suite).unwrap();
        let c = match c_values(&root.join("usr/include")) {
            Ok(c) => c,
            Err(why) => {
                eprintln!("SKIPPED layout check: {why}");
                return;
            }
        };
        let r = rust_values(abi);
        let mut bad = Vec::new();
        for (k, cv) in &c {
            match r.get(k) {
                Some(rv) if rv == cv => {}
                other => bad.push(format!("{k}: C {cv}, Rust {other:?}")),
            }
        }
        assert_eq!(c.len(), r.len(), "probe and mirror cover different items");
        assert!(
            bad.is_empty(),
            "layout mismatches against {suite}'s Xen {v} headers:\n{}",
            bad.join("\n")
        );
        checked.push(format!("{suite}: Xen {v}"));
    }
    eprintln!("layout checked against {}", checked.join(", "));
}
