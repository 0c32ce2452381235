//! Stopping a PVH/HVM guest at a consistent instant, the way `xl save -c` does.
//!
//! A plain `xc_domain_pause` freezes the vCPUs, but a guest restored from such an image into a
//! new domain finds its event channels, grant tables and xenstore connection gone, and hangs.
//! So, like libxl's save, xckpt asks the guest to suspend (xenstore `control/shutdown` =
//! `suspend`): its PV drivers quiesce and it shuts down with `SHUTDOWN_suspend`. The image is
//! taken then. The original resumes with `xc_domain_resume(fast)`, which tells the guest its
//! suspend was cancelled, so it carries on in place; a restored copy sees a completed suspend
//! and reconnects its devices.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xen_sys::abi::{
    XcDomainInfo, SHUTDOWN_SUSPEND, XEN_DOMINF_SHUTDOWN, XEN_DOMINF_SHUTDOWNMASK,
    XEN_DOMINF_SHUTDOWNSHIFT,
};

use super::{op_err, XenDomain};
use crate::hv::{Domain, HvError};

/// How long a guest may take to suspend.
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a guest that took the suspend request (its drivers cleared `control/shutdown`)
/// may still take to get there after `SUSPEND_TIMEOUT`: it is then resumed like any other.
const SUSPEND_LATE: Duration = Duration::from_secs(60);
/// After withdrawing an untaken request, how long to watch for a guest that took it meanwhile.
const SUSPEND_RACE: Duration = Duration::from_secs(2);

/// Whether `info` is of a domain shut down for suspend.
pub fn is_suspended(info: &XcDomainInfo) -> bool {
    info.flags & XEN_DOMINF_SHUTDOWN != 0
        && (info.flags >> XEN_DOMINF_SHUTDOWNSHIFT) & XEN_DOMINF_SHUTDOWNMASK == SHUTDOWN_SUSPEND
}

impl XenDomain {
    fn control_path(&self) -> String {
        format!("/local/domain/{}/control/shutdown", self.domid)
    }

