//! Which Xen: the tools ABIs xckpt supports (Xen 4.17 to 4.22) and how the one in use is found.
//!
//! Every entry point of [`crate::XenApi`] and every struct of [`crate::abi`] is the same in all
//! of them (checked against the 4.17 and 4.20 headers by `tests/layout.rs`); what differs is the
//! sonames of libxenctrl / libxenguest and `XEN_DOMCTL_INTERFACE_VERSION`. (`xc_domain_getinfo`,
//! removed in 4.18, is not used: `xc_domain_getinfolist` is in all of them.)
//!
//! The version is the running hypervisor's (`/sys/hypervisor/version`) when this is a dom0,
//! else the newest supported libxenctrl installed. Any other version is refused with one line.

use std::path::Path;

use crate::XenError;

/// A Xen release, major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XenVersion {
    /// Major (4).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl XenVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        XenVersion { major, minor }
    }

    /// Parses "4.20" (or "4.20.4", the rest ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some(XenVersion { major, minor })
    }
}

impl std::fmt::Display for XenVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One supported release's tools ABI.
#[derive(Debug, PartialEq, Eq)]
pub struct Abi {
    /// The release.
    pub version: XenVersion,
    /// Its `XEN_DOMCTL_INTERFACE_VERSION` (xen/include/public/domctl.h).
    pub domctl_interface: u32,
    /// libxenctrl's soname.
    pub libxenctrl: &'static str,
    /// libxenguest's soname.
    pub libxenguest: &'static str,
    /// libxenlight's soname.
    pub libxenlight: &'static str,
}

impl Abi {
    /// The directory of the release's tools (`xl`, `libxl-save-helper`, `xenstored`) on Debian
    /// and Ubuntu: `/usr/lib/xen-4.NN/bin`.
    pub fn tools_dir(&self) -> String {
        format!("/usr/lib/xen-{}/bin", self.version)
    }
}

macro_rules! abi {
    ($minor:literal, $iface:literal) => {
        Abi {
            version: XenVersion::new(4, $minor),
            domctl_interface: $iface,
            libxenctrl: concat!("libxenctrl.so.4.", $minor),
            libxenguest: concat!("libxenguest.so.4.", $minor),
            libxenlight: concat!("libxenlight.so.4.", $minor),
        }
    };
}

/// The supported releases, oldest first. Interface versions: 0x15 in 4.17 and 0x17 in 4.20
/// (the Debian headers, checked by tests/layout.rs); 0x16 (4.18), 0x17 (4.19, 4.21) and 0x18
/// (4.22) from xen-project/xen's domctl.h bumps.
pub static SUPPORTED: [Abi; 6] = [
    abi!(17, 0x15),
    abi!(18, 0x16),
    abi!(19, 0x17),
    abi!(20, 0x17),
    abi!(21, 0x17),
    abi!(22, 0x18),
];

/// "4.17 to 4.22".
pub fn supported_range() -> String {
    format!(
        "{} to {}",
        SUPPORTED[0].version,
        SUPPORTED[SUPPORTED.len() - 1].version
    )
}

/// The ABI of release `v`, or [`XenError::Unsupported`] naming `found` (where `v` was seen).
pub fn abi_of(v: XenVersion, found: &str) -> Result<&'static Abi, XenError> {
    SUPPORTED
        .iter()
        .find(|a| a.version == v)
        .ok_or_else(|| XenError::Unsupported {
            version: v.to_string(),
            found: found.to_string(),
        })
}

/// Decides the ABI from the running hypervisor's version (if known) and the libxenctrl
/// versions installed (any order).
pub fn choose(
    hypervisor: Option<XenVersion>,
    installed: &[XenVersion],
) -> Result<&'static Abi, XenError> {
    if let Some(v) = hypervisor {
        return abi_of(v, "the running hypervisor");
    }
    let mut sorted = installed.to_vec();
    sorted.sort_unstable();
    if let Some(a) = sorted
        .iter()
        .rev()
        .find_map(|&v| abi_of(v, "installed").ok())
    {
        return Ok(a);
    }
    match sorted.last() {
        Some(&v) => abi_of(v, &format!("libxenctrl.so.{v}")),
        None => Err(XenError::NoTools {
            range: supported_range(),
        }),
    }
}

/// The running hypervisor's version, from `/sys/hypervisor` (present in a Xen dom0).
pub fn hypervisor_version() -> Option<XenVersion> {
    hypervisor_version_in(Path::new("/sys/hypervisor"))
}

