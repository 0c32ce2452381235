//! libxl's domain config JSON (`libxl_domain_config`), the one place that reads or edits it.
//!
//! `xl save` embeds the JSON text with its trailing NUL; `xl list -l` prints the same config as
//! `[{"domid": N, "config": {...}}]`. What xckpt needs of it:
//!
//! * [`config_from_list`]: pick a domain's config out of `xl list -l`;
//! * [`writable_disks`] and [`point_disks_at`]: the disks to snapshot, and pointing a restore at
//!   their clones (`disks[].pdev_path`);
//! * [`prepare_config`]: what a save stream embeds (renamed with a fresh uuid, domid cleared as
//!   `xl save` does without `-D`, disks pointed at clones);
//! * [`guest_type_of`]: the guest type the config names;
//! * [`raise_target_memkb`]: give a ballooned guest its memory target back for a restore.
//!
//! The JSON is re-serialised when edited (key order may differ from libxl's); libxl parses it by
//! key, so restore sees the same configuration.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::hv::GuestType;

/// The config without its trailing NUL(s): what the parser hands to a sink.
pub fn strip_nul(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &raw[..end]
}

/// Pick `domid`'s `config` object out of `xl list -l` output; JSON text plus a trailing NUL.
pub fn config_from_list(stdout: &[u8], domid: u32) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let entries = match v {
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        _ => return None,
    };
    let entry = entries
        .into_iter()
        .find(|e| e.get("domid").and_then(Value::as_u64) == Some(u64::from(domid)))?;
    let config = entry.get("config").filter(|c| c.is_object())?;
    config_text(config).ok()
}

/// `v` as the embedded config: pretty JSON text and one NUL.
fn config_text(v: &Value) -> serde_json::Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(v)?;
    text.push(0);
    Ok(text)
}

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
    NotJson(#[source] serde_json::Error),
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
    let root: Value = serde_json::from_slice(text).map_err(DiskConfigError::NotJson)?;
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
/// of `paths` must be in the config. The vdevs in `overlays` now name a local qcow2 overlay
/// of a disk fetched from another host (`disk::nbd`): QEMU's qdisk back-end serves them,
/// whatever back-end and format the disk had.
pub fn point_disks_at(
    root: &mut Value,
    paths: &BTreeMap<String, String>,
    overlays: &BTreeSet<String>,
) -> Result<(), DiskConfigError> {
    let disks = root.get_mut("disks").and_then(Value::as_array_mut);
    let mut seen = Vec::new();
    for d in disks.into_iter().flatten() {
        let vdev = d.get("vdev").and_then(Value::as_str).map(str::to_string);
        if let Some(path) = vdev.as_ref().and_then(|v| paths.get(v)) {
            d["pdev_path"] = Value::String(path.clone());
            if vdev.as_ref().is_some_and(|v| overlays.contains(v)) {
                d["backend"] = Value::from("qdisk");
                d["format"] = Value::from("qcow2");
            }
            seen.extend(vdev);
        }
    }
    match paths.keys().find(|v| !seen.contains(v)) {
        Some(missing) => Err(DiskConfigError::NoSuchDisk(missing.clone())),
        None => Ok(()),
    }
}

/// Why the config to embed in a save stream could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRewriteError {
    /// The config is not JSON, so it cannot be edited.
    #[error("it is not libxl JSON ({0}), so the domain cannot be renamed nor its domid cleared")]
    NotJson(serde_json::Error),
    /// The config has no `c_info` object.
    #[error("it has no \"c_info\" object")]
    NoCInfo,
    /// A disk to point at its clone is not in the config.
    #[error(transparent)]
    Disks(#[from] DiskConfigError),
    /// The edited config could not be serialised.
    #[error(transparent)]
    Serialize(serde_json::Error),
}

/// What to change in the embedded config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigRewrite {
    /// New `c_info.name`; a fresh random `c_info.uuid` goes with it.
    pub rename: Option<String>,
    /// Keep `c_info.domid` (like `xl save -D`); otherwise it is set to 0 so the restored
    /// domain gets a fresh domid.
    pub preserve_domid: bool,
    /// New `disks[].pdev_path` per vdev (a restore from disk snapshots).
    pub disk_paths: BTreeMap<String, String>,
    /// The vdevs of `disk_paths` that are qcow2 overlays of a disk on another host.
    pub overlays: BTreeSet<String>,
}

