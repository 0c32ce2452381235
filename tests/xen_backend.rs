//! The Xen back-end against xen-sys's fake hypervisor, an in-memory xenstore, a scripted QMP
//! server and a stand-in `xl`. Each test uses its own domids (the fake registry is global).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use xckpt::backend::xen::{XenDomain, XenEnv};
use xckpt::hv::{
    state_kind, DirtyLog, Domain, GuestMemory, GuestType, HvError, MachineState, PageType,
    PfnBitmap, PAGE_SIZE,
};
use xen_sys::abi::*;
use xen_sys::fake::{self, FakeDomainSpec};
use xen_sys::{ForeignMemory, XenCtrl};
use xenstore_rs::Xs;

#[derive(Clone, Default)]
struct MapXs(Arc<Mutex<BTreeMap<String, String>>>);

impl MapXs {
    fn set(&self, k: &str, v: &str) {
        self.0.lock().unwrap().insert(k.to_string(), v.to_string());
    }
}

impl Xs for MapXs {
    fn directory(&self, path: &str) -> std::io::Result<Vec<Box<str>>> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let m = self.0.lock().unwrap();
        let mut kids: Vec<Box<str>> = m
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap().into())
            .collect();
        kids.dedup();
        Ok(kids)
    }
    fn read(&self, path: &str) -> std::io::Result<Box<str>> {
        let m = self.0.lock().unwrap();
        m.get(path)
            .map(|s| s.as_str().into())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn write(&self, path: &str, data: &str) -> std::io::Result<()> {
        self.set(path, data);
        Ok(())
    }
    fn rm(&self, path: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().remove(path);
        Ok(())
    }
}

fn uuid(domid: u32, gen: u8) -> ([u8; 16], String) {
    let mut h = [0u8; 16];
    h[0] = domid as u8;
    h[15] = gen;
    (h, xckpt::hv::uuid_text(&h))
}

/// Create fake domain `domid` named `name` of type `ty` with xenstore entries; returns the
/// xenstore.
fn make(domid: u32, name: &str, ty: &str, gen: u8, xs: &MapXs) -> String {
    let (h, u) = uuid(domid, gen);
    fake::add_domain(FakeDomainSpec {
        domid,
        uuid: h,
        hvm: ty != "pv",
        pfn_count: 300,
        vcpus: 2,
        unpopulated: vec![10],
        broken: vec![11],
        logdirty_errno: None,
        ..Default::default()
    });
    xs.set(&format!("/local/domain/{domid}/name"), name);
    xs.set(&format!("/local/domain/{domid}/vm"), &format!("/vm/{u}"));
    xs.set(&format!("/vm/{u}/start_time"), &format!("1700000000.{gen}"));
    xs.set(&format!("/libxl/{domid}/type"), ty);
    u
}

fn open(spec: &str, xs: &MapXs, env: XenEnv) -> Result<XenDomain, HvError> {
    XenDomain::open_with(
        XenCtrl::open_fake(),
        ForeignMemory::open_fake(),
        Box::new(xs.clone()),
        env,
        spec,
    )
}

#[test]
fn open_by_name_domid_and_uuid() {
    let xs = MapXs::default();
    let u = make(201, "web", "pvh", 1, &xs);
    make(202, "db", "pvh", 1, &xs);
    make(203, "old", "pv", 1, &xs);
    for spec in ["web", "201", u.as_str(), &u.to_uppercase()] {
        assert_eq!(open(spec, &xs, quiet_env()).unwrap().domid(), 201, "{spec}");
    }
    assert_eq!(open("db", &xs, quiet_env()).unwrap().domid(), 202);
    assert!(matches!(open("nope", &xs, quiet_env()), Err(HvError::NoSuchDomain(s)) if s == "nope"));
    assert!(matches!(
        open("209", &xs, quiet_env()),
        Err(HvError::NoSuchDomain(_))
    ));
    assert_eq!(
        open("old", &xs, quiet_env()).unwrap().guest_type(),
        GuestType::Pv
    );
}

