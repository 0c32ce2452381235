//! A domain is never left paused, even if xckpt is killed with SIGKILL.
//!
//! Before its first pause, a capture starts a small watchdog process (the same `xckpt` binary,
//! hidden verb `__watchdog DOMID`) in its own process group, so a Ctrl-C aimed at xckpt does
//! not reach it. The two share a pipe: xckpt writes `P` just before it pauses the domain and
//! `U` just after it unpaused it. The watchdog reads until end of file, which comes when
//! xckpt exits for whatever reason. If the last byte it saw was `P`, xckpt died with the
//! domain paused, and the watchdog unpauses it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Sent before pausing.
const PAUSING: u8 = b'P';
/// Sent after unpausing.
const RESUMED: u8 = b'U';

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

    /// Tell the watchdog a pause is about to happen. An error means it is gone: do not pause.
    pub fn pausing(&mut self) -> std::io::Result<()> {
        self.send(PAUSING)
    }

    /// Tell the watchdog the domain runs again.
    pub fn resumed(&mut self) -> std::io::Result<()> {
        self.send(RESUMED)
    }

    fn send(&mut self, b: u8) -> std::io::Result<()> {
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

/// The watchdog process: read the pipe until xckpt exits, then unpause if needed. `unpause`
/// is called at most once. Returns the process exit code.
pub fn run(domid: u32, mut input: impl Read, unpause: impl FnOnce() -> Result<(), String>) -> i32 {
    // SIGINT/SIGTERM meant for xckpt must not end the watchdog before xckpt is gone.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Default::default());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Default::default());
    let mut last = RESUMED;
    let mut buf = [0u8; 64];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(&b) = buf[..n]
                    .iter()
                    .rev()
                    .find(|&&b| b == PAUSING || b == RESUMED)
                {
                    last = b;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if last != PAUSING {
        return 0;
    }
    match unpause() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpauses_only_after_an_unmatched_pause() {
        let mut calls = 0;
        assert_eq!(
            run(7, &b"PUPU"[..], || {
                calls += 1;
                Ok(())
            }),
            0
        );
        assert_eq!(calls, 0);
        assert_eq!(
            run(7, &b"PUP"[..], || {
                calls += 1;
                Ok(())
            }),
            0
        );
        assert_eq!(calls, 1);
        assert_eq!(
            run(7, &b""[..], || {
                calls += 1;
                Ok(())
            }),
            0
        );
        assert_eq!(calls, 1);
        assert_eq!(run(7, &b"P"[..], || Err("nope".into())), 1);
    }
}
