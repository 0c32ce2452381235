//! The chain lock: an exclusive `flock` on the chain's `lock` file, held by the one process
//! that writes the chain.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use super::{io, StoreError};

/// The lock file's name.
pub const LOCK_FILE: &str = "lock";

/// A held chain lock; released when dropped.
#[derive(Debug)]
pub struct ChainLock {
    _file: File,
    path: PathBuf,
}

impl ChainLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let file = crate::fileio::open_private(path).map_err(|e| io(path, e))?;
    // A lock file made by something else with looser bits is tightened (it holds nothing,
    // but every file of a chain is 0600).
    let st = rustix::fs::fstat(&file).map_err(|e| io(path, e.into()))?;
    if st.st_mode & 0o077 != 0 {
        rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o600))
            .map_err(|e| io(path, e.into()))?;
    }
    Ok(file)
}

/// Try to take the lock in `dir` without waiting. None if another process holds it.
pub fn try_lock(dir: &Path) -> Result<Option<ChainLock>, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = open_lock_file(&path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(ChainLock { _file: file, path })),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => Ok(None),
        Err(e) => Err(io(&path, e.into())),
    }
}

/// Take the lock in `dir`, polling for up to `wait`.
pub fn lock(dir: &Path, chain: &str, wait: Duration) -> Result<ChainLock, StoreError> {
    let start = Instant::now();
    loop {
        if let Some(lock) = try_lock(dir)? {
            return Ok(lock);
        }
        if start.elapsed() >= wait {
            return Err(StoreError::Locked {
                chain: chain.to_string(),
                path: dir.join(LOCK_FILE),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20).min(wait));
    }
}
