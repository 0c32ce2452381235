//! Run-time loaded bindings to Xen's libxenctrl, libxenguest, libxenforeignmemory and
//! libxenlight (Xen 4.17 to 4.22, the release picked at run time by [`version`]).
//!
//! This is the only crate of xckpt with FFI. The libraries are opened with `libloading` when a
//! handle is first needed (once per process), so the `xckpt` binary starts and explains itself
//! on a host without Xen.
//!
//! * [`abi`]: the C structs and constants, mirrored exactly (checked by `tests/layout.rs`).
//! * [`version`]: the supported releases, their sonames and domctl interface versions, and
//!   which one this host runs.
//! * [`XenApi`]: the table of C entry points; the wrappers call through it, so tests can
//!   substitute fakes (see the `fake` feature).
//! * [`XenCtrl`]: an open `xc_interface` (domain info, pause, log-dirty, page types,
//!   populating a restored domain, HVM and CPU state); [`HypercallBitmap`]: the log-dirty
//!   bitmap in hypercall-safe memory.
//! * [`ForeignMemory`] and [`ForeignMapping`]: read-only mappings of guest frames.
//! * [`domain_config_json`]: a domain's libxl configuration, through libxenlight.

pub mod abi;
mod api;
mod bitmap;
mod ctrl;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod foreign;
pub mod libxl;
#[cfg(test)]
mod tests;
pub mod version;

pub use api::{tools_abi, XenApi, LIBXENFOREIGNMEMORY};
pub use bitmap::HypercallBitmap;
pub use ctrl::{cpuid_record, msr_record, TscInfo, XenCtrl};
pub use foreign::{ForeignMapping, ForeignMemory};
pub use libxl::{domain_config_json, DOMAIN_CONFIG_ROOM, LIBXENTOOLLOG};
pub use version::{Abi, XenVersion};

/// The privileged command device every Xen control handle needs.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// Guest page size.
pub const PAGE_SIZE: usize = 4096;

/// An error from loading the Xen libraries or from one of their calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XenError {
    /// A Xen tools library could not be loaded.
    #[error(
        "cannot load {lib} ({reason}): install xen-utils-{tools} / libxenmisc{tools}, \
         or this host is not a Xen dom0"
    )]
    Load {
        /// The soname.
        lib: &'static str,
        /// The Xen release whose tools are needed ("4.20").
        tools: String,
        /// The loader's message.
        reason: String,
    },
    /// The Xen release in use is not one xckpt supports.
    #[error(
        "Xen {version} ({found}) is not supported: xckpt supports Xen {} \
         (install a supported Xen, or a newer xckpt)",
        version::supported_range()
    )]
    Unsupported {
        /// The release, "4.16".
        version: String,
        /// Where it was seen: "the running hypervisor" or a soname.
        found: String,
    },
    /// Neither a running hypervisor nor any libxenctrl was found.
    #[error(
        "no Xen tools found (libxenctrl.so.4.NN): install xen-utils-4.NN for the Xen you run \
         (xckpt supports Xen {range}), or this host is not a Xen dom0"
    )]
    NoTools {
        /// "4.17 to 4.22".
        range: String,
    },
    /// A library lacks a function xckpt needs: not the tools of a supported release.
    #[error(
        "{lib} has no symbol {symbol} ({reason}): xckpt needs the tools libraries of Xen {}",
        version::supported_range()
    )]
    Symbol {
        /// The soname.
        lib: &'static str,
        /// The missing function.
        symbol: &'static str,
        /// The loader's message.
        reason: String,
    },
    /// `/dev/xen/privcmd` is missing.
    #[error(
        "cannot open /dev/xen/privcmd: not running in a Xen dom0 \
         (or the xen-privcmd module is not loaded)"
    )]
    NoPrivcmd,
    /// `/dev/xen/privcmd` exists but may not be opened by this user.
    #[error("cannot open /dev/xen/privcmd: permission denied (run xckpt as root in dom0)")]
    PrivcmdDenied,
    /// A libxl call failed with an `ERROR_*` code (libxl's own messages went to stderr).
    #[error("{call} failed: libxl error {code}")]
    Libxl {
        /// The C function.
        call: &'static str,
        /// Its return code (negative `ERROR_*`, libxl_types.idl).
        code: i32,
    },
    /// A library call failed.
    #[error("{call} failed: {} (errno {errno})", std::io::Error::from_raw_os_error(*.errno))]
    Call {
        /// The C function.
        call: &'static str,
        /// Its errno.
        errno: i32,
    },
}

impl XenError {
    /// The errno of a failed call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XenError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// A [`XenError::Call`] for `call` with the current thread's errno.
    pub(crate) fn last(call: &'static str) -> Self {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        XenError::Call { call, errno }
    }
}

/// The error for a failed handle open (`call`), with the current errno.
pub(crate) fn open_error(call: &'static str) -> XenError {
    match XenError::last(call) {
        XenError::Call {
            errno: libc::EACCES | libc::EPERM,
            ..
        } => XenError::PrivcmdDenied,
        XenError::Call {
            errno: libc::ENOENT | libc::ENXIO | libc::ENODEV,
            ..
        } => XenError::NoPrivcmd,
        e => e,
    }
}

/// Fail with [`XenError::NoPrivcmd`] before calling into the libraries (which would print their
/// own multi-line complaints) when the privcmd device is absent.
pub(crate) fn check_privcmd() -> Result<(), XenError> {
    if std::path::Path::new(PRIVCMD).exists() {
        Ok(())
    } else {
        Err(XenError::NoPrivcmd)
    }
}
