//! The generic hypervisor conformance checks (`backend::suite`) run against the Xen back-end on
//! xen-sys's fake hypervisor, with a writer that writes pages the way the guest would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use xckpt::backend::suite::{self, PageWriter};
use xckpt::backend::xen::{XenDomain, XenEnv};
use xckpt::hv::{
    DirtyLog, Domain, DomainInfo, GuestMemory, HvError, MappedBatch, PageType, Pfn, PfnBitmap,
};
use xen_sys::fake::{self, FakeDomainSpec};
use xen_sys::{ForeignMemory, XenCtrl};
use xenstore_rs::Xs;

#[derive(Clone, Default)]
struct MapXs(Arc<Mutex<BTreeMap<String, String>>>);

impl Xs for MapXs {
    fn directory(&self, _: &str) -> std::io::Result<Vec<Box<str>>> {
        Ok(Vec::new())
    }
    fn read(&self, path: &str) -> std::io::Result<Box<str>> {
        let m = self.0.lock().unwrap();
        m.get(path)
            .map(|s| s.as_str().into())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn write(&self, path: &str, data: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().insert(path.into(), data.into());
        Ok(())
    }
    fn rm(&self, path: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().remove(path);
        Ok(())
    }
}

/// The Xen back-end plus a page writer standing in for the guest's vCPUs.
struct Guest(XenDomain);

impl Domain for Guest {
    fn info(&self) -> Result<DomainInfo, HvError> {
        self.0.info()
    }
    fn pause(&self) -> Result<(), HvError> {
        self.0.pause()
    }
    fn unpause(&self) -> Result<(), HvError> {
        self.0.unpause()
    }
    fn name(&self) -> String {
        self.0.name()
    }
}

impl DirtyLog for Guest {
    fn logdirty_enable(&self) -> Result<(), HvError> {
        self.0.logdirty_enable()
    }
    fn logdirty_disable(&self) -> Result<(), HvError> {
        self.0.logdirty_disable()
    }
    fn logdirty_enabled(&self) -> Result<bool, HvError> {
        self.0.logdirty_enabled()
    }
    fn logdirty_clean(&self, into: &mut PfnBitmap) -> Result<u64, HvError> {
        self.0.logdirty_clean(into)
    }
}

impl GuestMemory for Guest {
    fn page_types(&self, pfns: &[Pfn], out: &mut [PageType]) -> Result<(), HvError> {
        self.0.page_types(pfns, out)
    }
    fn counted_pages(&self) -> Result<Option<u64>, HvError> {
        self.0.counted_pages()
    }
    fn map_batch<'a>(&'a self, pfns: &[Pfn]) -> Result<Box<dyn MappedBatch + 'a>, HvError> {
        self.0.map_batch(pfns)
    }
}

impl PageWriter for Guest {
    fn write_page(&self, pfn: Pfn, data: &[u8]) -> Result<(), String> {
        fake::write_page(self.0.domid(), pfn, data);
        Ok(())
    }
}

fn guest(domid: u32) -> Guest {
    let mut uuid = [0u8; 16];
    uuid[0] = domid as u8;
    fake::add_domain(FakeDomainSpec {
        domid,
        uuid,
        hvm: true,
        pfn_count: 2500,
        vcpus: 2,
        unpopulated: (1000..1100).collect(),
        broken: vec![],
        logdirty_errno: None,
        ..Default::default()
    });
    for pfn in (0..2500).step_by(7).filter(|p| !(1000..1100).contains(p)) {
        fake::write_page(domid, pfn, &vec![(pfn % 251) as u8; 4096]);
    }
    let xs = MapXs::default();
    xs.write(&format!("/libxl/{domid}/type"), "pvh").unwrap();
    let d = XenDomain::open_with(
        XenCtrl::open_fake(),
        ForeignMemory::open_fake(),
        Box::new(xs),
        XenEnv {
            watchdog_exe: None,
            suspend: false,
            xenstored_resume: false,
            proc_root: None,
            ..XenEnv::default()
        },
        &domid.to_string(),
    )
    .unwrap();
    Guest(d)
}

#[test]
fn suite_checks_pass_on_the_fake_hypervisor() {
    let g = guest(301);
    let reports = suite::run_with_writer(&g, 3).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["logdirty-exact", "pause", "map", "logdirty", "precopy"]
    );
    for r in &reports {
        eprintln!("{r}");
    }
    assert_eq!(
        fake::pause_count(301),
        0,
        "the suite leaves the domain running"
    );
    assert!(!fake::logdirty_on(301), "the suite leaves log-dirty off");
}
