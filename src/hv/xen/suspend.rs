//! Stopping a PVH/HVM guest at a consistent instant, the way `xl save -c` does.
//!
//! A plain `xc_domain_pause` freezes the vCPUs, but a guest restored from such an image into a
//! new domain finds its event channels, grant tables and xenstore connection gone, and hangs.
//! So, like libxl's save, xckpt asks the guest to suspend (xenstore `control/shutdown` =
//! `suspend`): its PV drivers quiesce and it shuts down with `SHUTDOWN_suspend`. The image is
//! taken then. The original resumes with `xc_domain_resume(fast)`, which tells the guest its
//! suspend was cancelled, so it carries on in place; a restored copy sees a completed suspend
//! and reconnects its devices.

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
                let _ = self.with_xs(|xs| xs.write(&path, ""));
                if is_suspended(&self.xc_info()?) {
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

    /// Resume a suspended guest in place (its suspend returns "cancelled").
    pub(crate) fn resume_guest(&self) -> Result<(), HvError> {
        self.xc
            .resume_cancelled(self.domid)
            .map_err(op_err(self, "resume"))?;
        self.suspended.store(false, Ordering::SeqCst);
        Ok(())
    }
}