#[test]
fn guest_type_without_libxl_type_node() {
    let xs = MapXs::default();
    make(205, "dm", "hvm", 1, &xs);
    make(206, "nodm", "hvm", 1, &xs);
    xs.rm("/libxl/205/type").unwrap();
    xs.rm("/libxl/206/type").unwrap();
    xs.set("/local/domain/0/device-model/205/state", "running");
    assert_eq!(
        open("dm", &xs, quiet_env()).unwrap().guest_type(),
        GuestType::Hvm
    );
    assert_eq!(
        open("nodm", &xs, quiet_env()).unwrap().guest_type(),
        GuestType::Pvh
    );
    xs.set("/libxl/206/type", "hvm");
    assert_eq!(
        open("nodm", &xs, quiet_env()).unwrap().guest_type(),
        GuestType::Hvm
    );
}

#[test]
fn info_and_identity_across_recreation() {
    let xs = MapXs::default();
    let u = make(211, "app", "hvm", 1, &xs);
    let d = open("app", &xs, quiet_env()).unwrap();
    let i = d.info().unwrap();
    assert_eq!(i.identity.name, "app");
    assert_eq!(i.identity.domid, 211);
    assert_eq!(i.identity.uuid, u);
    assert_eq!(i.guest_type, GuestType::Hvm);
    assert_eq!(
        (i.pfn_count, i.vcpus, i.populated_pages, i.paused),
        (300, 2, 299, false)
    );
    d.pause().unwrap();
    assert!(d.info().unwrap().paused);
    d.unpause().unwrap();
    assert_eq!(fake::pause_count(211), 0);

    // Same uuid, new start time: a re-created domain has a new instance.
    make(211, "app", "hvm", 1, &xs);
    xs.set(&format!("/vm/{u}/start_time"), "1800000000.5");
    assert_ne!(d.info().unwrap().identity.instance, i.identity.instance);
    // A different domain under the same domid is refused.
    make(211, "app", "hvm", 2, &xs);
    assert!(matches!(d.info(), Err(HvError::Op { .. })));
    fake::remove_domain(211);
    assert!(matches!(d.info(), Err(HvError::NoSuchDomain(_))));
}

#[test]
fn logdirty_round_trip() {
    let xs = MapXs::default();
    make(221, "ld", "pvh", 1, &xs);
    let d = open("221", &xs, quiet_env()).unwrap();
    assert!(!d.logdirty_enabled().unwrap());
    assert!(
        !fake::logdirty_on(221),
        "the probe must leave log-dirty off"
    );
    d.logdirty_enable().unwrap();
    for pfn in [0u64, 64, 299] {
        fake::write_page(221, pfn, &vec![1; PAGE_SIZE]);
    }
    d.logdirty_enable().unwrap(); // already on: keeps the bits
    assert!(d.logdirty_enabled().unwrap());
    let mut bm = PfnBitmap::new();
    assert_eq!(d.logdirty_clean(&mut bm).unwrap(), 3);
    assert_eq!(bm.len(), 300);
    assert_eq!(bm.iter_ones().collect::<Vec<_>>(), vec![0, 64, 299]);
    assert_eq!(d.logdirty_clean(&mut bm).unwrap(), 0);
    d.logdirty_disable().unwrap();
    assert!(!fake::logdirty_on(221));
    let off = d.logdirty_clean(&mut bm).unwrap_err().to_string();
    assert!(off.contains("log-dirty mode is off"), "{off}");
    assert!(!fake::logdirty_on(221));

    // Log-dirty left on by an earlier run: enable keeps it on, bits and all.
    let other = XenCtrl::open_fake();
    other
        .shadow_control(221, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, 0)
        .unwrap();
    assert!(d.logdirty_enabled().unwrap());
    d.logdirty_enable().unwrap();
    assert!(fake::logdirty_on(221));
}