    /// Ask the guest to suspend and wait until Xen reports it suspended.
    pub(crate) fn suspend_guest(&self) -> Result<(), HvError> {
        let path = self.control_path();
        self.with_xs(|xs| xs.write(&path, "suspend")).map_err(|e| {
            HvError::op(self.name(), "suspend", format!("cannot write {path}: {e}"))
        })?;
        let t0 = Instant::now();
        loop {
            if is_suspended(&self.xc_info()?) {
                self.suspended.store(true, Ordering::SeqCst);
                return Ok(());
            }
            if t0.elapsed() > SUSPEND_TIMEOUT {
                // The guest's drivers clear the node when they take the request: one that took
                // it is suspending and will get there, and must not be left suspended after we
                // gave up, so wait for it (bounded) and go on as if it had been on time.
                let taken = self
                    .with_xs(|xs| xs.read(&path))
                    .is_ok_and(|v| v.trim_end_matches('\0').is_empty());
                let _ = self.with_xs(|xs| xs.write(&path, ""));
                if self.suspended_within(if taken { SUSPEND_LATE } else { SUSPEND_RACE })? {
                    self.suspended.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                return Err(HvError::op(
                    self.name(),
                    "suspend",
                    format!(
                        "the guest did not suspend within {} s; it needs Xen PV drivers \
                         (xenbus) that answer control/shutdown, and must not be hung",
                        SUSPEND_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Whether the guest is (or gets) suspended within `grace`.
    fn suspended_within(&self, grace: Duration) -> Result<bool, HvError> {
        let t0 = Instant::now();
        loop {
            if is_suspended(&self.xc_info()?) {
                return Ok(true);
            }
            if t0.elapsed() > grace {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resume a suspended guest in place (its suspend returns "cancelled"), and tell xenstored.
    pub(crate) fn resume_guest(&self) -> Result<(), HvError> {
        self.xc
            .resume_cancelled(self.domid)
            .map_err(op_err(self, "resume"))?;
        self.suspended.store(false, Ordering::SeqCst);
        if self.env.xenstored_resume {
            if let Err(e) = tell_xenstored_resumed(self.domid) {
                eprintln!(
                    "xckpt: warning: domain {} runs again, but xenstored was not told ({e}); \
                     a later `xl save`/`xl migrate` of it may time out waiting for its suspend",
                    self.name()
                );
            }
        }
        Ok(())
    }
}

/// xenstored's `XS_RESUME` and `XS_ERROR` message types (xen/io/xs_wire.h).
const XS_RESUME: u32 = 18;
const XS_ERROR: u32 = 16;

/// Tell xenstored that `domid` runs again after a suspend, as libxl does after `xl save -c`.
///
/// xenstored fires `@releaseDomain` only on a domain's *first* shutdown until it hears
/// `XS_RESUME`; without it, the next `xl save`/`xl migrate` waits for a watch that never fires
/// and fails with "guest did not suspend". xenstore-rs does not expose this message, so it is
/// sent here over a connection of its own.
pub fn tell_xenstored_resumed(domid: u32) -> io::Result<()> {
    let socket = std::env::var("XENSTORED_PATH").unwrap_or_else(|_| "/run/xenstored/socket".into());
    match UnixStream::connect(&socket) {
        Ok(mut s) => send_resume(&mut s, domid),
        Err(_) => send_resume(
            &mut std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/xen/xenbus")?,
            domid,
        ),
    }
}

/// Send `XS_RESUME domid` on `conn` and read the acknowledgement.
fn send_resume(conn: &mut (impl Read + Write), domid: u32) -> io::Result<()> {
    let payload = format!("{domid}\0");
    let mut msg = Vec::with_capacity(16 + payload.len());
    for word in [XS_RESUME, 0, 0, payload.len() as u32] {
        msg.extend_from_slice(&word.to_ne_bytes());
    }
    msg.extend_from_slice(payload.as_bytes());
    conn.write_all(&msg)?;
    let mut header = [0u8; 16];
    conn.read_exact(&mut header)?;
    let word = |i: usize| u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
    let mut body = vec![0u8; word(3).min(4096) as usize];
    conn.read_exact(&mut body)?;
    match word(0) {
        XS_RESUME => Ok(()),
        XS_ERROR => Err(io::Error::other(format!(
            "xenstored refused XS_RESUME: {}",
            String::from_utf8_lossy(&body).trim_end_matches('\0')
        ))),
        t => Err(io::Error::other(format!(
            "xenstored answered XS_RESUME with message type {t}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-message xenstored on the other end of a socket pair.
    fn answer(
        reply_type: u32,
        reply: &'static [u8],
    ) -> (UnixStream, std::thread::JoinHandle<Vec<u8>>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut header = [0u8; 16];
            theirs.read_exact(&mut header).unwrap();
            let len = u32::from_ne_bytes(header[12..16].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            theirs.read_exact(&mut body).unwrap();
            let mut out = Vec::new();
            for word in [reply_type, 0, 0, reply.len() as u32] {
                out.extend_from_slice(&word.to_ne_bytes());
            }
            out.extend_from_slice(reply);
            theirs.write_all(&out).unwrap();
            [&header[..], &body[..]].concat()
        });
        (ours, peer)
    }

    #[test]
    fn sends_xs_resume_with_the_domid() {
        let (mut conn, peer) = answer(XS_RESUME, b"OK\0");
        send_resume(&mut conn, 7).unwrap();
        let seen = peer.join().unwrap();
        assert_eq!(
            u32::from_ne_bytes(seen[0..4].try_into().unwrap()),
            XS_RESUME
        );
        assert_eq!(&seen[16..], b"7\0");
    }

    #[test]
    fn reports_xenstored_errors() {
        let (mut conn, peer) = answer(XS_ERROR, b"EINVAL\0");
        let e = send_resume(&mut conn, 0).unwrap_err();
        peer.join().unwrap();
        assert!(e.to_string().contains("EINVAL"), "{e}");
    }
}
