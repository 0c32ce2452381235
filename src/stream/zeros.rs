//! Zero pages into a pipe without copying them: [`ZeroTee`].
//!
//! A stream sends zero and evicted pages as 4096 real zero bytes (docs/stream.md says why),
//! often half of a restore's stream. Written with `write`, each is a copy into the pipe, paid
//! on the dom0 CPU that `xl restore` needs too. A second pipe filled with zeros once lends its
//! pages instead: `tee(2)` puts references to them into the stream's pipe and leaves them in
//! place for the next run. `xl restore` reads them as it reads any other bytes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::{fcntl_setpipe_size, pipe_with, tee, PipeFlags, SpliceFlags};

use crate::hv::PAGE_SIZE;

/// Bytes of zeros the source pipe holds: the most one `tee` lends.
const HELD: usize = 1 << 20;

/// A pipe of zeros, lent by `tee` into a stream's pipe.
pub struct ZeroTee {
    /// The read end, full of zeros (never read).
    zeros: OwnedFd,
    /// The write end, kept open so the pipe stays valid.
    _fill: OwnedFd,
    /// The stream's pipe (a duplicate of its write end).
    out: OwnedFd,
    /// Bytes of zeros in `zeros`.
    held: usize,
}

impl std::fmt::Debug for ZeroTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroTee").field("held", &self.held).finish()
    }
}

impl ZeroTee {
    /// A zero source for the pipe `out`; None if `out` is not a pipe or the source cannot be
    /// set up (then zero pages are written as bytes, as to a file).
    pub fn for_pipe(out: BorrowedFd<'_>) -> Option<ZeroTee> {
        let st = rustix::fs::fstat(out).ok()?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Fifo {
            return None;
        }
        let out = out.try_clone_to_owned().ok()?;
        let (zeros, fill) = pipe_with(PipeFlags::CLOEXEC).ok()?;
        let held = fcntl_setpipe_size(&fill, HELD).ok()?.min(HELD);
        let page = [0u8; PAGE_SIZE];
        let mut put = 0;
        while put + PAGE_SIZE <= held {
            match rustix::io::write(&fill, &page) {
                Ok(n) if n == PAGE_SIZE => put += n,
                _ => return None,
            }
        }
        (put > 0).then_some(ZeroTee {
            zeros,
            _fill: fill,
            out,
            held: put,
        })
    }

    /// Put `bytes` zero bytes into the stream's pipe (blocking while it is full).
    pub fn put(&self, mut bytes: usize) -> std::io::Result<()> {
        while bytes > 0 {
            match tee(
                &self.zeros,
                &self.out,
                bytes.min(self.held),
                SpliceFlags::empty(),
            ) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes -= n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The stream's pipe.
    pub fn out(&self) -> BorrowedFd<'_> {
        self.out.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn zeros_reach_the_pipe_between_the_bytes_written_around_them() {
        let (mut rd, wr) = std::io::pipe().unwrap();
        let z = ZeroTee::for_pipe(wr.as_fd()).expect("a pipe");
        let writer = std::thread::spawn(move || {
            let mut wr = wr;
            use std::io::Write;
            wr.write_all(b"head").unwrap();
            // More than the source holds, and not a whole page.
            z.put(3 * HELD + 100).unwrap();
            wr.write_all(b"tail").unwrap();
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), 8 + 3 * HELD + 100);
        assert_eq!(&got[..4], b"head");
        assert!(got[4..got.len() - 4].iter().all(|&b| b == 0));
        assert_eq!(&got[got.len() - 4..], b"tail");
        // Not a pipe: no tee.
        let f = tempfile::tempfile().unwrap();
        assert!(ZeroTee::for_pipe(f.as_fd()).is_none());
    }
}
