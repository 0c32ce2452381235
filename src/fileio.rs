//! Private file I/O, the one way every writer and reader of xckpt's files opens them.
//!
//! * Reads never follow a symlink in the last component ([`open_nofollow`], [`read_nofollow`]):
//!   a link planted in a store directory cannot point a reader elsewhere.
//! * New files are created 0600, exclusively, without following a symlink
//!   ([`create_private`]); a file opened or created in place (a lock) is 0600 too
//!   ([`open_private`]).
//! * A rename is made durable by fsyncing its directory ([`sync_dir`]).
//!
//! Every descriptor is close-on-exec. Versioned JSON (the manifests) is read and replaced
//! atomically on top of these by `store::manifest`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Open a file for reading without following a symlink in its last component.
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Read a whole file without following a symlink in its last component.
pub fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_nofollow(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Create `path` for writing, mode 0600; it must not exist (nor be a symlink).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Replace `dir/name` with `bytes`, atomically: a fresh 0600 file `.name.tmp` (a leftover of
/// an earlier try is removed first), synced, renamed over it. The rename itself is made
/// durable by [`sync_dir`], if the caller needs that.
pub fn replace_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

/// Open `path` for reading and writing, creating it 0600 if needed and never truncating it;
/// a symlink is refused.
pub fn open_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// fsync a directory so a rename in it is durable (a symlink is refused).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?
        .sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        create_private(&p).unwrap().write_all(b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(create_private(&p).is_err(), "exclusive");
        assert_eq!(read_nofollow(&p).unwrap(), b"x");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read_nofollow(&link).is_err());
        assert!(open_private(&link).is_err());
        let lock = dir.path().join("lock");
        open_private(&lock).unwrap();
        assert_eq!(
            open_private(&p).unwrap().metadata().unwrap().len(),
            1,
            "not truncated"
        );
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&link).is_err());
    }
}
