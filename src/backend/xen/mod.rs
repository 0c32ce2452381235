//! The Xen back-end: PV, PVH and HVM guests through libxenctrl (`xen-sys`), xenstore, QMP
//! and `xl`.
//!
//! * [`XenDomain::open`] resolves a name, domid or uuid (xenstore `/local/domain/<id>/name`,
//!   the domain handle for uuids) and opens the control, foreign-memory and xenstore handles.
//!   On a host that is not a Xen dom0 it fails with one line saying so.
//! * Identity: the uuid comes from the domain handle; `instance` joins domid, uuid, the
//!   xenstore `vm` path and `/vm/<uuid>/start_time`, so it changes when the domain is re-created.
//! * Guest type: PV without `XEN_DOMINF_hvm_guest`; otherwise libxl's `/libxl/<domid>/type`
//!   (`pvh` or `hvm`; if absent, HVM when a device model is registered in xenstore). PV guests
//!   (64-bit only) go through their p2m ([`pv`]); their log-dirty needs a Xen built with shadow
//!   paging, without it [`crate::hv::HvError::LogDirtyUnsupported`] says so.
//! * Log-dirty (`dirty.rs`): `xc_shadow_control` / `xc_logdirty_control` with a hypercall bitmap.
//! * State (`state.rs`): the exact bodies of libxc's X86_TSC_INFO, HVM_CONTEXT, HVM_PARAMS,
//!   X86_CPUID_POLICY and X86_MSR_POLICY records, plus QEMU's device state over QMP ([`crate::libxl::qmp`])
//!   for HVM; the config is libxl's JSON as `xl list -l` prints it ([`crate::libxl::xl`]).

pub mod agent;
mod conflict;
mod dirty;
mod ident;
mod pv;
mod state;
pub mod suspend;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use xen_sys::{ForeignMemory, HypercallBitmap, XenCtrl, XenError};
use xenstore_rs::Xs;

use crate::hv::{Domain, DomainIdentity, DomainInfo, GuestType, HvError};

/// Where the back-end finds the tools around libxenctrl. [`Default`] is a stock Debian/Ubuntu
/// dom0 of any supported release (`xl` from `PATH`, else the release's `/usr/lib/xen-4.NN/bin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenEnv {
    /// The `xl` command (run as `xl list -l <domid>` for the config).
    pub xl_command: PathBuf,
    /// Directory of libxl's QMP sockets `qmp-libxl-<domid>`.
    pub qmp_dir: PathBuf,
    /// The `xckpt` binary to run as the pause watchdog (None: no watchdog, for tests only).
    pub watchdog_exe: Option<PathBuf>,
    /// Where to look for a concurrent `xl save` / `xl migrate` (None: do not look).
    pub proc_root: Option<PathBuf>,
    /// Stop the guest by a cooperative suspend, as `xl save -c` does (needed for an image that
    /// restores into a new domain); false pauses its vCPUs only.
    pub suspend: bool,
    /// Tell xenstored with `XS_RESUME` after resuming a suspended guest (off in tests, which
    /// have no xenstored).
    pub xenstored_resume: bool,
}

impl Default for XenEnv {
    fn default() -> Self {
        XenEnv {
            xl_command: PathBuf::from(crate::libxl::xl::STOCK_XL),
            qmp_dir: PathBuf::from("/var/run/xen"),
            watchdog_exe: std::env::current_exe().ok(),
            proc_root: Some(PathBuf::from("/proc")),
            suspend: true,
            xenstored_resume: true,
        }
    }
}

/// A xenstore connection the back-end can share between threads.
pub type XenStore = Box<dyn Xs + Send>;

/// A running PV, PVH or HVM domain on this Xen host.
pub struct XenDomain {
    xc: XenCtrl,
    fm: ForeignMemory,
    xs: Mutex<XenStore>,
    env: XenEnv,
    domid: u32,
    guest_type: GuestType,
    /// Identity at open time: the domain must stay this incarnation.
    identity: DomainIdentity,
    /// The log-dirty bitmap, allocated on the first CLEAN and re-sized if the pfn space grows.
    bitmap: Mutex<Option<HypercallBitmap>>,
    /// Whether this handle turned log-dirty on (and has not turned it off since).
    logdirty_ours: AtomicBool,
    /// The process that unpauses the domain if xckpt dies while it is paused.
    watchdog: Mutex<Option<watchdog::Watchdog>>,
    /// Whether this handle suspended the guest (and has not resumed it yet).
    suspended: AtomicBool,
    /// Pauses taken while the guest was already suspended by this handle: a suspend does not
    /// nest in Xen as a vCPU pause does, so the count is kept here and the guest resumes at the
    /// last matching unpause.
    nested_stops: AtomicU32,
    /// PV guests: the p2m as last read (refreshed at each log-dirty CLEAN).
    p2m: Mutex<Option<std::sync::Arc<crate::pv::P2m>>>,
    /// The config fetched for the disk plan, kept for the capture (see
    /// [`XenDomain::config_for_capture`]).
    config_kept: Mutex<Option<Vec<u8>>>,
    /// HVM: the QEMU session opened before a stop for its device state, kept until the stop
    /// is over (see [`MachineState::ready_for_stop`](crate::hv::MachineState::ready_for_stop)).
    qemu_session: Mutex<Option<crate::libxl::qmp::DeviceStateSession>>,
}

