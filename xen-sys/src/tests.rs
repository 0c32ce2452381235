//! Wrapper logic against the fake function table. Each test uses its own domid (the fake's
//! registry is process-wide).

use crate::abi::*;
use crate::fake::{self, FakeDomainSpec};
use crate::{cpuid_record, msr_record, ForeignMemory, XenCtrl, XenError, PAGE_SIZE};

fn dom(domid: u32, pfn_count: u64) -> FakeDomainSpec {
    FakeDomainSpec {
        domid,
        uuid: [domid as u8; 16],
        hvm: true,
        pfn_count,
        vcpus: 2,
        unpopulated: vec![3],
        broken: vec![4],
        logdirty_errno: None,
        ..Default::default()
    }
}

fn page(b: u8) -> Vec<u8> {
    vec![b; PAGE_SIZE]
}

#[test]
fn domain_info_and_listing() {
    fake::add_domain(dom(101, 5000));
    fake::add_domain(dom(102, 100));
    let xc = XenCtrl::open_fake();
    let i = xc.domain_info(101).unwrap().expect("present");
    assert_eq!(i.domain, 101);
    assert_eq!(i.handle, [101; 16]);
    assert_eq!(i.tot_pages, 4999);
    assert_eq!(i.nr_online_vcpus, 2);
    assert_ne!(i.flags & XEN_DOMINF_HVM_GUEST, 0);
    assert_eq!(xc.maximum_gpfn(101).unwrap(), 4999);
    assert!(xc.domain_info(103).unwrap().is_none());
    let all: Vec<u16> = xc.all_domains().unwrap().iter().map(|d| d.domain).collect();
    assert!(all.contains(&101) && all.contains(&102));
    let e = xc.maximum_gpfn(103).unwrap_err();
    assert_eq!(
        e,
        XenError::Call {
            call: "xc_domain_maximum_gpfn",
            errno: libc::ESRCH
        }
    );
}

#[test]
fn pause_and_unpause_count() {
    fake::add_domain(dom(111, 16));
    let xc = XenCtrl::open_fake();
    xc.pause(111).unwrap();
    assert_eq!(fake::pause_count(111), 1);
    assert_ne!(
        xc.domain_info(111).unwrap().unwrap().flags & XEN_DOMINF_PAUSED,
        0
    );
    xc.unpause(111).unwrap();
    assert_eq!(fake::pause_count(111), 0);
    assert_eq!(xc.unpause(111).unwrap_err().errno(), Some(libc::EINVAL));
}

#[test]
fn logdirty_clean_and_peek() {
    fake::add_domain(dom(121, 130));
    let xc = XenCtrl::open_fake();
    xc.shadow_control(121, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, 0)
        .unwrap();
    let again = xc.shadow_control(121, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, 0);
    assert_eq!(again.unwrap_err().errno(), Some(libc::EINVAL));
    for pfn in [0u64, 63, 64, 129] {
        fake::write_page(121, pfn, &page(1));
    }
    let mut bm = xc.alloc_bitmap(130).unwrap();
    assert_eq!(bm.words().len(), 3);
    let (pages, _) = xc
        .logdirty_control(121, XEN_DOMCTL_SHADOW_OP_PEEK, &mut bm, 0)
        .unwrap();
    assert_eq!(pages, 130);
    assert_eq!(bm.words(), &[1 | 1 << 63, 1, 1 << 1]);
    let (_, stats) = xc
        .logdirty_control(121, XEN_DOMCTL_SHADOW_OP_CLEAN, &mut bm, 0)
        .unwrap();
    assert_eq!(stats.dirty_count, 4);
    assert_eq!(bm.count_ones(), 4);
    xc.logdirty_control(121, XEN_DOMCTL_SHADOW_OP_CLEAN, &mut bm, 0)
        .unwrap();
    assert_eq!(bm.words(), &[0, 0, 0]);
    xc.shadow_control(121, XEN_DOMCTL_SHADOW_OP_OFF, 0).unwrap();
    assert!(!fake::logdirty_on(121));
}

#[test]
fn page_types_in_batches() {
    fake::add_domain(dom(131, 3000));
    let xc = XenCtrl::open_fake();
    let pfns: Vec<u64> = (0..3001).collect();
    let mut out = vec![0u32; pfns.len()];
    xc.pfn_types(131, &pfns, &mut out).unwrap();
    assert_eq!(out[0], XEN_DOMCTL_PFINFO_NOTAB);
    assert_eq!(out[3], XEN_DOMCTL_PFINFO_XTAB);
    assert_eq!(out[4], XEN_DOMCTL_PFINFO_BROKEN);
    assert_eq!(out[2999], XEN_DOMCTL_PFINFO_NOTAB);
    assert_eq!(out[3000], XEN_DOMCTL_PFINFO_XTAB);
}