/// The config bytes to embed: the JSON text (rewritten if needed) followed by one NUL, as
/// `xl save` writes it (`strlen + 1`); empty when there is no config at all.
pub fn prepare_config(raw: &[u8], rw: &ConfigRewrite) -> Result<Vec<u8>, ConfigRewriteError> {
    let text = strip_nul(raw);
    if text.is_empty() && rw.rename.is_none() {
        return Ok(Vec::new()); // No config: `xl restore` then needs one on its command line.
    }
    let needs_domid_clear = !rw.preserve_domid && has_nonzero_domid(text);
    let mut out = if rw.rename.is_none() && !needs_domid_clear && rw.disk_paths.is_empty() {
        text.to_vec()
    } else {
        rewrite(text, rw)?
    };
    out.push(0);
    Ok(out)
}

fn has_nonzero_domid(text: &[u8]) -> bool {
    // Cheap pre-check so configs without the key are passed through byte for byte.
    if !text.windows(7).any(|w| w == b"\"domid\"") {
        return false;
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(v) => v
            .get("c_info")
            .and_then(|c| c.get("domid"))
            .is_some_and(|d| d.as_u64() != Some(0)),
        Err(_) => false,
    }
}

fn rewrite(text: &[u8], rw: &ConfigRewrite) -> Result<Vec<u8>, ConfigRewriteError> {
    let mut root: Value = serde_json::from_slice(text).map_err(ConfigRewriteError::NotJson)?;
    // Only a rename needs c_info; disks are pointed elsewhere without it.
    match root.get_mut("c_info").and_then(Value::as_object_mut) {
        Some(c_info) => {
            if let Some(name) = &rw.rename {
                c_info.insert("name".into(), Value::String(name.clone()));
                c_info.insert("uuid".into(), Value::String(random_uuid()));
            }
            if !rw.preserve_domid && c_info.contains_key("domid") {
                c_info.insert("domid".into(), Value::from(0u32));
            }
        }
        None if rw.rename.is_some() => return Err(ConfigRewriteError::NoCInfo),
        None => {}
    }
    point_disks_at(&mut root, &rw.disk_paths, &rw.overlays)?;
    serde_json::to_vec_pretty(&root).map_err(ConfigRewriteError::Serialize)
}

/// A random (version 4) uuid in canonical lower-case text form.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::hv::uuid_text(&b)
}

/// The domain name a config gives: libxl JSON's `c_info.name` (the simulator's config: `name`).
pub fn domain_name_of(config: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(strip_nul(config)).ok()?;
    let name = v.pointer("/c_info/name").or_else(|| v.get("name"))?;
    name.as_str().filter(|n| !n.is_empty()).map(str::to_string)
}

/// The guest type named by a libxl JSON config (`c_info.type`, else `b_info.type`).
pub fn guest_type_of(config: &[u8]) -> Option<GuestType> {
    let v: Value = serde_json::from_slice(strip_nul(config)).ok()?;
    let ty = v
        .get("c_info")
        .and_then(|c| c.get("type"))
        .or_else(|| v.get("b_info").and_then(|b| b.get("type")))?
        .as_str()?;
    match ty {
        "hvm" => Some(GuestType::Hvm),
        "pvh" => Some(GuestType::Pvh),
        "pv" => Some(GuestType::Pv),
        _ => None,
    }
}

