//! A domain is never left paused, even if xckpt is killed with SIGKILL.
//!
//! Before its first pause, a capture starts a small watchdog process (the same `xckpt` binary,
//! hidden verb `__watchdog DOMID`) in its own process group, so a Ctrl-C aimed at xckpt does
//! not reach it. The two share a pipe: xckpt writes `P` just before it pauses the domain and
//! `U` just after it unpaused it (`S` instead of `P` when it suspends the guest). The watchdog
//! reads until end of file, which comes when xckpt exits for whatever reason. If the last byte
//! it saw was `P` or `S`, xckpt died with the domain stopped, and the watchdog undoes that.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Sent before pausing the vCPUs.
pub const PAUSING: u8 = b'P';
/// Sent before asking the guest to suspend.
pub const SUSPENDING: u8 = b'S';
/// Sent after the domain runs again.
pub const RESUMED: u8 = b'U';

fn is_state(b: u8) -> bool {
    matches!(b, PAUSING | SUSPENDING | RESUMED)
}

/// The xckpt side of the watchdog.
pub struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Start `exe __watchdog <domid>` watching this process.
    pub fn spawn(exe: &Path, domid: u32) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .arg("__watchdog")
            .arg(domid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("watchdog has no stdin"))?;
        Ok(Watchdog {
            child,
            pipe: Some(pipe),
        })
    }

    /// Tell the watchdog the domain's state ([`PAUSING`], [`SUSPENDING`] or [`RESUMED`]).
    /// An error before stopping the domain means the watchdog is gone: do not stop it.
    pub fn announce(&mut self, b: u8) -> std::io::Result<()> {
        let pipe = self
            .pipe
            .as_mut()
            .ok_or_else(|| std::io::Error::other("watchdog closed"))?;
        pipe.write_all(&[b])?;
        pipe.flush()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe ends the watchdog; after a `U` it exits without touching the domain.
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// The watchdog process: read the pipe until xckpt exits; if xckpt died with the domain
/// stopped, call `undo` once with how it was stopped ([`PAUSING`] or [`SUSPENDING`]). Returns
/// the process exit code.
pub fn run<E: std::fmt::Display>(
    domid: u32,
    mut input: impl Read,
    undo: impl FnOnce(u8) -> Result<(), E>,
) -> i32 {
    // SIGINT/SIGTERM meant for xckpt must not end the watchdog before xckpt is gone.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Default::default());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Default::default());
    let mut last = RESUMED;
    let mut buf = [0u8; 64];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(&b) = buf[..n].iter().rev().find(|&&b| is_state(b)) {
                    last = b;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if last == RESUMED {
        return 0;
    }
    match undo(last) {
        Ok(()) => {
            eprintln!("xckpt watchdog: xckpt died while domain {domid} was paused; unpaused it");
            0
        }
        Err(e) => {
            eprintln!("xckpt watchdog: xckpt died while domain {domid} was paused and unpausing failed: {e}; run `xl unpause {domid}`");
            1
        }
    }
}

/// Why a dead xckpt's stop could not be undone.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// A libxenctrl call failed.
    #[error(transparent)]
    Xen(#[from] xen_sys::XenError),
    /// The domain no longer exists.
    #[error("the domain is gone")]
    Gone,
    /// The guest runs again, but xenstored did not hear of it.
    #[error("resumed, but xenstored was not told: {0}")]
    NotTold(#[source] std::io::Error),
    /// Withdrawing the suspend request through xenstore failed.
    #[error(transparent)]
    Xenstore(std::io::Error),
}

/// Undo a stop of `domid` left behind by a dead xckpt: unpause after [`PAUSING`]; after
/// [`SUSPENDING`], wait for the guest to finish suspending and resume it in place (or withdraw
/// the suspend request if it never suspends).
pub fn undo_stop(domid: u32, how: u8) -> Result<(), UndoError> {
    use xenstore_rs::Xs;
    let xc = xen_sys::XenCtrl::open()?;
    if how == PAUSING {
        return Ok(xc.unpause(domid)?);
    }
    let t0 = std::time::Instant::now();
    while t0.elapsed() < super::suspend::SUSPEND_TIMEOUT {
        let info = xc.domain_info(domid)?.ok_or(UndoError::Gone)?;
        if super::suspend::is_suspended(&info) {
            xc.resume_cancelled(domid)?;
            return super::suspend::tell_xenstored_resumed(domid).map_err(UndoError::NotTold);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let xs = xenstore_rs::unix::XsUnix::new().map_err(UndoError::Xenstore)?;
    xs.write(&format!("/local/domain/{domid}/control/shutdown"), "")
        .map_err(UndoError::Xenstore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoes_only_an_unmatched_stop_and_says_how() {
        let mut seen = Vec::new();
        let mut undo = |b| {
            seen.push(b);
            Ok::<(), String>(())
        };
        assert_eq!(run(7, &b"PUSU"[..], &mut undo), 0);
        assert_eq!(run(7, &b"PUP"[..], &mut undo), 0);
        assert_eq!(run(7, &b"SUS"[..], &mut undo), 0);
        assert_eq!(run(7, &b""[..], &mut undo), 0);
        assert_eq!(seen, vec![PAUSING, SUSPENDING]);
        assert_eq!(run(7, &b"P"[..], |_| Err("nope")), 1);
    }
}
