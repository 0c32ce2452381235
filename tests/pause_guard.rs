//! The pause guard: unpause on resume, early return, panic, failing unpause, and signals
//! (in child processes running this binary).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xckpt::backend::sim::{SimConfig, SimDomain};
use xckpt::hv::pause::{self, PauseGuard};
use xckpt::hv::{Domain, DomainInfo, HvError};

fn sim() -> Arc<SimDomain> {
    Arc::new(SimDomain::new(SimConfig::small(64)).unwrap())
}

fn paused(d: &SimDomain) -> bool {
    d.info().unwrap().paused
}

#[test]
fn resume_unpauses_and_measures() {
    let d = sim();
    let g = PauseGuard::pause(d.clone()).unwrap();
    assert!(paused(&d));
    assert!(g.paused_at() <= Instant::now());
    let downtime = g.resume().unwrap();
    assert!(!paused(&d));
    assert!(downtime > Duration::ZERO);
}

fn fails_while_paused(d: Arc<SimDomain>) -> Result<(), String> {
    let _g = PauseGuard::pause(d).map_err(|e| e.to_string())?;
    Err("copy failed".to_string())?;
    Ok(())
}

#[test]
fn early_return_unpauses() {
    let d = sim();
    assert!(fails_while_paused(d.clone()).is_err());
    assert!(!paused(&d));
}

#[test]
fn panic_unpauses() {
    let d = sim();
    let d2 = d.clone();
    let r = std::panic::catch_unwind(move || {
        let _g = PauseGuard::pause(d2).unwrap();
        panic!("boom while paused");
    });
    assert!(r.is_err());
    assert!(!paused(&d));
}

#[test]
fn nested_guards_unpause_in_turn() {
    let d = sim();
    let a = PauseGuard::pause(d.clone()).unwrap();
    let b = PauseGuard::pause(d.clone()).unwrap();
    b.resume().unwrap();
    assert!(paused(&d));
    drop(a);
    assert!(!paused(&d));
}

/// A domain whose first `fail` unpauses fail.
struct Flaky {
    inner: SimDomain,
    fail: u32,
    unpauses: AtomicU32,
}

impl Domain for Flaky {
    fn info(&self) -> Result<DomainInfo, HvError> {
        self.inner.info()
    }
    fn pause(&self) -> Result<(), HvError> {
        self.inner.pause()
    }
    fn unpause(&self) -> Result<(), HvError> {
        if self.unpauses.fetch_add(1, Ordering::SeqCst) < self.fail {
            return Err(HvError::op("flaky", "unpause", "EAGAIN"));
        }
        self.inner.unpause()
    }
    fn name(&self) -> String {
        "flaky".into()
    }
}

fn flaky(fail: u32) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: SimDomain::new(SimConfig::small(16)).unwrap(),
        fail,
        unpauses: AtomicU32::new(0),
    })
}

#[test]
fn failed_unpause_is_retried() {
    let d = flaky(2);
    PauseGuard::pause(d.clone()).unwrap().resume().unwrap();
    assert_eq!(d.unpauses.load(Ordering::SeqCst), 3);
    assert!(!d.inner.info().unwrap().paused);
}

#[test]
fn persistent_unpause_failure_is_reported_not_panicked() {
    let d = flaky(100);
    let e = PauseGuard::pause(d.clone()).unwrap().resume().unwrap_err();
    assert!(matches!(e, HvError::Op { op: "unpause", .. }), "{e}");
    drop(PauseGuard::pause(d.clone()).unwrap()); // Drop reports on stderr
    assert_eq!(d.unpauses.load(Ordering::SeqCst), 8);
}

/// A domain whose checks before a pause are counted, and refuse when `refuse` is set.
struct Checked {
    inner: SimDomain,
    refuse: bool,
    checks: AtomicU32,
    checked_while_paused: AtomicU32,
}

impl Domain for Checked {
    fn info(&self) -> Result<DomainInfo, HvError> {
        self.inner.info()
    }
    fn before_pause(&self) -> Result<(), HvError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.inner.info()?.paused {
            self.checked_while_paused.fetch_add(1, Ordering::SeqCst);
        }
        if self.refuse {
            return Err(HvError::op("checked", "checkpoint", "being saved by xl"));
        }
        Ok(())
    }
    fn pause(&self) -> Result<(), HvError> {
        self.inner.pause()
    }
    fn unpause(&self) -> Result<(), HvError> {
        self.inner.unpause()
    }
    fn name(&self) -> String {
        "checked".into()
    }
}

fn checked(refuse: bool) -> Arc<Checked> {
    Arc::new(Checked {
        inner: SimDomain::new(SimConfig::small(16)).unwrap(),
        refuse,
        checks: AtomicU32::new(0),
        checked_while_paused: AtomicU32::new(0),
    })
}

