//! The pause guard: a paused domain is always unpaused.
//!
//! [`PauseGuard::pause`] pauses a domain and registers it in a process-wide registry;
//! [`PauseGuard::resume`] (or dropping the guard, also while a panic unwinds) unpauses it,
//! retrying a failed unpause a few times. The measured downtime runs from the pause request
//! (after [`Domain::before_pause`], whose checks run while the guest still does) to the instant
//! `unpause` returned.
//!
//! Signals. The first guard lazily starts a signal thread (signal-hook's iterator) for SIGINT
//! and SIGTERM. What it does depends on the mode:
//!
//! * default: unpause every registered domain, then exit the process with `128 + signo` (130
//!   for SIGINT, 143 for SIGTERM), whether or not anything was paused: the signal still ends
//!   the process, with the code a shell shows for a signal death.
//! * after [`install_handlers`] (the capture engine's opt-in): the first signal sets
//!   [`interrupted`] and unpauses every registered domain, but does not exit, so a pre-copy
//!   loop can notice the flag and abort cleanly; a second signal exits as above.
//!
//! The registry lock is held while a guard pauses and registers, while it unregisters and
//! unpauses, and by the signal thread from draining the registry to exiting. So a domain is never
//! paused without being registered, an unpause is never done twice, and no new pause starts
//! once the handler has decided to exit. After the handler unpaused a guard's domain, that
//! guard's `resume` returns an error saying so and its drop does nothing; once [`interrupted`]
//! is set, new pauses are refused.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{Domain, HvError};

/// Attempts made to unpause before giving up.
const UNPAUSE_ATTEMPTS: u32 = 4;

struct Registry {
    next_id: u64,
    paused: Vec<(u64, Arc<dyn Domain>)>,
}

impl Registry {
    /// Record `dom`, whose pause was asked for at `at.0` and took effect at `at.1`, and return
    /// the guard that unpauses it.
    fn guard(&mut self, dom: Arc<dyn Domain>, at: (Instant, Instant)) -> PauseGuard {
        let (asked_at, paused_at) = at;
        let id = self.next_id;
        self.next_id += 1;
        self.paused.push((id, Arc::clone(&dom)));
        PauseGuard {
            dom,
            id,
            asked_at,
            paused_at,
            released: false,
        }
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 0,
    paused: Vec::new(),
});
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static FLAG_MODE: AtomicBool = AtomicBool::new(false);
static SIGNALS_SEEN: AtomicU32 = AtomicU32::new(0);
static SIGNAL_THREAD: OnceLock<Result<(), String>> = OnceLock::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether SIGINT or SIGTERM arrived since the signal thread started.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Opt into "flag, don't exit": from now on the first SIGINT/SIGTERM sets [`interrupted`] and
/// unpauses every domain paused by a guard, and only a second one exits the process.
pub fn install_handlers() -> Result<(), HvError> {
    FLAG_MODE.store(true, Ordering::SeqCst);
    ensure_signal_thread()
}