#[test]
fn populating_whole_extents_once() {
    fake::add_domain(FakeDomainSpec {
        unpopulated: (512..1536).collect(),
        ..dom(132, 2048)
    });
    let xc = XenCtrl::open_fake();
    let types = |pfns: &[u64]| {
        let mut out = vec![0u32; pfns.len()];
        xc.pfn_types(132, pfns, &mut out).unwrap();
        out
    };
    assert_eq!(types(&[512, 1024]), [XEN_DOMCTL_PFINFO_XTAB; 2]);
    xc.populate_physmap(132, 9, &[512]).unwrap();
    assert_eq!(types(&[512, 1023, 1024]), [0, 0, XEN_DOMCTL_PFINFO_XTAB]);
    // Populated already, or past the pfn space: an error naming the call.
    let e = xc.populate_physmap(132, 9, &[512]).unwrap_err().to_string();
    assert!(e.contains("xc_domain_populate_physmap_exact"), "{e}");
    assert!(xc.populate_physmap(132, 0, &[2048]).is_err());
    xc.populate_physmap(132, 0, &(1024..1536).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(types(&[1024, 1535]), [0, 0]);
}

#[test]
fn foreign_mapping_reads_pages_and_reports_errors() {
    fake::add_domain(dom(141, 2048));
    fake::write_page(141, 5, &page(0x5a));
    fake::write_page(141, 2047, &page(0xa5));
    let fm = ForeignMemory::open_fake();
    let pfns: Vec<u64> = (0..2048).collect();
    let m = fm.map_read(141, &pfns).unwrap();
    assert_eq!(m.len(), 2048);
    assert_eq!(m.page_ptr(3).unwrap_err(), libc::ENOENT);
    assert_eq!(m.page_ptr(4).unwrap_err(), libc::ENOENT);
    let read = |i: usize| {
        let p = m.page_ptr(i).unwrap();
        assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0);
        // SAFETY: the mapping contract: PAGE_SIZE readable bytes while `m` lives.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), PAGE_SIZE).to_vec() }
    };
    assert_eq!(read(5), page(0x5a));
    assert_eq!(read(2047), page(0xa5));
    assert_eq!(read(0), page(0));
    assert!(fm.map_read(141, &[]).unwrap().is_empty());
    assert_eq!(
        fm.map_read(149, &[0]).unwrap_err().errno(),
        Some(libc::ESRCH)
    );
}

