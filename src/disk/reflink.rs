//! `reflink`: a file-backed disk on a file system that shares extents (XFS, btrfs). The
//! snapshot is a `FICLONE` copy of the file next to it: instant, and it shares every block
//! until one side writes. The file system flushes the source's dirty page cache before it
//! clones, so what blkback wrote before the stop is in the snapshot.

use std::fs::File;
use std::path::Path;

use super::{Backend, BackendKind, DiskSnapshot, DiskSpec};

/// Clones files with `FICLONE`.
pub struct Reflink;

/// Create `dst` (0600, must not exist) as a reflink clone of `src`, and make it durable.
fn clone_file(src: &Path, dst: &Path) -> Result<(), String> {
    let from = File::open(src).map_err(|e| format!("cannot open {}: {e}", src.display()))?;
    let to = crate::fileio::create_private(dst)
        .map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    let cloned = rustix::fs::ioctl_ficlone(&to, &from)
        .map_err(|e| {
            format!(
                "the file system of {} cannot share extents (FICLONE: {e}); reflink needs XFS \
                 (reflink=1) or btrfs",
                src.display()
            )
        })
        .and_then(|()| to.sync_all().map_err(|e| format!("{}: {e}", dst.display())));
    if cloned.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    cloned
}

impl Backend for Reflink {
    fn kind(&self) -> BackendKind {
        BackendKind::Reflink
    }

    fn check(&self, disk: &DiskSpec) -> Result<(), String> {
        let src = Path::new(&disk.pdev_path);
        let md = std::fs::metadata(src).map_err(|e| format!("{}: {e}", disk.pdev_path))?;
        if !md.is_file() {
            return Err(format!("{} is not a regular file", disk.pdev_path));
        }
        // Prove it on the real file system: clone the disk into a probe file and remove it.
        let probe = sibling(
            &disk.pdev_path,
            &format!("xckpt-probe-{}", std::process::id()),
        );
        let r = clone_file(src, Path::new(&probe));
        let _ = std::fs::remove_file(&probe);
        r
    }

    fn snapshot(&self, disk: &DiskSpec, name: &str) -> Result<String, String> {
        let dst = sibling(&disk.pdev_path, name);
        clone_file(Path::new(&disk.pdev_path), Path::new(&dst))?;
        Ok(dst)
    }

    fn clone_writable(&self, snap: &DiskSnapshot, name: &str) -> Result<String, String> {
        let dst = sibling(&snap.snapshot, name);
        clone_file(Path::new(&snap.snapshot), Path::new(&dst))?;
        Ok(dst)
    }

    fn discard(&self, snap: &DiskSnapshot) -> Result<(), String> {
        std::fs::remove_file(&snap.snapshot).map_err(|e| format!("{}: {e}", snap.snapshot))
    }
}

/// `path` with `.suffix` appended: a file in the same directory (so on the same file system).
fn sibling(path: &str, suffix: &str) -> String {
    format!("{path}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_where_the_file_system_can_and_says_why_not_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![7u8; 8192]).unwrap();
        let spec = DiskSpec {
            vdev: "xvda".into(),
            pdev_path: img.display().to_string(),
            backend: "phy".into(),
            format: "raw".into(),
            domid: 1,
        };
        let can = Reflink.check(&spec);
        match &can {
            Ok(()) => {
                // A file system with reflink (XFS, btrfs): the snapshot keeps the old bytes.
                let snap = Reflink.snapshot(&spec, "snap").unwrap();
                std::fs::write(&img, vec![9u8; 8192]).unwrap();
                assert_eq!(std::fs::read(&snap).unwrap(), vec![7u8; 8192]);
            }
            Err(why) => assert!(why.contains("FICLONE"), "{why}"),
        }
        // No probe file is left behind either way: the disk, and the snapshot if one was made.
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, if can.is_ok() { 2 } else { 1 });
        let dir_spec = DiskSpec {
            pdev_path: dir.path().display().to_string(),
            ..spec
        };
        assert!(Reflink
            .check(&dir_spec)
            .unwrap_err()
            .contains("not a regular file"));
    }
}