fn ensure_signal_thread() -> Result<(), HvError> {
    let started = SIGNAL_THREAD.get_or_init(|| {
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("xckpt-signals".into())
            .spawn(move || {
                for signo in signals.forever() {
                    on_signal(signo);
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    started.clone().map_err(|reason| {
        HvError::Unavailable(format!(
            "cannot install the SIGINT/SIGTERM handler that unpauses domains: {reason}"
        ))
    })
}

fn on_signal(signo: i32) {
    let seen = SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst) + 1;
    let mut reg = registry();
    unpause_all(&mut reg, &format!("signal {signo}"));
    if !FLAG_MODE.load(Ordering::SeqCst) || seen >= 2 {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // The registry lock is still held: no new pause can start before the process ends.
        std::process::exit(128 + signo);
    }
    drop(reg);
}

/// Set [`interrupted`] and unpause every registered domain, each with a line on stderr that
/// starts with `why`.
fn unpause_all(reg: &mut Registry, why: &str) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    for (_, dom) in reg.paused.drain(..) {
        // Not `eprintln!`, which panics where stderr is gone (a served command's client):
        // the next domain must still be unpaused.
        let _ = match unpause_with_retries(&*dom) {
            Ok(()) => writeln!(
                std::io::stderr(),
                "xckpt: {why}: unpaused domain {}",
                dom.name()
            ),
            Err(e) => writeln!(
                std::io::stderr(),
                "xckpt: {why}: {e}; unpause it by hand (`xl unpause {}`)",
                dom.name()
            ),
        };
    }
}

/// Interrupt the command running in this process as a first SIGINT would in flag mode, from
/// inside it (`xckpt serve`, whose client went away): set [`interrupted`] and unpause every
/// registered domain. The process goes on.
pub fn interrupt(why: &str) {
    unpause_all(&mut registry(), why);
}

/// Forget an interruption, before the next command of a process that runs one after another
/// (`xckpt serve`). A domain paused meanwhile was unpaused by the interruption itself.
pub fn reset_interrupted() {
    let _reg = registry();
    INTERRUPTED.store(false, Ordering::SeqCst);
    SIGNALS_SEEN.store(0, Ordering::SeqCst);
}

fn unpause_with_retries(dom: &dyn Domain) -> Result<(), HvError> {
    let mut attempt = 1;
    loop {
        match dom.unpause() {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= UNPAUSE_ATTEMPTS => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10 << attempt)),
        }
        attempt += 1;
    }
}

/// A paused domain, unpaused by [`PauseGuard::resume`] or on drop.
pub struct PauseGuard {
    dom: Arc<dyn Domain>,
    id: u64,
    /// When the pause was asked for: the downtime counts from here.
    asked_at: Instant,
    /// When the pause call returned (every vCPU stopped): a group's skew counts these.
    paused_at: Instant,
    released: bool,
}

impl PauseGuard {
    /// Pause `dom` and remember it so that it is unpaused whatever happens. Refused once
    /// [`interrupted`] is set.
    pub fn pause(dom: Arc<dyn Domain>) -> Result<PauseGuard, HvError> {
        if let Err(e) = ensure_signal_thread() {
            eprintln!("xckpt: warning: {e}");
        }
        dom.before_pause()?;
        let mut reg = registry();
        if interrupted() {
            return Err(HvError::op(
                dom.name(),
                "pause",
                "interrupted by SIGINT/SIGTERM",
            ));
        }
        let asked = Instant::now();
        dom.pause()?;
        Ok(reg.guard(dom, (asked, Instant::now())))
    }

    /// Pause every domain of `doms` at once, one thread each, so the pauses overlap (a group
    /// checkpoint: the skew between the first and the last is one pause, not their sum). The
    /// registry lock is held across all of them, as [`PauseGuard::pause`] holds it across one.
    /// Returns one result per domain, in order; the guards of the ones that paused unpause
    /// them when dropped.
    pub fn pause_all(doms: Vec<Arc<dyn Domain>>) -> Vec<Result<PauseGuard, HvError>> {
        if let Err(e) = ensure_signal_thread() {
            eprintln!("xckpt: warning: {e}");
        }
        // Every member's checks first, so that they add nothing to the skew between pauses.
        let ready: Vec<Result<(), HvError>> = doms.iter().map(|d| d.before_pause()).collect();
        let mut reg = registry();
        if interrupted() {
            return doms
                .iter()
                .map(|d| {
                    Err(HvError::op(
                        d.name(),
                        "pause",
                        "interrupted by SIGINT/SIGTERM",
                    ))
                })
                .collect();
        }
        let paused: Vec<Result<(Instant, Instant), HvError>> = std::thread::scope(|s| {
            let threads: Vec<_> = doms
                .iter()
                .zip(ready)
                .map(|(d, ready)| {
                    s.spawn(move || {
                        ready?;
                        let asked = Instant::now();
                        d.pause().map(|()| (asked, Instant::now()))
                    })
                })
                .collect();
            threads
                .into_iter()
                .zip(&doms)
                .map(|(t, d)| {
                    t.join().unwrap_or_else(|_| {
                        Err(HvError::op(
                            d.name(),
                            "pause",
                            "the pausing thread panicked",
                        ))
                    })
                })
                .collect()
        });
        doms.into_iter()
            .zip(paused)
            .map(|(dom, at)| Ok(reg.guard(dom, at?)))
            .collect()
    }

    /// Unpause every guard's domain at once, one thread each; each one's downtime (from its
    /// pause request to its own unpause, as [`PauseGuard::resume`]), in order.
    pub fn resume_all(guards: Vec<PauseGuard>) -> Vec<Result<Duration, HvError>> {
        let mut reg = registry();
        let mut owned = Vec::new();
        for mut g in guards {
            g.released = true;
            let at = reg.paused.iter().position(|(id, _)| *id == g.id);
            owned.push((at.map(|i| reg.paused.swap_remove(i).1), g));
        }
        std::thread::scope(|s| {
            let threads: Vec<_> = owned
                .iter()
                .map(|(dom, g)| {
                    s.spawn(move || match dom {
                        Some(d) => unpause_with_retries(&**d).map(|()| g.asked_at.elapsed()),
                        None => Err(HvError::op(
                            g.dom.name(),
                            "resume",
                            "interrupted: the signal handler already unpaused the domain",
                        )),
                    })
                })
                .collect();
            threads
                .into_iter()
                .zip(&owned)
                .map(|(t, (_, g))| {
                    t.join().unwrap_or_else(|_| {
                        Err(HvError::op(
                            g.dom.name(),
                            "resume",
                            "the resuming thread panicked",
                        ))
                    })
                })
                .collect()
        })
    }

    /// When the pause took effect.
    pub fn paused_at(&self) -> Instant {
        self.paused_at
    }

    /// The paused domain.
    pub fn domain(&self) -> &Arc<dyn Domain> {
        &self.dom
    }

    /// Unpause and return the downtime: from the pause request (after [`Domain::before_pause`])
    /// to the unpause's return. The guest stops somewhere inside the pause call, which waits
    /// until every vCPU is off its CPU (under the test bed's TCG 40-100 ms for a PVH guest,
    /// about 235 ms for an HVM one), so the figure counts that call whole rather than none of
    /// it. The guest may still see a little more: its vCPU runs again some time after the
    /// unpause returns.
    pub fn resume(mut self) -> Result<Duration, HvError> {
        self.released = true;
        self.release()?;
        Ok(self.asked_at.elapsed())
    }

    fn release(&self) -> Result<(), HvError> {
        let mut reg = registry();
        let Some(at) = reg.paused.iter().position(|(id, _)| *id == self.id) else {
            return Err(HvError::op(
                self.dom.name(),
                "resume",
                "interrupted: the signal handler already unpaused the domain",
            ));
        };
        let (_, dom) = reg.paused.swap_remove(at);
        unpause_with_retries(&*dom)
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        match self.release() {
            Ok(()) => {}
            Err(HvError::Op { op: "resume", .. }) => {}
            Err(e) => eprintln!(
                "xckpt: domain {} may still be paused: {e}; unpause it with `xl unpause {}`",
                self.dom.name(),
                self.dom.name()
            ),
        }
    }
}

impl std::fmt::Debug for PauseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PauseGuard")
            .field("domain", &self.dom.name())
            .field("asked_at", &self.asked_at)
            .field("paused_at", &self.paused_at)
            .finish()
    }
}