impl std::fmt::Debug for XenDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenDomain")
            .field("domid", &self.domid)
            .field("identity", &self.identity)
            .field("guest_type", &self.guest_type)
            .finish()
    }
}

/// Map a library failure to the back-end's error for domain `d` and operation `op`.
pub(crate) fn op_err<'d>(
    d: &'d XenDomain,
    op: &'static str,
) -> impl FnOnce(XenError) -> HvError + 'd {
    move |e| HvError::op(d.name(), op, e)
}

/// One running domain as `xckpt list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainSummary {
    /// Who it is.
    pub identity: DomainIdentity,
    /// PV, PVH or HVM.
    pub guest_type: GuestType,
    /// Memory in pages.
    pub tot_pages: u64,
}

/// This host's libxenctrl and xenstore, or one line saying which is missing.
fn host_handles() -> Result<(XenCtrl, xenstore_rs::unix::XsUnix), HvError> {
    let xc = XenCtrl::open().map_err(|e| HvError::Unavailable(e.to_string()))?;
    let xs = xenstore_rs::unix::XsUnix::new().map_err(|e| {
        HvError::Unavailable(format!(
            "cannot connect to xenstore (/run/xenstored/socket or /dev/xen/xenbus): {e}; \
             is xenstored running?"
        ))
    })?;
    Ok((xc, xs))
}

/// The domid of the live domain `spec` names (a name, a domid or a uuid) on this host.
pub fn domid_of(spec: &str) -> Result<u32, HvError> {
    let (xc, xs) = host_handles()?;
    ident::resolve(&xc, &xs, spec)
}

/// Every domain but dom0 on this host.
pub fn list_domains() -> Result<Vec<DomainSummary>, HvError> {
    let (xc, xs) = host_handles()?;
    let infos = xc
        .all_domains()
        .map_err(|e| HvError::op("*", "domain list", e))?;
    Ok(infos
        .iter()
        .filter(|i| i.domain != 0)
        .map(|i| DomainSummary {
            identity: ident::identity(&xs, i),
            guest_type: ident::guest_type(&xs, i),
            tot_pages: i.tot_pages,
        })
        .collect())
}

impl XenDomain {
    /// Open the domain named by `spec` (a name, a domid or a uuid) on this host.
    ///
    /// Fails with [`HvError::Unavailable`] (one line) when the Xen libraries are missing or this
    /// host is not a Xen dom0, and with [`HvError::NoSuchDomain`] when nothing matches.
    pub fn open(spec: &str) -> Result<Self, HvError> {
        let (xc, xs) = host_handles()?;
        let fm = ForeignMemory::open().map_err(|e| HvError::Unavailable(e.to_string()))?;
        Self::open_with(xc, fm, Box::new(xs), XenEnv::default(), spec)
    }

    /// Open with the given handles and environment (tests pass xen-sys's fake hypervisor and
    /// an in-memory xenstore).
    pub fn open_with(
        xc: XenCtrl,
        fm: ForeignMemory,
        xs: XenStore,
        env: XenEnv,
        spec: &str,
    ) -> Result<Self, HvError> {
        let domid = ident::resolve(&xc, &*xs, spec)?;
        let info = xc
            .domain_info(domid)
            .map_err(|e| HvError::op(spec, "domain info", e))?
            .ok_or_else(|| HvError::NoSuchDomain(spec.to_string()))?;
        let identity = ident::identity(&*xs, &info);
        let guest_type = ident::guest_type(&*xs, &info);
        let dom = XenDomain {
            xc,
            fm,
            xs: Mutex::new(xs),
            env,
            domid,
            guest_type,
            identity,
            bitmap: Mutex::new(None),
            logdirty_ours: AtomicBool::new(false),
            watchdog: Mutex::new(None),
            suspended: AtomicBool::new(false),
            nested_stops: AtomicU32::new(0),
            p2m: Mutex::new(None),
            config_kept: Mutex::new(None),
            qemu_session: Mutex::new(None),
        };
        if guest_type == GuestType::Pv {
            dom.check_pv_width()?;
        }
        Ok(dom)
    }

    /// The domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// The guest type found at open time.
    pub fn guest_type(&self) -> GuestType {
        self.guest_type
    }