#[test]
fn checks_run_before_the_pause_and_a_refusal_pauses_nothing() {
    let ok = checked(false);
    PauseGuard::pause(ok.clone()).unwrap().resume().unwrap();
    assert_eq!(ok.checks.load(Ordering::SeqCst), 1);
    assert_eq!(ok.checked_while_paused.load(Ordering::SeqCst), 0);

    let no = checked(true);
    let e = PauseGuard::pause(no.clone()).unwrap_err();
    assert!(e.to_string().contains("being saved by xl"), "{e}");
    assert!(!no.inner.info().unwrap().paused);

    // A group: every member checked while running; the refused one is not paused, the others
    // are, and their guards unpause them.
    let (a, b) = (checked(false), checked(false));
    let members: Vec<Arc<dyn Domain>> = vec![a.clone(), no.clone(), b.clone()];
    let guards = PauseGuard::pause_all(members);
    assert!(guards[0].is_ok() && guards[1].is_err() && guards[2].is_ok());
    assert!(!no.inner.info().unwrap().paused);
    assert!(a.inner.info().unwrap().paused && b.inner.info().unwrap().paused);
    for d in [&a, &b] {
        assert_eq!(d.checked_while_paused.load(Ordering::SeqCst), 0);
    }
    drop(guards);
    assert!(!a.inner.info().unwrap().paused && !b.inner.info().unwrap().paused);
}

// ---- signals, in child processes ----

/// A domain that prints a line from its unpause path.
struct Loud(SimDomain);

impl Domain for Loud {
    fn info(&self) -> Result<DomainInfo, HvError> {
        self.0.info()
    }
    fn pause(&self) -> Result<(), HvError> {
        self.0.pause()
    }
    fn unpause(&self) -> Result<(), HvError> {
        let r = self.0.unpause();
        println!(
            "UNPAUSE ok={} paused_after={}",
            r.is_ok(),
            self.0.info().unwrap().paused
        );
        r
    }
    fn name(&self) -> String {
        self.0.name()
    }
}

fn signal_flag(path: &Path, content: &str) {
    std::fs::write(path.with_extension("tmp"), content).unwrap();
    std::fs::rename(path.with_extension("tmp"), path).unwrap();
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The child's side: does nothing unless run by `run_child`.
#[test]
fn signal_child() {
    let (Ok(mode), Ok(flag)) = (
        std::env::var("XCKPT_PAUSE_CHILD"),
        std::env::var("XCKPT_PAUSE_FLAG"),
    ) else {
        return;
    };
    let flag = PathBuf::from(flag);
    let d: Arc<dyn Domain> = Arc::new(Loud(SimDomain::new(SimConfig::small(64)).unwrap()));
    match mode.as_str() {
        "paused" => {
            let _g = PauseGuard::pause(d).unwrap();
            signal_flag(&flag, "1");
            sleep_forever();
        }
        "idle" => {
            PauseGuard::pause(d).unwrap().resume().unwrap();
            signal_flag(&flag, "1");
            sleep_forever();
        }
        "flag" => {
            pause::install_handlers().unwrap();
            let g = PauseGuard::pause(d.clone()).unwrap();
            signal_flag(&flag, "1");
            while !pause::interrupted() {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("INTERRUPTED paused={}", d.info().unwrap().paused);
            println!("RESUME err={}", g.resume().is_err());
            println!("PAUSE-AGAIN err={}", PauseGuard::pause(d).is_err());
            signal_flag(&flag, "2");
            sleep_forever();
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn wait_flag(path: &Path, want: &str) {
    let start = Instant::now();
    while std::fs::read_to_string(path).ok().as_deref() != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never reached {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run `signal_child` in `mode`, send `signals` (each after the flag file reads its index + 1),
/// and return (exit code, stdout).
fn run_child(mode: &str, signals: &[i32]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "signal_child", "--nocapture", "--test-threads=1"])
        .env("XCKPT_PAUSE_CHILD", mode)
        .env("XCKPT_PAUSE_FLAG", &flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for (i, &sig) in signals.iter().enumerate() {
        wait_flag(&flag, &(i + 1).to_string());
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code(), out)
}

#[test]
fn sigterm_while_paused_unpauses_then_exits() {
    let (code, out) = run_child("paused", &[libc::SIGTERM]);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{out}");
    assert!(out.contains("UNPAUSE ok=true paused_after=false"), "{out}");
}

#[test]
fn sigint_outside_a_pause_still_exits() {
    let (code, out) = run_child("idle", &[libc::SIGINT]);
    assert_eq!(code, Some(128 + libc::SIGINT), "{out}");
    assert_eq!(
        out.matches("UNPAUSE").count(),
        1,
        "only the guard's own unpause: {out}"
    );
}

#[test]
fn opted_in_first_signal_flags_and_unpauses_second_exits() {
    let (code, out) = run_child("flag", &[libc::SIGTERM, libc::SIGTERM]);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{out}");
    assert!(out.contains("UNPAUSE ok=true paused_after=false"), "{out}");
    assert!(out.contains("INTERRUPTED paused=false"), "{out}");
    assert!(out.contains("RESUME err=true"), "{out}");
    assert!(out.contains("PAUSE-AGAIN err=true"), "{out}");
}
