//! The disks of a libxl JSON domain config (`disks` array of `libxl_device_disk`), and
//! pointing a config at other disk paths for a restore.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::stream::config::strip_nul;

/// One disk as libxl describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The guest device (`xvda`, `hda`, ...).
    pub vdev: String,
    /// The dom0 path: a file, a block device, or an image for qdisk.
    pub pdev_path: String,
    /// libxl's back-end: `phy`, `tap`, `qdisk`, `standalone`, or `unknown`.
    pub backend: String,
    /// libxl's image format: `raw`, `qcow2`, ... or `unknown`.
    pub format: String,
    /// The domain id, for back-ends that talk to the device model.
    pub domid: u32,
}

/// Why the config's disks could not be read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum DiskConfigError {
    /// The config is not libxl JSON.
    #[error("the domain config is not libxl JSON: {0}")]
    NotJson(String),
    /// A disk to point elsewhere is not in the config.
    #[error("the domain config has no disk {0}")]
    NoSuchDisk(String),
}

/// The writable disks of `config` (read-only disks and CD-ROMs cannot change: they need no
/// snapshot). A config without `disks` has none.
pub fn writable_disks(config: &[u8], domid: u32) -> Result<Vec<DiskSpec>, DiskConfigError> {
    let text = strip_nul(config);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let root: Value =
        serde_json::from_slice(text).map_err(|e| DiskConfigError::NotJson(e.to_string()))?;
    let Some(disks) = root.get("disks").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let text = |d: &Value, k: &str, dflt: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or(dflt)
            .to_ascii_lowercase()
    };
    let flag = |d: &Value, k: &str| d.get(k).and_then(Value::as_i64).unwrap_or(0) != 0;
    Ok(disks
        .iter()
        .filter(|d| !flag(d, "is_cdrom") && flag(d, "readwrite"))
        .filter_map(|d| {
            let pdev_path = d.get("pdev_path").and_then(Value::as_str)?.to_string();
            Some(DiskSpec {
                vdev: d.get("vdev").and_then(Value::as_str)?.to_string(),
                pdev_path,
                backend: text(d, "backend", "unknown"),
                format: text(d, "format", "unknown"),
                domid,
            })
        })
        .filter(|d| !d.pdev_path.is_empty())
        .collect())
}

/// Point `disks[].pdev_path` of a parsed libxl config at `paths` (vdev -> path). Every vdev
/// of `paths` must be in the config.
pub fn point_disks_at(
    root: &mut Value,
    paths: &BTreeMap<String, String>,
) -> Result<(), DiskConfigError> {
    let disks = root.get_mut("disks").and_then(Value::as_array_mut);
    let mut seen = Vec::new();
    for d in disks.into_iter().flatten() {
        let vdev = d.get("vdev").and_then(Value::as_str).map(str::to_string);
        if let Some(path) = vdev.as_ref().and_then(|v| paths.get(v)) {
            d["pdev_path"] = Value::String(path.clone());
            seen.extend(vdev);
        }
    }
    match paths.keys().find(|v| !seen.contains(v)) {
        Some(missing) => Err(DiskConfigError::NoSuchDisk(missing.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &[u8] = br#"{ "c_info": { "name": "a" }, "disks": [
        { "pdev_path": "/data/a.img", "vdev": "xvda", "backend": "phy", "format": "raw", "readwrite": 1 },
        { "pdev_path": "/iso/x.iso", "vdev": "xvdc", "is_cdrom": 1, "readwrite": 0 },
        { "pdev_path": "/data/ro.img", "vdev": "xvdd", "readwrite": 0 },
        { "pdev_path": "/data/b.qcow2", "vdev": "xvdb", "backend": "qdisk", "format": "qcow2", "readwrite": 1 }
    ] }"#;

    #[test]
    fn lists_only_writable_disks() {
        let d = writable_disks(CONFIG, 4).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].vdev, "xvda");
        assert_eq!(d[0].backend, "phy");
        assert_eq!(d[1].format, "qcow2");
        assert_eq!(d[1].domid, 4);
        assert!(writable_disks(b"{\"c_info\":{}}\0", 1).unwrap().is_empty());
        assert!(writable_disks(b"", 1).unwrap().is_empty());
        assert!(writable_disks(b"nope", 1).is_err());
    }

    #[test]
    fn points_disks_at_clones_and_refuses_unknown_vdevs() {
        let paths = BTreeMap::from([("xvdb".to_string(), "/data/clone.qcow2".to_string())]);
        let mut v: Value = serde_json::from_slice(CONFIG).unwrap();
        point_disks_at(&mut v, &paths).unwrap();
        let d = writable_disks(&serde_json::to_vec(&v).unwrap(), 0).unwrap();
        assert_eq!(d[0].pdev_path, "/data/a.img");
        assert_eq!(d[1].pdev_path, "/data/clone.qcow2");
        let bad = BTreeMap::from([("xvdz".to_string(), "/x".to_string())]);
        assert!(matches!(
            point_disks_at(&mut v, &bad),
            Err(DiskConfigError::NoSuchDisk(v)) if v == "xvdz"
        ));
    }
}
