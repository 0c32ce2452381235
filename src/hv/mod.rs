//! The hypervisor seen by a checkpoint: a short ladder of traits, each adding one capability.
//!
//! ```text
//! Domain          identity, info, pause / unpause
//!  +- DirtyLog    log-dirty enable / disable / fetch-and-clear
//!  +- GuestMemory page types and batched read-only mapping of guest frames
//!  +- MachineState opaque CPU / platform state blobs and the domain's config blob
//! Checkpointable = DirtyLog + GuestMemory + MachineState
//! ```
//!
//! Two back-ends implement it, in [`crate::backend`]: `sim` (an in-process domain with real memory
//! and writers) and `xen` (libxenctrl through `xen-sys`). This module is the vocabulary only and
//! imports nothing above the ground floor. Dirty state travels as plain data: a [`PfnBitmap`] with
//! bit `i` set when pfn `i` was written, the same layout as Xen's log-dirty bitmap.

pub mod hvm_save;
pub mod pause;

use bitvec::prelude::{BitVec, Lsb0};
use serde::{Deserialize, Serialize};

use crate::guestmem::GuestPage;

/// Size of a guest page in bytes. Defined beside the guest-memory accessors (the ground under
/// this vocabulary, which imports nothing of the crate); named here for every user of the traits.
pub use crate::guestmem::PAGE_SIZE;

/// A guest frame number (pfn for PV, gfn for PVH/HVM).
pub type Pfn = u64;

/// The canonical lower-case text form of a 16-byte uuid (domain handle).
pub fn uuid_text(h: &[u8; 16]) -> String {
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One bit per pfn, bit `i` of word `i / 64` is pfn `i`: Xen's log-dirty bitmap layout.
pub type PfnBitmap = BitVec<u64, Lsb0>;

/// The kind of guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// Paravirtualised guest (shadow paging needed for log-dirty).
    Pv,
    /// PVH guest (HAP).
    Pvh,
    /// HVM guest with a device model (HAP).
    Hvm,
}

/// What identifies one incarnation of a domain. A checkpoint series is only valid while this
/// stays the same; `instance` changes whenever the domain is re-created or migrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainIdentity {
    /// The domain's name.
    pub name: String,
    /// The domain id at capture time.
    pub domid: u32,
    /// The domain's uuid, canonical text form.
    pub uuid: String,
    /// Changes when the domain is re-created (Xen: domid + uuid + xenstore vm path + start time).
    pub instance: String,
}

/// Facts about a running domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Who it is.
    pub identity: DomainIdentity,
    /// PV, PVH or HVM.
    pub guest_type: GuestType,
    /// Size of the pfn space: highest guest frame number + 1.
    pub pfn_count: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Frames the domain has populated.
    pub populated_pages: u64,
    /// Whether the domain is paused now.
    pub paused: bool,
}

/// The type of a guest frame, as far as a checkpoint cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageType {
    /// No frame behind this pfn (never populated, or ballooned out).
    Unpopulated,
    /// An ordinary populated frame.
    Normal,
    /// A frame Xen reports broken; it cannot be read.
    Broken,
    /// A populated frame with a back-end specific type (PV page tables); the raw type is kept.
    Other(u32),
}

/// One opaque piece of CPU or platform state, kept apart from the pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBlob {
    /// What the blob is; see [`state_kind`].
    pub kind: u32,
    /// The bytes, exactly as the back-end produced them.
    pub data: Vec<u8>,
}

