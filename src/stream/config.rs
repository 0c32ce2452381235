//! The libxl JSON domain config embedded in the `xl` savefile header: renaming, a fresh uuid,
//! clearing the domid (as `xl save` does without `-D`), and reading the guest type.

use serde_json::Value;

use super::error::StreamWriteError;
use crate::hv::GuestType;

/// What to change in the embedded config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigRewrite {
    /// New `c_info.name`; a fresh random `c_info.uuid` goes with it.
    pub rename: Option<String>,
    /// Keep `c_info.domid` (like `xl save -D`); otherwise it is set to 0 so the restored
    /// domain gets a fresh domid.
    pub preserve_domid: bool,
    /// New `disks[].pdev_path` per vdev (a restore from disk snapshots).
    pub disk_paths: std::collections::BTreeMap<String, String>,
}

/// The config bytes to embed: the JSON text (rewritten if needed) followed by one NUL, as
/// `xl save` writes it (`strlen + 1`); empty when there is no config at all.
pub fn prepare_config(raw: &[u8], rw: &ConfigRewrite) -> Result<Vec<u8>, StreamWriteError> {
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

/// The config without its trailing NUL(s): what the parser hands to a sink.
pub fn strip_nul(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &raw[..end]
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

fn rewrite(text: &[u8], rw: &ConfigRewrite) -> Result<Vec<u8>, StreamWriteError> {
    let mut root: Value = serde_json::from_slice(text).map_err(|e| {
        StreamWriteError::BadConfig(format!(
            "it is not libxl JSON ({e}), so the domain cannot be renamed nor its domid cleared"
        ))
    })?;
    let c_info = root
        .get_mut("c_info")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| StreamWriteError::BadConfig("it has no \"c_info\" object".into()))?;
    if let Some(name) = &rw.rename {
        c_info.insert("name".into(), Value::String(name.clone()));
        c_info.insert("uuid".into(), Value::String(random_uuid()));
    }
    if !rw.preserve_domid && c_info.contains_key("domid") {
        c_info.insert("domid".into(), Value::from(0u32));
    }
    crate::disk::config::point_disks_at(&mut root, &rw.disk_paths)
        .map_err(|e| StreamWriteError::BadConfig(e.to_string()))?;
    serde_json::to_vec_pretty(&root).map_err(|e| StreamWriteError::BadConfig(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(StreamWriteError::BadConfig(_))
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
        let missing = ConfigRewrite {
            disk_paths: [("xvdz".to_string(), "/x".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(
            prepare_config(raw, &missing),
            Err(StreamWriteError::BadConfig(m)) if m.contains("xvdz")
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