/// `config` (libxl JSON with its trailing NUL) with `b_info.target_memkb` raised by `raise_kib`:
/// libxl reads the target from xenstore when it describes a domain, so a guest ballooned down
/// for its capture must get its old target back for a restore. Text that is not such a config
/// (or a target that would overflow) is left as it is.
pub fn raise_target_memkb(config: Vec<u8>, raise_kib: u64) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(strip_nul(&config)) else {
        return config;
    };
    let Some(target) = v.pointer_mut("/b_info/target_memkb") else {
        return config;
    };
    let Some(kib) = target.as_u64().and_then(|k| k.checked_add(raise_kib)) else {
        return config;
    };
    *target = kib.into();
    config_text(&v).unwrap_or(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_right_domain() {
        let out = br#"[
    { "domid": 3, "config": { "c_info": { "name": "a" } } },
    { "domid": 5, "config": { "c_info": { "type": "hvm", "name": "b" } } }
]"#;
        let c = config_from_list(out, 5).unwrap();
        assert_eq!(c.last(), Some(&0));
        let v: Value = serde_json::from_slice(&c[..c.len() - 1]).unwrap();
        assert_eq!(v["c_info"]["name"], "b");
        assert!(config_from_list(out, 4).is_none());
        assert!(config_from_list(b"not json", 3).is_none());
    }

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
        point_disks_at(&mut v, &paths, &BTreeSet::new()).unwrap();
        let d = writable_disks(&serde_json::to_vec(&v).unwrap(), 0).unwrap();
        assert_eq!(d[0].pdev_path, "/data/a.img");
        assert_eq!(d[1].pdev_path, "/data/clone.qcow2");
        let bad = BTreeMap::from([("xvdz".to_string(), "/x".to_string())]);
        assert!(matches!(
            point_disks_at(&mut v, &bad, &BTreeSet::new()),
            Err(DiskConfigError::NoSuchDisk(v)) if v == "xvdz"
        ));
    }

    #[test]
    fn untouched_config_passes_through_with_one_nul() {
        let raw = b"{\"c_info\": {\"name\": \"a\"}}\0";
        let out = prepare_config(raw, &ConfigRewrite::default()).unwrap();
        assert_eq!(out, b"{\"c_info\": {\"name\": \"a\"}}\0");
    }

    #[test]
    fn empty_config_stays_empty() {
        assert!(prepare_config(b"", &ConfigRewrite::default())
            .unwrap()
            .is_empty());
        assert!(prepare_config(b"\0", &ConfigRewrite::default())
            .unwrap()
            .is_empty());
        let rename = ConfigRewrite {
            rename: Some("x".into()),
            ..Default::default()
        };
        assert!(matches!(
            prepare_config(b"", &rename),
            Err(ConfigRewriteError::NotJson(_))
        ));
    }

    #[test]
    fn domid_is_cleared_unless_preserved() {
        let raw = br#"{"c_info": {"name": "a", "domid": 7}}"#;
        let out = prepare_config(raw, &ConfigRewrite::default()).unwrap();
        let v: Value = serde_json::from_slice(strip_nul(&out)).unwrap();
        assert_eq!(v["c_info"]["domid"], 0);
        let keep = ConfigRewrite {
            preserve_domid: true,
            ..Default::default()
        };
        let out = prepare_config(raw, &keep).unwrap();
        assert_eq!(strip_nul(&out), raw);
    }

    #[test]
    fn disks_are_pointed_at_their_clones() {
        let raw =
            br#"{"c_info": {"name": "a"}, "disks": [{"vdev": "xvda", "pdev_path": "/d/a.img"}]}"#;
        let rw = ConfigRewrite {
            disk_paths: [("xvda".to_string(), "/d/a.img.clone".to_string())].into(),
            ..Default::default()
        };
        let out = prepare_config(raw, &rw).unwrap();
        let v: Value = serde_json::from_slice(strip_nul(&out)).unwrap();
        assert_eq!(v["disks"][0]["pdev_path"], "/d/a.img.clone");
        assert!(
            v["disks"][0].get("backend").is_none(),
            "only the path changes"
        );
        // A disk fetched from another host: its local overlay, on qdisk.
        let fetched = ConfigRewrite {
            disk_paths: [("xvda".to_string(), "/l/a.qcow2".to_string())].into(),
            overlays: ["xvda".to_string()].into(),
            ..Default::default()
        };
        let out = prepare_config(raw, &fetched).unwrap();
        let v: Value = serde_json::from_slice(strip_nul(&out)).unwrap();
        let d = &v["disks"][0];
        assert_eq!(
            (&d["pdev_path"], &d["backend"], &d["format"]),
            (&"/l/a.qcow2".into(), &"qdisk".into(), &"qcow2".into())
        );
        let missing = ConfigRewrite {
            disk_paths: [("xvdz".to_string(), "/x".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(
            prepare_config(raw, &missing),
            Err(ConfigRewriteError::Disks(DiskConfigError::NoSuchDisk(v))) if v == "xvdz"
        ));
    }

    #[test]
    fn uuid_is_v4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn guest_type_from_config() {
        assert_eq!(
            guest_type_of(br#"{"c_info":{"type":"pvh"}}"#),
            Some(GuestType::Pvh)
        );
        assert_eq!(
            guest_type_of(br#"{"b_info":{"type":"hvm"}}"#),
            Some(GuestType::Hvm)
        );
        assert_eq!(guest_type_of(b"not json"), None);
    }
}