/// Known [`StateBlob::kind`] values. Back-ends may add their own above 0x1000.
pub mod state_kind {
    /// The simulator's CPU state (a counter and a register file).
    pub const SIM_CPU: u32 = 1;
    /// libxc HVM_CONTEXT record body: the `xc_domain_hvm_getcontext` output, as is.
    pub const HVM_CONTEXT: u32 = 0x10;
    /// libxc HVM_PARAMS record body: count u32, reserved u32, then `count` pairs of
    /// little-endian u64 (index, value): the non-zero params of libxc's list, in its order.
    pub const HVM_PARAMS: u32 = 0x11;
    /// libxc X86_TSC_INFO record body: mode u32, khz u32, nsec u64, incarnation u32,
    /// reserved u32 (24 bytes, little-endian).
    pub const TSC_INFO: u32 = 0x12;
    /// libxc X86_CPUID_POLICY record body: an array of `xen_cpuid_leaf_t` (leaf, subleaf, a, b,
    /// c, d: six little-endian u32 each).
    pub const CPUID_POLICY: u32 = 0x13;
    /// libxc X86_MSR_POLICY record body: an array of `xen_msr_entry_t` (idx u32, flags u32,
    /// val u64, little-endian).
    pub const MSR_POLICY: u32 = 0x14;
    /// QEMU device state from QMP `xen-save-devices-state`.
    pub const QEMU_STATE: u32 = 0x20;
    /// QEMU's xenstore keys as libxl saves them in EMULATOR_XENSTORE_DATA (the `physmap/...`
    /// entries under the device-model path): packed NUL-terminated (key, value) pairs.
    pub const QEMU_XENSTORE: u32 = 0x21;
    /// libxc X86_PV_INFO record body (guest width 8, 4 page-table levels, 6 reserved bytes).
    pub const X86_PV_INFO: u32 = 0x30;
    /// libxc X86_PV_P2M_FRAMES record body: start pfn u32, end pfn u32, then the pfns (u64)
    /// of the frames holding the guest's p2m, normalised at capture.
    pub const X86_PV_P2M_FRAMES: u32 = 0x31;
    /// libxc SHARED_INFO record body: the guest's shared info page (4096 bytes), raw.
    pub const SHARED_INFO: u32 = 0x32;
    /// libxc X86_PV_VCPU_BASIC record body, one blob per online vCPU: vcpu id u32, reserved
    /// u32, then its `vcpu_guest_context_x86_64_t` with frames normalised to pfns at capture.
    pub const X86_PV_VCPU_BASIC: u32 = 0x33;
    /// libxc X86_PV_VCPU_EXTENDED record body (vCPU header + `xen_domctl_ext_vcpucontext`).
    pub const X86_PV_VCPU_EXTENDED: u32 = 0x34;
    /// libxc X86_PV_VCPU_XSAVE record body (vCPU header + `getvcpuextstate` output).
    pub const X86_PV_VCPU_XSAVE: u32 = 0x35;
    /// libxc X86_PV_VCPU_MSRS record body (vCPU header + `xen_domctl_vcpu_msr_t` entries).
    pub const X86_PV_VCPU_MSRS: u32 = 0x36;
    /// xckpt's own (no libxc record): the PV guest's p2m at the pause, one little-endian u64
    /// mfn per pfn (`u64::MAX`: none). The stream normalises page tables with it.
    pub const PV_P2M: u32 = 0x38;
    /// xckpt's own (no libxc record): the PV guest's page-table pages at the pause, as
    /// (pfn u64, `XEN_DOMCTL_PFINFO_*` type u32) little-endian pairs in pfn order.
    pub const PV_PAGE_TYPES: u32 = 0x39;
}

/// An error from a hypervisor operation, naming the domain and the operation.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// No domain of that name, id or uuid.
    #[error("no domain named {0:?}: check `xl list`")]
    NoSuchDomain(String),
    /// The back-end is not available on this host (e.g. Xen libraries missing).
    #[error("{0}")]
    Unavailable(String),
    /// The hypervisor refused or failed an operation.
    #[error("domain {domain}: {op} failed: {source}")]
    Op {
        /// Domain name or id.
        domain: String,
        /// The operation, e.g. "pause" or "log-dirty CLEAN".
        op: &'static str,
        /// The back-end's error (a message when there is no error value).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Log-dirty was turned off while this run relied on it (another tool such as `xl save`
    /// or `xl migrate` restarted or disabled it), so this run's dirty set is incomplete.
    #[error("domain {domain}: log-dirty was turned off during the checkpoint ({reason}); the chain is unchanged and the next checkpoint will be a resync")]
    TrackingLost {
        /// Domain name.
        domain: String,
        /// What was seen.
        reason: String,
    },
    /// Log-dirty is not supported for this domain (PV guest on a hypervisor without shadow paging).
    #[error("domain {domain}: log-dirty is not supported by this hypervisor ({reason}); use --no-live for a paused checkpoint")]
    LogDirtyUnsupported {
        /// Domain name.
        domain: String,
        /// Errno text.
        reason: String,
    },
}

impl HvError {
    /// Build an [`HvError::Op`] from the back-end's error, or from a message (`&str`, `String`).
    pub fn op(
        domain: impl Into<String>,
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        HvError::Op {
            domain: domain.into(),
            op,
            source: source.into(),
        }
    }
}

