//! `lvm`: a disk on an LVM logical volume, snapshotted with `lvcreate --snapshot`. A thin
//! volume's snapshot costs nothing; a thick one gets copy-on-write space of its own
//! (`--lvm-snapshot-size`, 20% of the origin by default). The restore clone is a snapshot of
//! the snapshot (thin), or a new volume the snapshot is copied into (thick: LVM cannot
//! snapshot a thick snapshot).

use std::process::Command;
use std::time::Duration;

use super::command::run;
use super::{Backend, BackendKind, DiskSnapshot, DiskSpec};

/// Runs the LVM tools.
pub struct Lvm {
    /// Copy-on-write size of a thick snapshot, as `lvcreate` takes it (`-l 20%ORIGIN`, `-L 2G`).
    pub snapshot_size: String,
    /// Time limit of one LVM command.
    pub limit: Duration,
}

/// What `lvs` says about a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Volume group.
    pub vg: String,
    /// Logical volume.
    pub lv: String,
    /// Thin volume (its attribute starts with `V`).
    pub thin: bool,
    /// Size in bytes.
    pub bytes: u64,
}

/// Parse one line of `lvs --noheadings --units b --nosuffix -o vg_name,lv_name,lv_attr,lv_size`.
pub fn parse_lvs(out: &str) -> Option<Volume> {
    let mut w = out.split_whitespace();
    let (vg, lv, attr, size) = (w.next()?, w.next()?, w.next()?, w.next()?);
    Some(Volume {
        vg: vg.into(),
        lv: lv.into(),
        thin: attr.starts_with('V'),
        bytes: size.parse().ok()?,
    })
}

impl Lvm {
    fn lvs(&self, path: &str) -> Result<Volume, String> {
        let mut c = Command::new("lvs");
        c.args(["--noheadings", "--units", "b", "--nosuffix"])
            .args(["-o", "vg_name,lv_name,lv_attr,lv_size", path]);
        let out = run(c, self.limit)?;
        parse_lvs(&out).ok_or_else(|| format!("{path} is not an LVM logical volume"))
    }

    /// The `lvcreate` arguments of a snapshot named `name` of `vol`.
    pub fn snapshot_args(&self, vol: &Volume, name: &str) -> Vec<String> {
        let mut a = vec!["--snapshot".to_string(), "-n".into(), name.into()];
        if vol.thin {
            // Thin snapshots are created with "activation skip": activate this one.
            a.extend(["-ay".into(), "-K".into()]);
        } else if self.snapshot_size.ends_with("ORIGIN") {
            a.extend(["-l".into(), self.snapshot_size.clone()]);
        } else {
            a.extend(["-L".into(), self.snapshot_size.clone()]);
        }
        a.push(format!("{}/{}", vol.vg, vol.lv));
        a
    }

    fn lvcreate(&self, args: &[String]) -> Result<(), String> {
        let mut c = Command::new("lvcreate");
        c.arg("-y").args(args);
        run(c, self.limit).map(drop)
    }
}

impl Backend for Lvm {
    fn kind(&self) -> BackendKind {
        BackendKind::Lvm
    }

    fn check(&self, disk: &DiskSpec) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        let md =
            std::fs::metadata(&disk.pdev_path).map_err(|e| format!("{}: {e}", disk.pdev_path))?;
        if !md.file_type().is_block_device() {
            return Err(format!("{} is not a block device", disk.pdev_path));
        }
        self.lvs(&disk.pdev_path).map(drop)
    }

    fn snapshot(&self, disk: &DiskSpec, name: &str) -> Result<String, String> {
        let vol = self.lvs(&disk.pdev_path)?;
        self.lvcreate(&self.snapshot_args(&vol, name))?;
        Ok(format!("/dev/{}/{name}", vol.vg))
    }

    fn clone_writable(&self, snap: &DiskSnapshot, name: &str) -> Result<String, String> {
        let vol = self.lvs(&snap.snapshot)?;
        let path = format!("/dev/{}/{name}", vol.vg);
        if vol.thin {
            self.lvcreate(&self.snapshot_args(&vol, name))?;
            return Ok(path);
        }
        self.lvcreate(&[
            "-L".into(),
            format!("{}b", vol.bytes),
            "-n".into(),
            name.into(),
            vol.vg.clone(),
        ])?;
        let copied = std::fs::File::open(&snap.snapshot).and_then(|mut from| {
            let mut to = std::fs::OpenOptions::new().write(true).open(&path)?;
            std::io::copy(&mut from, &mut to)?;
            to.sync_all()
        });
        copied.map_err(|e| format!("copying {} into {path}: {e}", snap.snapshot))?;
        Ok(path)
    }

    fn discard(&self, snap: &DiskSnapshot) -> Result<(), String> {
        let mut c = Command::new("lvremove");
        c.args(["-f", &snap.snapshot]);
        run(c, self.limit).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lvs_and_builds_lvcreate_arguments() {
        let thick = parse_lvs("  vg0 data -wi-ao---- 10737418240\n").unwrap();
        assert_eq!(
            (thick.vg.as_str(), thick.lv.as_str(), thick.thin),
            ("vg0", "data", false)
        );
        assert_eq!(thick.bytes, 10 << 30);
        let thin = parse_lvs("vg0 tdisk Vwi-a-tz-- 4194304").unwrap();
        assert!(thin.thin);
        assert!(parse_lvs("").is_none());
        let lvm = Lvm {
            snapshot_size: "20%ORIGIN".into(),
            limit: Duration::from_secs(1),
        };
        assert_eq!(
            lvm.snapshot_args(&thick, "s1").join(" "),
            "--snapshot -n s1 -l 20%ORIGIN vg0/data"
        );
        assert_eq!(
            lvm.snapshot_args(&thin, "s2").join(" "),
            "--snapshot -n s2 -ay -K vg0/tdisk"
        );
        let sized = Lvm {
            snapshot_size: "2G".into(),
            ..lvm
        };
        assert!(sized.snapshot_args(&thick, "s").join(" ").contains("-L 2G"));
    }
}
