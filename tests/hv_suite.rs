//! The generic trait suite, run against the sim (the Xen back-end runs it in the test bed).

mod sim_util;

use sim_util::wait_for;
use xckpt::backend::sim::{AccessPattern, SimConfig, SimDomain, WorkloadSpec};
use xckpt::backend::suite;

fn sim(pages: u64) -> SimDomain {
    SimDomain::new(SimConfig::small(pages)).unwrap()
}

#[test]
fn observe_only_checks_pass_on_an_idle_sim() {
    let d = sim(1000);
    suite::check_pause(&d).unwrap();
    let map = suite::check_map(&d).unwrap();
    assert!(
        map.notes[0].starts_with("938 normal, 62 unpopulated, 0 other"),
        "{:?}",
        map.notes
    );
    let ld = suite::check_logdirty(&d).unwrap();
    assert!(
        ld.notes[0].contains("first CLEAN 0 pages, second 0"),
        "{:?}",
        ld.notes
    );
    suite::check_logdirty_exact(&d).unwrap();
    let all = suite::run_with_writer(&d, 3).unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["logdirty-exact", "pause", "map", "logdirty", "precopy"]
    );
    assert!(all[4]
        .to_string()
        .starts_with("precopy: ok\n  pass: copy equals memory"));
}

#[test]
fn checks_pass_with_writers_running() {
    let d = sim(4096);
    let spec = WorkloadSpec {
        pattern: AccessPattern::HotSet {
            hot_fraction: 0.1,
            hot_probability: 0.8,
        },
        rate_mib_s: 0.0,
    };
    d.start_workload_with(&spec, 2).unwrap();
    // The checks take milliseconds: let the writers get going first, or they may run against
    // an idle domain on a loaded machine.
    wait_for("the first write", || d.generation() > 0);
    suite::check_pause(&d).unwrap();
    suite::check_map(&d).unwrap();
    suite::check_logdirty(&d).unwrap();
    let r = suite::check_precopy(&d, 8).unwrap();
    assert_eq!(r.passed.len(), 1, "{r:?}");
    assert!(d.stop_workload() > 0);
}

#[test]
fn precopy_check_catches_a_lost_write() {
    // A domain whose CLEAN drops pfn 5: the check must notice.
    use xckpt::hv::{
        DirtyLog, Domain, DomainInfo, GuestMemory, HvError, MappedBatch, PageType, Pfn, PfnBitmap,
    };
    struct Lossy(SimDomain);
    impl Domain for Lossy {
        fn info(&self) -> Result<DomainInfo, HvError> {
            self.0.info()
        }
        fn pause(&self) -> Result<(), HvError> {
            self.0.write_page(5, &[0xab; 4096]).unwrap();
            self.0.pause()
        }
        fn unpause(&self) -> Result<(), HvError> {
            self.0.unpause()
        }
        fn name(&self) -> String {
            self.0.name()
        }
    }
    impl DirtyLog for Lossy {
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
            let n = self.0.logdirty_clean(into)?;
            let lost = u64::from(into.replace(5, false));
            Ok(n - lost)
        }
    }
    impl GuestMemory for Lossy {
        fn page_types(&self, pfns: &[Pfn], out: &mut [PageType]) -> Result<(), HvError> {
            self.0.page_types(pfns, out)
        }
        fn map_batch<'a>(&'a self, pfns: &[Pfn]) -> Result<Box<dyn MappedBatch + 'a>, HvError> {
            self.0.map_batch(pfns)
        }
    }
    let e = suite::check_precopy(&Lossy(sim(64)), 2).unwrap_err();
    assert!(e.contains("1 pfns differ, first Some(5)"), "{e}");
}