/// A domain: who it is, and pausing.
pub trait Domain: Send + Sync {
    /// Current facts about the domain.
    fn info(&self) -> Result<DomainInfo, HvError>;
    /// What must be checked or made ready before a pause, while the guest still runs (no
    /// concurrent save, a watchdog): [`pause::PauseGuard`] calls it first and counts the
    /// downtime from after it. Default: nothing.
    fn before_pause(&self) -> Result<(), HvError> {
        Ok(())
    }
    /// Pause all vCPUs (and writers). Prefer [`pause::PauseGuard`], which always unpauses.
    fn pause(&self) -> Result<(), HvError>;
    /// Undo one [`Domain::pause`].
    fn unpause(&self) -> Result<(), HvError>;
    /// Name used in messages.
    fn name(&self) -> String;
}

/// Log-dirty tracking.
pub trait DirtyLog: Domain {
    /// Turn log-dirty mode on. Turning it on when already on is not an error.
    fn logdirty_enable(&self) -> Result<(), HvError>;
    /// Turn log-dirty mode off.
    fn logdirty_disable(&self) -> Result<(), HvError>;
    /// Whether log-dirty mode is on now.
    fn logdirty_enabled(&self) -> Result<bool, HvError>;
    /// Fetch the dirty bitmap and clear it, atomically (Xen's CLEAN). `into` is resized to
    /// `pfn_count` bits and overwritten. Returns the number of dirty pages. Fails with
    /// [`HvError::TrackingLost`] when log-dirty is off, or was turned off by someone else since
    /// this handle enabled it: the bitmap would then silently miss writes.
    fn logdirty_clean(&self, into: &mut PfnBitmap) -> Result<u64, HvError>;
}

/// Reading guest memory.
pub trait GuestMemory: Domain {
    /// The type of each pfn in `pfns`, written to `out` (same length).
    fn page_types(&self, pfns: &[Pfn], out: &mut [PageType]) -> Result<(), HvError>;
    /// How many pfns [`GuestMemory::page_types`] reports populated now (`Normal` or `Other`),
    /// when the back-end knows it exactly; `None` when it does not.
    fn counted_pages(&self) -> Result<Option<u64>, HvError> {
        Ok(None)
    }
    /// Map a batch of frames read-only. Frames that cannot be mapped report an errno per frame.
    fn map_batch<'a>(&'a self, pfns: &[Pfn]) -> Result<Box<dyn MappedBatch + 'a>, HvError>;
}

/// A batch of mapped guest frames, unmapped on drop.
pub trait MappedBatch {
    /// Number of frames in the batch.
    fn len(&self) -> usize;
    /// Whether the batch is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Frame `i` of the batch, or the errno the hypervisor gave for it.
    fn page(&self, i: usize) -> Result<GuestPage<'_>, i32>;
}

/// CPU and platform state, and the domain's configuration.
pub trait MachineState: Domain {
    /// Called once before pre-copy starts (Xen HVM: turn on QEMU's dirty log for DMA, and leave
    /// it on, as log-dirty is).
    fn prepare_capture(&self) -> Result<(), HvError> {
        Ok(())
    }
    /// Called right before the stop, while the domain still runs: open what
    /// [`MachineState::save_state`] will need, so that the pause holds only the saving (Xen
    /// HVM: QEMU's monitor session and the file its device state goes into). Whatever it
    /// opened is kept until [`MachineState::stop_over`].
    fn ready_for_stop(&self) -> Result<(), HvError> {
        Ok(())
    }
    /// Opaque CPU / platform state. Called while the domain is paused.
    fn save_state(&self) -> Result<Vec<StateBlob>, HvError>;
    /// The vCPUs' and the hypervisor's part of [`MachineState::save_state`], without the
    /// device model's, for a look at the vCPUs while the domain runs (introspection finding
    /// its kernel by vCPU 0's page tables). On Xen an HVM guest's full state also asks QEMU
    /// for all of its device state: tens of ms under TCG, for nothing here.
    fn cpu_state(&self) -> Result<Vec<StateBlob>, HvError> {
        self.save_state()
    }
    /// The stop is over (the domain runs again, or the stop failed): release what
    /// [`MachineState::ready_for_stop`] opened.
    fn stop_over(&self) {}
    /// The domain's configuration blob (libxl JSON on Xen), as `xl save` embeds it.
    fn config(&self) -> Result<Vec<u8>, HvError>;
    /// The config may have changed since it was last fetched (a balloon): a copy kept by the
    /// back-end must not be used.
    fn config_changed(&self) {}
}

/// Everything a live checkpoint needs.
pub trait Checkpointable: DirtyLog + GuestMemory + MachineState {}
impl<T: DirtyLog + GuestMemory + MachineState> Checkpointable for T {}
