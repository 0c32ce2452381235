//! xckpt: live, incremental checkpoints of Xen guests, restored through stock libxl.
//!
//! The modules follow the data path of a checkpoint and of a restore:
//!
//! ```text
//! domain (hv, via backend: sim | xen) -> capture -> layer -> store -> compose -> stream -> restore -> libxl (xl restore)
//!                                          \-> evict (pages that need not be saved)
//! ```
//!
//! A module imports only modules on its own floor or below (`tools/modgraph` measures it; see
//! `docs/design.md`). The floors, lowest first, each module with its role:
//!
//! * ground, the vocabulary every step speaks:
//!   * [`failpoint`]: crash points for the crash-safety tests.
//!   * [`progress`]: reports long work to the command's observer (a no-op by default).
//!   * [`guestmem`]: the one module that reads guest memory changing under us (volatile).
//!   * [`hv`]: the hypervisor trait ladder (domain, dirty log, guest memory, machine state) and
//!     the pause guard.
//!   * [`fileio`]: private file I/O (nofollow reads, 0600 creation, directory fsync).
//!   * [`usage`]: this process's CPU time and page faults, for the reports of a command's phases.
//!   * [`libxl`]: the stock toolstack: `xl`, libxl's domain config JSON, QEMU's monitor.
//! * the domain's other parts:
//!   * [`pv`]: PV guests' p2m, page tables and vCPU normalisation, as pure functions.
//!   * [`disk`]: crash-consistent disk snapshots taken under the stop, clones for a restore.
//! * [`layer`]: the on-disk layer format (see `docs/format.md`) and its frame pipeline.
//! * [`compose`]: reads any point of a chain of layers as one memory image.
//! * [`store`]: chains of layers per domain, with a lock, atomic updates and a manifest.
//! * [`evict`]: decides which pages need not be stored (zero, free in the guest, cache, balloon).
//! * [`capture`]: live pre-copy on log-dirty, a brief pause, a layer written after resume.
//! * [`group`]: several domains (and their disks) captured at one instant.
//! * [`stream`]: turns an image into a Xen migration stream for `xl restore`, and parses one back.
//! * [`restore`]: opens a point (or a group checkpoint) and streams it into `xl restore`.
//! * [`import`]: an `xl save` file becomes the base layer of a new chain.
//! * [`config`]: the operator's `/etc/xckpt.toml` (store, retention, policies per domain).
//! * [`backend`], the roof: the `sim` and `xen` back-ends of [`hv`] and their conformance suite.
//!
//! The `xckpt` command (src/main.rs, src/cli/) stands on top of all of them.

// `unsafe` lives in xen-sys and in `guestmem` only; everywhere else it is a compile error.
#![deny(unsafe_code)]

pub mod backend;
pub mod capture;
pub mod compose;
pub mod config;
pub mod disk;
pub mod evict;
pub mod failpoint;
pub mod fileio;
pub mod group;
#[allow(unsafe_code)]
pub mod guestmem;
pub mod hv;
pub mod import;
pub mod layer;
pub mod libxl;
pub mod progress;
pub mod pv;
pub mod restore;
pub mod store;
pub mod stream;
pub mod usage;