    fn with_xs<R>(&self, f: impl FnOnce(&dyn Xs) -> R) -> R {
        let g = self.xs.lock().unwrap_or_else(|e| e.into_inner());
        f(&**g)
    }

    /// Current domain info, failing if the domain is gone or was re-created.
    fn xc_info(&self) -> Result<xen_sys::abi::XcDomainInfo, HvError> {
        let info = self
            .xc
            .domain_info(self.domid)
            .map_err(op_err(self, "domain info"))?
            .ok_or_else(|| HvError::NoSuchDomain(self.identity.name.clone()))?;
        if ident::uuid_text(&info.handle) != self.identity.uuid {
            return Err(HvError::op(
                self.name(),
                "domain info",
                format!("domain id {} now belongs to another domain", self.domid),
            ));
        }
        Ok(info)
    }

    /// Start the pause watchdog if it is not running (before the first pause, outside it).
    pub(crate) fn ensure_watchdog(&self) -> Result<(), HvError> {
        let mut w = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        if let (None, Some(exe)) = (w.as_ref(), self.env.watchdog_exe.as_ref()) {
            *w = Some(watchdog::Watchdog::spawn(exe, self.domid).map_err(|e| {
                HvError::op(
                    self.name(),
                    "pause",
                    format!("cannot start the pause watchdog {}: {e}", exe.display()),
                )
            })?);
        }
        Ok(())
    }

    /// Refuse while `xl save` / `xl migrate` works on this domain.
    pub(crate) fn check_no_concurrent_save(&self) -> Result<(), HvError> {
        let Some(root) = self.env.proc_root.as_ref() else {
            return Ok(());
        };
        match conflict::busy_with(root, self.domid, &self.identity.name) {
            None => Ok(()),
            Some(who) => Err(HvError::op(
                self.name(),
                "checkpoint",
                format!("the domain is being saved or migrated ({who}); try again when that has finished"),
            )),
        }
    }

    /// Size of the pfn space now: maximum gpfn + 1.
    fn pfn_count(&self) -> Result<u64, HvError> {
        Ok(self
            .xc
            .maximum_gpfn(self.domid)
            .map_err(op_err(self, "maximum gpfn"))?
            + 1)
    }
}

impl Domain for XenDomain {
    fn info(&self) -> Result<DomainInfo, HvError> {
        let info = self.xc_info()?;
        let identity = self.with_xs(|xs| ident::identity(xs, &info));
        Ok(DomainInfo {
            identity,
            guest_type: self.guest_type,
            pfn_count: self.pfn_count()?,
            vcpus: info.max_vcpu_id.wrapping_add(1),
            populated_pages: info.tot_pages,
            // Stopped by a suspend counts too: the guest runs no more than when paused.
            paused: info.flags & xen_sys::abi::XEN_DOMINF_PAUSED != 0
                || suspend::is_suspended(&info),
        })
    }

    /// No `xl save` / `xl migrate` of this domain runs, and its watchdog runs. The scan of
    /// `/proc` may wait on the lock of a busy process's memory map (its command line is read
    /// from its memory): it is no part of the downtime.
    fn before_pause(&self) -> Result<(), HvError> {
        if self.suspended.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.check_no_concurrent_save()?;
        self.ensure_watchdog()
    }

    /// Stops the guest at a consistent instant: a cooperative suspend (see `suspend.rs`), or
    /// a vCPU pause with `XenEnv::suspend` off. The watchdog is told first.
    fn pause(&self) -> Result<(), HvError> {
        if self.suspended.load(Ordering::SeqCst) {
            self.nested_stops.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        // Already done by `before_pause` when called through a pause guard: then only a lookup.
        self.ensure_watchdog()?;
        let how = if self.env.suspend {
            watchdog::SUSPENDING
        } else {
            watchdog::PAUSING
        };
        let mut w = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = w.as_mut() {
            w.announce(how).map_err(|e| {
                HvError::op(
                    self.name(),
                    "pause",
                    format!("the pause watchdog is gone ({e}); not pausing"),
                )
            })?;
        }
        let stopped = if self.env.suspend {
            self.suspend_guest()
        } else {
            self.xc.pause(self.domid).map_err(op_err(self, "pause"))
        };
        if stopped.is_err() {
            if let Some(w) = w.as_mut() {
                let _ = w.announce(watchdog::RESUMED);
            }
        }
        stopped
    }

    fn unpause(&self) -> Result<(), HvError> {
        let nested = self
            .nested_stops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if nested.is_ok() {
            return Ok(());
        }
        if self.suspended.load(Ordering::SeqCst) {
            self.resume_guest()?;
        } else {
            self.xc
                .unpause(self.domid)
                .map_err(op_err(self, "unpause"))?;
        }
        if let Some(w) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = w.announce(watchdog::RESUMED);
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.identity.name.clone()
    }
}
