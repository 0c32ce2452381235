//! `hook`: a user script for storage xckpt does not know (a SAN, Ceph RBD, ZFS). It is run with
//! a time limit as
//!
//! ```text
//! SCRIPT probe    DISK_PATH              exit 0 if it can snapshot this disk
//! SCRIPT snapshot DISK_PATH SNAP_NAME    take it (the domain is stopped); print its location
//! SCRIPT clone    SNAPSHOT  CLONE_NAME   make a writable clone; print the path for the config
//! SCRIPT delete   SNAPSHOT               drop a snapshot no layer refers to
//! ```
//!
//! The location is the last line the script prints (`snapshot`: the snapshot name if it
//! prints nothing).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::command::{last_line, run};
use super::{Backend, BackendKind, DiskSnapshot, DiskSpec};

/// Runs the user's script.
pub struct Hook {
    /// The script.
    pub script: PathBuf,
    /// Time limit of one call.
    pub limit: Duration,
}

impl Hook {
    fn call(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.script);
        c.args(args);
        run(c, self.limit).map_err(|e| format!("hook {} {}: {e}", self.script.display(), args[0]))
    }
}

impl Backend for Hook {
    fn kind(&self) -> BackendKind {
        BackendKind::Hook
    }

    fn check(&self, disk: &DiskSpec) -> Result<(), String> {
        self.call(&["probe", &disk.pdev_path]).map(drop)
    }

    fn snapshot(&self, disk: &DiskSpec, name: &str) -> Result<String, String> {
        let out = self.call(&["snapshot", &disk.pdev_path, name])?;
        Ok(last_line(&out).unwrap_or_else(|| name.to_string()))
    }

    fn clone_writable(&self, snap: &DiskSnapshot, name: &str) -> Result<String, String> {
        let out = self.call(&["clone", &snap.snapshot, name])?;
        last_line(&out)
            .ok_or_else(|| format!("hook {} clone printed no path", self.script.display()))
    }

    fn discard(&self, snap: &DiskSnapshot) -> Result<(), String> {
        self.call(&["delete", &snap.snapshot]).map(drop)
    }

    fn script(&self) -> Option<String> {
        Some(self.script.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("hook.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    #[test]
    fn passes_disk_and_name_and_reads_the_location() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let body = format!(
            "echo \"$@\" >> {}\ncase $1 in probe) exit 0;; snapshot) echo \"snap:$3\";; clone) echo /dev/clone;; esac",
            log.display()
        );
        let hook = Hook {
            script: script(dir.path(), &body),
            limit: Duration::from_secs(5),
        };
        let disk = DiskSpec {
            vdev: "xvda".into(),
            pdev_path: "/dev/san/lun1".into(),
            backend: "phy".into(),
            format: "raw".into(),
            domid: 3,
        };
        hook.check(&disk).unwrap();
        assert_eq!(hook.snapshot(&disk, "s1").unwrap(), "snap:s1");
        let record = DiskSnapshot {
            vdev: "xvda".into(),
            source: disk.pdev_path.clone(),
            backend: BackendKind::Hook,
            snapshot: "snap:s1".into(),
            hook: Some(hook.script.display().to_string()),
            host: None,
            format: None,
        };
        assert_eq!(hook.clone_writable(&record, "c1").unwrap(), "/dev/clone");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls,
            "probe /dev/san/lun1\nsnapshot /dev/san/lun1 s1\nclone snap:s1 c1\n"
        );
    }

    #[test]
    fn a_hung_hook_is_killed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let hook = Hook {
            script: script(dir.path(), "sleep 10"),
            limit: Duration::from_millis(200),
        };
        let disk = DiskSpec {
            vdev: "xvda".into(),
            pdev_path: "/x".into(),
            backend: "phy".into(),
            format: "raw".into(),
            domid: 3,
        };
        let e = hook.snapshot(&disk, "s").unwrap_err();
        assert!(
            e.contains("hook.sh snapshot") && e.contains("killed"),
            "{e}"
        );
    }
}