#[test]
fn machine_state_calls() {
    fake::add_domain(dom(151, 64));
    let xc = XenCtrl::open_fake();
    assert_eq!(xc.hvm_context(151).unwrap(), fake::hvm_context_bytes(151));
    assert_eq!(xc.hvm_param(151, HVM_PARAM_STORE_PFN).unwrap(), 63);
    let t = xc.tsc_info(151).unwrap();
    assert_eq!((t.mode, t.nsec, t.khz, t.incarnation), fake::FAKE_TSC);
    let rec = t.to_record();
    assert_eq!(rec.len(), 24);
    assert_eq!(&rec[4..8], &fake::FAKE_TSC.2.to_le_bytes());
    assert_eq!(&rec[8..16], &fake::FAKE_TSC.1.to_le_bytes());
    let (l, m) = xc.cpu_policy(151).unwrap();
    assert_eq!(l, fake::FAKE_LEAVES);
    assert_eq!(m, fake::FAKE_MSRS);
    let body = cpuid_record(&l);
    assert_eq!(body.len(), 48);
    assert_eq!(&body[0..8], &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let body = msr_record(&m);
    assert_eq!(
        body,
        [
            &0xceu32.to_le_bytes()[..],
            &[0; 4],
            &0x8000_0000u64.to_le_bytes()
        ]
        .concat()
    );
    let c = xc.vcpu_context(151, 1).unwrap();
    assert!(c.bytes.iter().all(|&b| b == 2));
    assert_eq!(
        xc.vcpu_context(151, 2).unwrap_err().errno(),
        Some(libc::ESRCH)
    );
}

#[test]
fn errors_are_one_line() {
    let msgs = [
        XenError::Load {
            lib: crate::version::SUPPORTED[0].libxenctrl,
            tools: "4.17".into(),
            reason: "not found".into(),
        }
        .to_string(),
        XenError::Unsupported {
            version: "4.23".into(),
            found: "the running hypervisor".into(),
        }
        .to_string(),
        XenError::NoTools {
            range: crate::version::supported_range(),
        }
        .to_string(),
        XenError::NoPrivcmd.to_string(),
        XenError::PrivcmdDenied.to_string(),
        XenError::Call {
            call: "xc_domain_pause",
            errno: libc::ESRCH,
        }
        .to_string(),
    ];
    for m in &msgs {
        assert!(!m.contains('\n'), "{m}");
    }
    assert!(msgs[0].contains("libxenctrl.so.4.17") && msgs[0].contains("xen-utils-4.17"));
    assert!(msgs[1].contains("Xen 4.23") && msgs[1].contains("4.17 to 4.22"));
    assert!(msgs[2].contains("4.17 to 4.22"));
    assert!(msgs[5].starts_with("xc_domain_pause failed: No such process"));
}

/// On a host without a privcmd device, opening fails with the one-line dom0 message (and the
/// libraries, if installed, load fine); on a dom0 the open succeeds.
#[test]
fn real_open_on_this_host() {
    let r = XenCtrl::open();
    if std::path::Path::new(crate::PRIVCMD).exists() {
        return;
    }
    match r {
        Err(XenError::NoPrivcmd) | Err(XenError::Load { .. }) | Err(XenError::NoTools { .. }) => {}
        other => panic!("unexpected: {other:?}"),
    }
    assert!(matches!(
        ForeignMemory::open(),
        Err(XenError::NoPrivcmd) | Err(XenError::Load { .. }) | Err(XenError::NoTools { .. })
    ));
}

/// Where a supported release's libraries are installed (libxen-dev here, a dom0 in
/// production), every symbol of the table resolves.
#[test]
fn real_table_resolves_every_symbol() {
    match crate::api::real() {
        Ok(api) => assert!(crate::version::SUPPORTED
            .iter()
            .any(|a| std::ptr::eq(a, api.abi))),
        Err(XenError::Load { lib, reason, .. }) => {
            eprintln!("SKIPPED: {lib} not installed ({reason})")
        }
        Err(e @ XenError::NoTools { .. }) => eprintln!("SKIPPED: {e}"),
        Err(e) => panic!("{e}"),
    }
}

/// Each release's table puts its own domctl interface version into the domctls it makes.
#[test]
fn domctls_carry_the_release_interface_version() {
    for (i, abi) in crate::version::SUPPORTED.iter().enumerate() {
        let domid = 200 + i as u32;
        fake::add_domain(FakeDomainSpec {
            hvm: false,
            ..dom(domid, 64)
        });
        let xc = XenCtrl::open_fake_as(abi);
        assert_eq!(xc.abi().version, abi.version);
        assert_eq!(xc.address_size(domid).unwrap(), 64);
        assert_eq!(
            fake::last_domctl_interface(domid),
            Some(abi.domctl_interface)
        );
        fake::remove_domain(domid);
    }
}

#[test]
fn pv_vcpu_state_domctls() {
    fake::add_domain(FakeDomainSpec {
        hvm: false,
        ..dom(191, 64)
    });
    let xc = XenCtrl::open_fake();
    assert_eq!(xc.address_size(191).unwrap(), 64);
    assert!(xc.vcpu_online(191, 1).unwrap());
    assert_eq!(
        xc.vcpu_online(191, 2).unwrap_err().errno(),
        Some(libc::ESRCH)
    );
    let ext = xc.vcpu_extended(191, 1).unwrap();
    assert_eq!(ext.len(), 16);
    assert_eq!(&ext[..8], &[1, 0, 0, 0, 16, 0, 0, 0]);
    let xs = xc.vcpu_xsave(191, 1).unwrap();
    assert_eq!(xs.len(), fake::FAKE_XSAVE_SIZE as usize);
    assert!(xs.iter().all(|&b| b == 2));
    let msrs = xc.vcpu_msrs(191, 0).unwrap();
    let mut want = 0xc000_0103u64.to_le_bytes().to_vec();
    want.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(msrs, want);
    assert_eq!(xc.vcpu_msrs(192, 0).unwrap_err().errno(), Some(libc::ESRCH));
}
