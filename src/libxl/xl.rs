//! The domain's libxl configuration, as `xl save` embeds it.
//!
//! `xl save` calls `libxl_retrieve_domain_configuration` and `libxl_domain_config_to_json`, and
//! embeds the JSON text with its trailing NUL. `xl list -l <domid>` prints the same retrieved
//! configuration as `[{"domid": N, "config": {...}}]`. Running `xl` is preferred to loading
//! libxenlight: `libxl_domain_config` is a large generated struct whose layout we would have to
//! mirror to allocate it, and libxl's context wants a logger and the xl lock conventions;
//! `xl` is present on every dom0 that has the libraries. The JSON is re-serialised (key order
//! may differ from libxl's); libxl parses it by key, so restore sees the same configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::config_from_list;

/// Why the configuration could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum XlError {
    /// `xl` could not be run.
    #[error("cannot run {cmd}: {source} (are the Xen tools, xen-utils-4.NN, installed?)")]
    Spawn {
        /// The command.
        cmd: String,
        /// The error.
        source: std::io::Error,
    },
    /// `xl` failed.
    #[error("`{cmd} list -l {domid}` failed: {stderr}")]
    Failed {
        /// The command.
        cmd: String,
        /// The domain.
        domid: u32,
        /// Its first line of stderr.
        stderr: String,
    },
    /// The output held no configuration for the domain.
    #[error("`{cmd} list -l {domid}` printed no configuration for domain {domid}")]
    NoConfig {
        /// The command.
        cmd: String,
        /// The domain.
        domid: u32,
    },
}

/// The `xl` to run for `xl`: itself when it is a path or found in `PATH`, else (a bare name
/// outside `PATH`, as in a minimal dom0) the one in the loaded Xen release's tools directory
/// (`/usr/lib/xen-4.NN/bin`), when it exists there.
pub fn resolve(xl: &Path) -> PathBuf {
    let bare = xl.components().count() == 1;
    let in_path = || {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(xl).is_file()))
    };
    if !bare || in_path() {
        return xl.to_path_buf();
    }
    xen_sys::tools_abi()
        .ok()
        .map(|abi| Path::new(&abi.tools_dir()).join(xl))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| xl.to_path_buf())
}

/// The libxl JSON configuration of `domid` followed by a NUL byte, exactly the optional-data
/// payload `xl save` writes after its length.
pub fn domain_config(xl: &Path, domid: u32) -> Result<Vec<u8>, XlError> {
    let xl = resolve(xl);
    let cmd = xl.display().to_string();
    let out = Command::new(&xl)
        .args(["list", "-l", &domid.to_string()])
        .output()
        .map_err(|source| XlError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.lines().next().unwrap_or("no message").to_string();
        return Err(XlError::Failed { cmd, domid, stderr });
    }
    config_from_list(&out.stdout, domid).ok_or(XlError::NoConfig { cmd, domid })
}
