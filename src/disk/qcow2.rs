//! `qcow2`: a qcow2 image served by QEMU's qdisk back-end. QMP `blockdev-snapshot-sync` puts a
//! new overlay on top of the image the device writes to; from then on the old top is
//! read-only and is the snapshot, and the guest writes into the overlay. The restore clone is
//! one more overlay on top of the snapshot (`qemu-img create -b`), so the snapshot is never
//! written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::command::run;
use super::{Backend, BackendKind, DiskSnapshot, DiskSpec};
use crate::libxl::qmp;

/// Talks to the device model over QMP.
pub struct Qcow2 {
    /// Directory of libxl's `qmp-libxl-<domid>` sockets.
    pub qmp_dir: PathBuf,
    /// Time limit of `qemu-img`.
    pub limit: Duration,
}

/// The `device` of `query-block` output whose image chain holds `path`, and the file name of
/// the image it writes to now.
pub fn find_device(blocks: &Value, path: &str) -> Option<(String, String)> {
    blocks.as_array()?.iter().find_map(|b| {
        let inserted = b.get("inserted")?;
        let mut image = inserted.get("image");
        let mut holds = false;
        while let Some(i) = image {
            holds |= i.get("filename").and_then(Value::as_str) == Some(path);
            image = i.get("backing-image");
        }
        let top = inserted.get("file").and_then(Value::as_str)?.to_string();
        let device = b
            .get("device")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .or_else(|| inserted.get("node-name").and_then(Value::as_str))?
            .to_string();
        (holds || top == path).then_some((device, top))
    })
}

impl Qcow2 {
    fn socket(&self, disk: &DiskSpec) -> PathBuf {
        qmp::socket_path(&self.qmp_dir, disk.domid)
    }

    fn device(&self, disk: &DiskSpec) -> Result<(String, String), String> {
        query_device(&self.socket(disk), &disk.pdev_path).map(|(found, _)| found)
    }
}

/// `query-block` on the device model's QMP socket `sock`: the device whose image chain holds
/// `path` and the file it writes to now ([`find_device`]), with the whole answer.
pub fn query_device(sock: &Path, path: &str) -> Result<((String, String), Value), String> {
    let blocks = qmp::execute(sock, "query-block", json!({})).map_err(|e| e.to_string())?;
    let found = find_device(&blocks, path).ok_or_else(|| {
        format!(
            "the device model ({}) serves no image {path}",
            sock.display()
        )
    })?;
    Ok((found, blocks))
}

impl Backend for Qcow2 {
    fn kind(&self) -> BackendKind {
        BackendKind::Qcow2
    }

    fn check(&self, disk: &DiskSpec) -> Result<(), String> {
        if disk.backend != "qdisk" || disk.format != "qcow2" {
            return Err(format!(
                "disk is {}/{}, not a qcow2 image on the qdisk back-end",
                disk.backend, disk.format
            ));
        }
        self.device(disk).map(drop)
    }

    fn snapshot(&self, disk: &DiskSpec, name: &str) -> Result<String, String> {
        let (device, top) = self.device(disk)?;
        let overlay = format!("{top}.{name}.live");
        let args = json!({ "device": device, "snapshot-file": overlay, "format": "qcow2" });
        qmp::execute(&self.socket(disk), "blockdev-snapshot-sync", args)
            .map_err(|e| e.to_string())?;
        // The former top is frozen now: it is the snapshot.
        Ok(top)
    }

    fn clone_writable(&self, snap: &DiskSnapshot, name: &str) -> Result<String, String> {
        let clone = format!("{}.{name}", snap.snapshot);
        let mut c = Command::new("qemu-img");
        c.args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            &snap.snapshot,
            &clone,
        ]);
        run(c, self.limit)?;
        Ok(clone)
    }

    fn discard(&self, _snap: &DiskSnapshot) -> Result<(), String> {
        // The frozen image is the backing file of the running disk: it cannot be removed.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_device_by_any_image_of_its_chain() {
        let blocks = json!([
            { "device": "", "inserted": { "node-name": "xvda-node", "file": "/d/a.qcow2",
              "image": { "filename": "/d/a.qcow2" } } },
            { "device": "xvdb", "inserted": { "file": "/d/b.qcow2.s1.live",
              "image": { "filename": "/d/b.qcow2.s1.live",
                         "backing-image": { "filename": "/d/b.qcow2" } } } }
        ]);
        assert_eq!(
            find_device(&blocks, "/d/a.qcow2"),
            Some(("xvda-node".into(), "/d/a.qcow2".into()))
        );
        assert_eq!(
            find_device(&blocks, "/d/b.qcow2"),
            Some(("xvdb".into(), "/d/b.qcow2.s1.live".into()))
        );
        assert_eq!(find_device(&blocks, "/d/c.qcow2"), None);
    }
}