fn hypervisor_version_in(sys: &Path) -> Option<XenVersion> {
    let read = |f: &str| std::fs::read_to_string(sys.join(f)).ok();
    if read("type")?.trim() != "xen" {
        return None;
    }
    let major = read("version/major")?.trim().parse().ok()?;
    let minor = read("version/minor")?.trim().parse().ok()?;
    Some(XenVersion { major, minor })
}

/// Directories searched for `libxenctrl.so.*` (besides what the loader finds by soname).
const LIB_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib64",
];

/// The libxenctrl versions installed: `libxenctrl.so.X.Y` files in the usual library
/// directories and `LD_LIBRARY_PATH`.
pub fn installed_versions() -> Vec<XenVersion> {
    let extra = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let dirs = LIB_DIRS
        .iter()
        .map(|d| d.to_string())
        .chain(extra.split(':').filter(|d| !d.is_empty()).map(String::from));
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(v) = name
                .strip_prefix("libxenctrl.so.")
                .and_then(XenVersion::parse)
            {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// The ABI for this host: the running hypervisor's release, else the newest supported tools
/// installed. The library directories are listed only when the hypervisor's release is not
/// known: a dom0 knows it, and every command's start need not read them.
pub fn detect() -> Result<&'static Abi, XenError> {
    match hypervisor_version() {
        Some(v) => choose(Some(v), &[]),
        None => choose(None, &installed_versions()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u32) -> XenVersion {
        XenVersion::new(4, minor)
    }

    #[test]
    fn every_supported_release_has_its_sonames_and_interface() {
        for (a, minor) in SUPPORTED.iter().zip(17..) {
            assert_eq!(a.version, v(minor));
            assert_eq!(a.libxenctrl, format!("libxenctrl.so.4.{minor}"));
            assert_eq!(a.libxenguest, format!("libxenguest.so.4.{minor}"));
            assert_eq!(a.libxenlight, format!("libxenlight.so.4.{minor}"));
            assert_eq!(a.tools_dir(), format!("/usr/lib/xen-4.{minor}/bin"));
        }
        let iface: Vec<u32> = SUPPORTED.iter().map(|a| a.domctl_interface).collect();
        assert_eq!(iface, [0x15, 0x16, 0x17, 0x17, 0x17, 0x18]);
        assert_eq!(supported_range(), "4.17 to 4.22");
    }

    #[test]
    fn the_running_hypervisor_decides() {
        assert_eq!(choose(Some(v(20)), &[v(17)]).unwrap().version, v(20));
        assert_eq!(choose(Some(v(17)), &[]).unwrap().domctl_interface, 0x15);
        for bad in [v(16), v(23), XenVersion::new(5, 0)] {
            let e = choose(Some(bad), &[v(20)]).unwrap_err();
            let m = e.to_string();
            assert!(
                m.starts_with(&format!(
                    "Xen {bad} (the running hypervisor) is not supported"
                )) && m.contains("4.17 to 4.22")
                    && !m.contains('\n'),
                "{m}"
            );
        }
    }

    #[test]
    fn without_a_hypervisor_the_newest_supported_tools_win() {
        assert_eq!(choose(None, &[v(17), v(22), v(23)]).unwrap().version, v(22));
        assert_eq!(
            choose(None, &[v(19)]).unwrap().libxenctrl,
            "libxenctrl.so.4.19"
        );
        let m = choose(None, &[v(16)]).unwrap_err().to_string();
        assert!(
            m.starts_with("Xen 4.16 (libxenctrl.so.4.16) is not supported"),
            "{m}"
        );
        let m = choose(None, &[]).unwrap_err().to_string();
        assert!(m.contains("4.17 to 4.22") && !m.contains('\n'), "{m}");
    }

    #[test]
    fn reads_sys_hypervisor() {
        let d = tempdir();
        assert_eq!(hypervisor_version_in(&d), None);
        std::fs::create_dir_all(d.join("version")).unwrap();
        std::fs::write(d.join("type"), "xen\n").unwrap();
        std::fs::write(d.join("version/major"), "4\n").unwrap();
        std::fs::write(d.join("version/minor"), "20\n").unwrap();
        assert_eq!(hypervisor_version_in(&d), Some(v(20)));
        std::fs::write(d.join("type"), "kvm\n").unwrap();
        assert_eq!(hypervisor_version_in(&d), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "xen-sys-version-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn parses_versions() {
        assert_eq!(XenVersion::parse("4.20"), Some(v(20)));
        assert_eq!(XenVersion::parse("4.20.4"), Some(v(20)));
        assert_eq!(XenVersion::parse("1"), None);
        assert_eq!(XenVersion::parse("4.x"), None);
    }
}