#[test]
fn logdirty_unsupported_is_its_own_error() {
    let xs = MapXs::default();
    make(231, "nold", "pvh", 1, &xs);
    let (h, _) = uuid(231, 1);
    fake::add_domain(FakeDomainSpec {
        domid: 231,
        uuid: h,
        hvm: true,
        pfn_count: 16,
        vcpus: 1,
        logdirty_errno: Some(libc::EOPNOTSUPP),
        ..Default::default()
    });
    let d = open("nold", &xs, quiet_env()).unwrap();
    assert!(
        matches!(d.logdirty_enable(), Err(HvError::LogDirtyUnsupported { domain, .. }) if domain == "nold")
    );
}

#[test]
fn page_types_and_mapping() {
    let xs = MapXs::default();
    make(241, "mem", "pvh", 1, &xs);
    let page: Vec<u8> = (0..PAGE_SIZE).map(|i| (i % 253) as u8).collect();
    fake::write_page(241, 7, &page);
    let d = open("mem", &xs, quiet_env()).unwrap();
    let pfns = [7u64, 10, 11, 12, 300];
    let mut types = [PageType::Normal; 5];
    d.page_types(&pfns, &mut types).unwrap();
    assert_eq!(
        types,
        [
            PageType::Normal,
            PageType::Unpopulated,
            PageType::Broken,
            PageType::Normal,
            PageType::Unpopulated
        ]
    );
    let b = d.map_batch(&pfns[..4]).unwrap();
    assert_eq!(b.len(), 4);
    let mut out = vec![0u8; PAGE_SIZE];
    b.page(0).unwrap().copy_to(&mut out);
    assert_eq!(out, page);
    assert_eq!(b.page(1).err(), Some(libc::ENOENT));
    assert_eq!(b.page(2).err(), Some(libc::ENOENT));
    assert!(b.page(3).unwrap().is_zero());
}

fn expected_pvh_blobs(domid: u32) -> Vec<(u32, Vec<u8>)> {
    let (mode, nsec, khz, inc) = fake::FAKE_TSC;
    let tsc = [
        &mode.to_le_bytes()[..],
        &khz.to_le_bytes(),
        &nsec.to_le_bytes(),
        &inc.to_le_bytes(),
        &[0; 4],
    ]
    .concat();
    let mut params = vec![3, 0, 0, 0, 0, 0, 0, 0];
    for (i, v) in [
        (HVM_PARAM_STORE_PFN, 299u64),
        (HVM_PARAM_CONSOLE_PFN, 298),
        (HVM_PARAM_X87_FIP_WIDTH, 8),
    ] {
        params.extend_from_slice(&u64::from(i).to_le_bytes());
        params.extend_from_slice(&v.to_le_bytes());
    }
    let mut cpuid = Vec::new();
    for l in fake::FAKE_LEAVES {
        for w in [l.leaf, l.subleaf, l.a, l.b, l.c, l.d] {
            cpuid.extend_from_slice(&w.to_le_bytes());
        }
    }
    let m = fake::FAKE_MSRS[0];
    let msr = [
        &m.idx.to_le_bytes()[..],
        &m.flags.to_le_bytes(),
        &m.val.to_le_bytes(),
    ]
    .concat();
    vec![
        (state_kind::TSC_INFO, tsc),
        (state_kind::HVM_CONTEXT, fake::hvm_context_bytes(domid)),
        (state_kind::HVM_PARAMS, params),
        (state_kind::CPUID_POLICY, cpuid),
        (state_kind::MSR_POLICY, msr),
    ]
}

#[test]
fn pvh_state_is_libxc_record_bodies() {
    let xs = MapXs::default();
    make(251, "st", "pvh", 1, &xs);
    let d = open("st", &xs, quiet_env()).unwrap();
    d.prepare_capture().unwrap(); // no device model: nothing to do
    let got: Vec<(u32, Vec<u8>)> = d
        .save_state()
        .unwrap()
        .into_iter()
        .map(|b| (b.kind, b.data))
        .collect();
    assert_eq!(got, expected_pvh_blobs(251));
}

