//! xckpt: live, incremental checkpoints of Xen guests, restored through stock libxl.
//!
//! The modules follow the data path of a checkpoint and of a restore:
//!
//! ```text
//! hv (domain: sim | xen) -> capture -> layer -> store -> compose -> stream -> restore -> libxl (xl restore)
//!                              \-> evict (pages that need not be saved)
//! ```
//!
//! * [`hv`] is the hypervisor trait ladder (the vocabulary), with the pause guard.
//! * [`guestmem`] is the one small module that reads guest memory changing under us.
//! * [`capture`] runs live pre-copy on log-dirty, pauses briefly, and writes a layer after resume.
//! * [`evict`] decides which pages need not be stored (zero, free in the guest, dropped cache).
//! * [`layer`] is the on-disk layer format (see `docs/format.md`).
//! * [`store`] holds chains of layers per domain, with atomic updates and a manifest.
//! * [`compose`] reads any point of a chain as one memory image.
//! * [`config`] is the operator's `/etc/xckpt.toml` (store, retention, policies per domain).
//! * [`progress`] reports long work to the command's observer (a no-op by default).
//! * [`stream`] turns an image into a Xen migration stream for `xl restore`, and parses one back.
//! * [`restore`] opens a point (or a group checkpoint) and streams it into `xl restore`.

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
