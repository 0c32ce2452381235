//! The domain's libxl configuration, as `xl save` embeds it.
//!
//! `xl save` calls `libxl_retrieve_domain_configuration` and `libxl_domain_config_to_json`, and
//! embeds the JSON text with its trailing NUL. xckpt makes the same two calls in its own
//! process ([`xen_sys::domain_config_json`]): running `xl list -l <domid>`, which prints the
//! same retrieved configuration as `[{"domid": N, "config": {...}}]`, costs a process start and
//! libxl's set-up each time (155-175 ms of CPU under the test bed's emulation). `xl list -l`
//! stays the way when another `xl` command is configured, or libxenlight cannot be used; its
//! JSON is re-serialised (key order may differ from libxl's), which libxl parses by key, so
//! restore sees the same configuration.

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
/// payload `xl save` writes after its length: retrieved through libxenlight when `xl` is the
/// stock `xl`, else (or if libxenlight fails) from `xl list -l`.
pub fn domain_config(xl: &Path, domid: u32) -> Result<Vec<u8>, XlError> {
    if xl == Path::new(STOCK_XL) {
        if let Ok(mut json) = xen_sys::domain_config_json(domid) {
            json.push(0);
            return Ok(json);
        }
    }
    listed_config(xl, domid)
}

/// The `xl` command of a stock dom0, found in `PATH` or the release's tools directory.
pub const STOCK_XL: &str = "xl";

/// [`domain_config`] from `xl list -l`.
fn listed_config(xl: &Path, domid: u32) -> Result<Vec<u8>, XlError> {
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