/// A QMP server for `connections` connections that answers every command with success. It
/// keeps the file descriptors passed with `add-fd` and writes `state` into the last one when
/// asked for `xen-save-devices-state` into `/dev/fdset/N`.
fn qmp_server(
    path: &Path,
    connections: usize,
    state: &'static [u8],
) -> std::thread::JoinHandle<Vec<Value>> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut fds: Vec<OwnedFd> = Vec::new();
        for _ in 0..connections {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"{\"QMP\": {}}\n").unwrap();
            let mut pending = Vec::new();
            while let Some(v) = read_message(&s, &mut pending, &mut fds) {
                let reply = match v["execute"].as_str().unwrap() {
                    "add-fd" => "{\"return\": {\"fdset-id\": 1, \"fd\": 9}}\n",
                    "xen-save-devices-state" => {
                        assert_eq!(v["arguments"]["filename"], "/dev/fdset/1");
                        let fd = fds.last().expect("an fd was added").try_clone().unwrap();
                        std::fs::File::from(fd).write_all(state).unwrap();
                        "{\"return\": {}}\n"
                    }
                    _ => "{\"return\": {}}\n",
                };
                seen.push(v);
                s.write_all(reply.as_bytes()).unwrap();
            }
        }
        seen
    })
}

/// The next JSON line from `s` (None at EOF), keeping any SCM_RIGHTS descriptors in `fds`.
fn read_message(s: &UnixStream, pending: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) -> Option<Value> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    loop {
        if let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            return Some(serde_json::from_slice(&line).unwrap());
        }
        let mut buf = [0u8; 4096];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let n = recvmsg(
            s,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::empty(),
        )
        .unwrap()
        .bytes;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(got) = msg {
                fds.extend(got);
            }
        }
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn hvm_state_config_and_qemu() {
    let xs = MapXs::default();
    make(261, "win", "hvm", 1, &xs);
    let dir = tempfile::tempdir().unwrap();
    let xl = dir.path().join("xl");
    std::fs::write(
        &xl,
        "#!/bin/sh\n[ \"$1 $2 $3\" = \"list -l 261\" ] || exit 1\n\
         echo '[{\"domid\": 261, \"config\": {\"c_info\": {\"type\": \"hvm\", \"name\": \"win\"}}}]'\n",
    )
    .unwrap();
    std::fs::set_permissions(&xl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = XenEnv {
        xl_command: xl,
        qmp_dir: dir.path().into(),
        ..quiet_env()
    };
    // Three connections: QEMU's dirty log is turned on and then left on (log-dirty stays on
    // between checkpoints, and QEMU's reports of its own writes must too); the session a stop
    // opens before the pause; a state saved outside a stop, on a connection of its own.
    let server = qmp_server(&dir.path().join("qmp-libxl-261"), 3, b"QEVM device state");
    let physmap = "/local/domain/0/device-model/261/physmap/f0000000";
    for (k, v) in [
        ("start_addr", "c0000"),
        ("size", "800000"),
        ("name", "vga.vram"),
    ] {
        xs.write(&format!("{physmap}/{k}"), v).unwrap();
    }
    let d = open("win", &xs, env).unwrap();

    d.prepare_capture().unwrap();
    // The vCPUs' state alone (introspection, while the guest runs) does not ask QEMU: a
    // connection here would take one of the server's three.
    let cpu_only: Vec<(u32, Vec<u8>)> = d
        .cpu_state()
        .unwrap()
        .iter()
        .map(|b| (b.kind, b.data.clone()))
        .collect();
    assert_eq!(cpu_only, expected_pvh_blobs(261));
    // The capture's order: the session is opened before the pause, the state saved over it
    // (a new connection would be the server's third, and the fallback below would fail), and
    // the session closed once the guest runs again.
    d.ready_for_stop().unwrap();
    let blobs = d.save_state().unwrap();
    d.stop_over();
    let again = d.save_state().unwrap();
    assert_eq!(again.len(), blobs.len());
    let seen = server.join().unwrap();
    let cmds: Vec<&str> = seen
        .iter()
        .map(|v| v["execute"].as_str().unwrap())
        .collect();
    let one_save = [
        "qmp_capabilities",
        "add-fd",
        "xen-save-devices-state",
        "remove-fd",
    ];
    assert_eq!(
        cmds,
        [
            &["qmp_capabilities", "xen-set-global-dirty-log"][..],
            &one_save,
            &one_save
        ]
        .concat()
    );
    assert_eq!(seen[1]["arguments"]["enable"], true);
    assert_eq!(seen[4]["arguments"]["live"], false);
    let (cpu, emulator) = blobs.split_at(blobs.len() - 2);
    let got: Vec<(u32, Vec<u8>)> = cpu.iter().map(|b| (b.kind, b.data.clone())).collect();
    assert_eq!(got, expected_pvh_blobs(261));
    assert_eq!(
        (emulator[0].kind, emulator[0].data.as_slice()),
        (state_kind::QEMU_STATE, &b"QEVM device state"[..])
    );
    assert_eq!(
        (emulator[1].kind, emulator[1].data.as_slice()),
        (
            state_kind::QEMU_XENSTORE,
            &b"physmap/f0000000/start_addr\0c0000\0physmap/f0000000/size\0800000\0\
               physmap/f0000000/name\0vga.vram\0"[..]
        )
    );

    let cfg = d.config().unwrap();
    assert_eq!(
        cfg.last(),
        Some(&0),
        "NUL-terminated like xl's embedded config"
    );
    let v: Value = serde_json::from_slice(&cfg[..cfg.len() - 1]).unwrap();
    assert_eq!(v["c_info"]["name"], "win");
}

/// This machine has no Xen: opening a real domain fails with one clear line.
#[test]
fn open_without_xen_is_one_clear_line() {
    if Path::new("/dev/xen/privcmd").exists() {
        return;
    }
    let e = XenDomain::open("anything").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HvError::Unavailable(_)), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.contains("not running in a Xen dom0") || msg.contains("xen-utils-4.17"),
        "{msg}"
    );
}

/// The default environment without the pause watchdog and the /proc scan (the test binary is
/// not an xckpt binary).
fn quiet_env() -> XenEnv {
    XenEnv {
        watchdog_exe: None,
        suspend: false,
        xenstored_resume: false,
        proc_root: None,
        ..XenEnv::default()
    }
}

/// A PV fake guest of 300 pfns whose p2m maps every pfn to itself (pfn 10 to none), reached
/// through shared info (frame 290) -> frame list list (291) -> frame list (292) -> leaf (293).
/// Frame 5 is a pinned L4 table whose entry 0 points at frame 6 (an L1), and whose entry 256
/// (a Xen slot) holds junk.
fn pv_guest(
    domid: u32,
    name: &str,
    xs: &MapXs,
    logdirty_errno: Option<i32>,
    env: XenEnv,
) -> XenDomain {
    make(domid, name, "pv", 1, xs);
    let (h, _) = uuid(domid, 1);
    fake::add_domain(FakeDomainSpec {
        domid,
        uuid: h,
        hvm: false,
        pfn_count: 300,
        vcpus: 2,
        unpopulated: vec![10],
        logdirty_errno,
        shared_info_frame: 290,
        page_tables: vec![
            (5, XEN_DOMCTL_PFINFO_L4TAB | XEN_DOMCTL_PFINFO_LPINTAB),
            (6, XEN_DOMCTL_PFINFO_L1TAB),
        ],
        ..Default::default()
    });
    let page = |words: &[(usize, u64)]| {
        let mut p = vec![0u8; PAGE_SIZE];
        for &(i, v) in words {
            p[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        p
    };
    fake::write_page(
        domid,
        290,
        &page(&[(SHINFO_X64_MAX_PFN / 8, 300), (SHINFO_X64_FLL / 8, 291)]),
    );
    fake::write_page(domid, 291, &page(&[(0, 292)]));
    fake::write_page(domid, 292, &page(&[(0, 293)]));
    let leaf: Vec<(usize, u64)> = (0..300usize)
        .map(|p| (p, if p == 10 { u64::MAX } else { p as u64 }))
        .collect();
    fake::write_page(domid, 293, &page(&leaf));
    fake::write_page(
        domid,
        5,
        &page(&[(0, (6 << 12) | 0x67), (256, 0xdead_0000_1003)]),
    );
    fake::write_page(domid, 6, &page(&[(3, (7 << 12) | 0x63)]));
    open(name, xs, env).unwrap()
}

#[test]
fn pv_guest_through_its_p2m() {
    let xs = MapXs::default();
    let d = pv_guest(263, "pvg", &xs, None, quiet_env());
    assert_eq!(d.guest_type(), GuestType::Pv);
    let pfns = [5u64, 6, 7, 10];
    let mut types = [PageType::Normal; 4];
    d.page_types(&pfns, &mut types).unwrap();
    assert_eq!(
        types,
        [
            PageType::Other(XEN_DOMCTL_PFINFO_L4TAB | XEN_DOMCTL_PFINFO_LPINTAB),
            PageType::Other(XEN_DOMCTL_PFINFO_L1TAB),
            PageType::Normal,
            PageType::Unpopulated
        ]
    );
    d.pause().unwrap();
    let blobs = d.save_state().unwrap();
    d.unpause().unwrap();
    let get = |k: u32| -> Vec<&Vec<u8>> {
        blobs
            .iter()
            .filter(|b| b.kind == k)
            .map(|b| &b.data)
            .collect()
    };
    assert_eq!(
        get(state_kind::X86_PV_INFO),
        [&vec![8, 4, 0, 0, 0, 0, 0, 0]]
    );
    let mut frames = 0u32.to_le_bytes().to_vec();
    frames.extend_from_slice(&299u32.to_le_bytes());
    frames.extend_from_slice(&293u64.to_le_bytes());
    assert_eq!(get(state_kind::X86_PV_P2M_FRAMES), [&frames]);
    assert_eq!(get(state_kind::SHARED_INFO)[0].len(), PAGE_SIZE);
    let types = xckpt::pv::PageTypes::from_blob(get(state_kind::PV_PAGE_TYPES)[0]).unwrap();
    assert_eq!(types.tables.keys().copied().collect::<Vec<_>>(), vec![5, 6]);
    let m2p = xckpt::pv::M2p::from_blob(get(state_kind::PV_P2M)[0]).unwrap();
    assert_eq!(m2p.pfn(7, String::new).unwrap(), 7);
    assert!(m2p.pfn(10, String::new).is_err());
    // Two online vCPUs, each with basic, extended, xsave and MSR records, in libxc's order.
    let vk: Vec<(u32, u32)> = blobs
        .iter()
        .filter(|b| {
            (state_kind::X86_PV_VCPU_BASIC..=state_kind::X86_PV_VCPU_MSRS).contains(&b.kind)
        })
        .map(|b| (b.kind, u32::from_le_bytes(b.data[..4].try_into().unwrap())))
        .collect();
    assert_eq!(
        vk,
        [0, 1]
            .iter()
            .flat_map(
                |&v| (state_kind::X86_PV_VCPU_BASIC..=state_kind::X86_PV_VCPU_MSRS)
                    .map(move |k| (k, v))
            )
            .collect::<Vec<_>>()
    );
    let basic0 = get(state_kind::X86_PV_VCPU_BASIC)[0];
    let at = |off: usize| u64::from_le_bytes(basic0[8 + off..16 + off].try_into().unwrap());
    assert_eq!(at(VCPU_CTX_X64_RDX), fake::FAKE_PV_START_INFO);
    assert_eq!(at(VCPU_CTX_X64_CTRLREG + 24), fake::FAKE_PV_CR3 << 12);
    assert_eq!(fake::pause_count(263), 0);
}

#[test]
fn pv_live_checkpoint_without_logdirty_says_so_and_no_live_works() {
    let xs = MapXs::default();
    let dir = tempfile::tempdir().unwrap();
    let xl = dir.path().join("xl");
    std::fs::write(
        &xl,
        "#!/bin/sh\necho '[{\"domid\": 273, \"config\": {\"c_info\": {\"type\": \"pv\", \"name\": \"pvnold\"}}}]'\n",
    )
    .unwrap();
    std::fs::set_permissions(&xl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = XenEnv {
        xl_command: xl,
        ..quiet_env()
    };
    let d = Arc::new(pv_guest(273, "pvnold", &xs, Some(libc::EOPNOTSUPP), env));
    let store = xckpt::store::Store::open(dir.path()).unwrap();
    let chain = store.chain("pvnold").unwrap();
    let live = xckpt::capture::checkpoint(&d, &chain, &Default::default()).unwrap_err();
    let msg = live.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.contains("log-dirty is not supported")
            && msg.contains("--no-live")
            && msg.contains("CONFIG_SHADOW_PAGING"),
        "{msg}"
    );
    assert_eq!(fake::pause_count(273), 0);
    let opts = xckpt::capture::CaptureOptions {
        live: false,
        ..Default::default()
    };
    let base = xckpt::capture::checkpoint(&d, &chain, &opts).unwrap();
    assert_eq!(base.layer.kind, xckpt::layer::LayerKind::Base);
    fake::write_page(273, 7, &vec![9u8; PAGE_SIZE]);
    let second = xckpt::capture::checkpoint(&d, &chain, &opts).unwrap();
    assert_eq!(second.layer.kind, xckpt::layer::LayerKind::Resync);
    assert!(second.resync_reason.unwrap().contains("without log-dirty"));
    assert_eq!(fake::pause_count(273), 0);
    // The point composes into a PV stream: domain type 1, the L4 normalised.
    let img = chain.compose(None).unwrap();
    let mut out = Vec::new();
    xckpt::stream::write_save_file(&img, &Default::default(), &mut out).unwrap();
    let libxc = out
        .windows(8)
        .position(|w| w == b"\xff\xff\xff\xff\xff\xff\xff\xff")
        .unwrap();
    assert_eq!(&out[libxc + 24..libxc + 28], &1u32.to_le_bytes());
}

#[test]
fn the_config_fetched_for_the_disk_plan_serves_the_capture_once() {
    let xs = MapXs::default();
    make(291, "cfg", "pvh", 1, &xs);
    let dir = tempfile::tempdir().unwrap();
    let (xl, calls) = (dir.path().join("xl"), dir.path().join("calls"));
    std::fs::write(
        &xl,
        format!(
            "#!/bin/sh\necho x >> {}\n\
             echo '[{{\"domid\": 291, \"config\": {{\"c_info\": {{\"type\": \"pvh\", \"name\": \"cfg\"}}}}}}]'\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&xl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = open(
        "cfg",
        &xs,
        XenEnv {
            xl_command: xl,
            ..quiet_env()
        },
    )
    .unwrap();
    let runs = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let planned = d.config_for_capture().unwrap();
    assert_eq!(runs(), 1);
    // The capture takes the kept copy: `xl list -l` does not run again.
    assert_eq!(d.config().unwrap(), planned);
    assert_eq!(runs(), 1);
    // Kept for one use only; and a balloon in between makes the capture fetch it anew.
    assert_eq!(d.config().unwrap(), planned);
    assert_eq!(runs(), 2);
    d.config_for_capture().unwrap();
    d.config_changed();
    d.config().unwrap();
    assert_eq!(runs(), 4);
}
