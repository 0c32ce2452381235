//! Where a layer's bytes go on their way to the file.
//!
//! On a file system backed by a device the bytes go straight to it (`O_DIRECT`), gathered in
//! aligned blocks of [`STAGE_BYTES`]: one copy into the block, none into the page cache, no
//! write-back work of the kernel's, and a checkpoint does not push the dom0's own cache out.
//! On tmpfs and ramfs (the page cache is the file: a direct write would be the same copy plus
//! the block's), and wherever the file system refuses `O_DIRECT`, the bytes go through the page
//! cache as before, in a small buffer that lets large frames through without a copy; the
//! layer writer then makes them durable window by window ([`super::writer`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rustix::fs::OFlags;

/// Alignment of a direct write's buffer, file offset and length: a page, which covers devices
/// of 512- and 4096-byte sectors.
const BLOCK: usize = 4096;
/// Bytes gathered per direct write.
pub const STAGE_BYTES: usize = 4 << 20;
/// Buffer of the cached path: small, so that a frame (64 pages by default, compressed or not,
/// is mostly larger) goes from the encoder's buffer to the kernel without a copy in between;
/// sections and small frames are still gathered.
const BUF_BYTES: usize = 64 << 10;
/// `statfs` magic numbers of file systems held in the page cache alone.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// An append-only destination for a layer's bytes.
pub enum Sink {
    /// Through the page cache.
    Cached(BufWriter<File>),
    /// Straight to the device.
    Direct(DirectFile),
}

impl Sink {
    /// A sink for `file`, just created and empty: direct where the file system takes it.
    pub fn new(file: File) -> Sink {
        if memory_backed(&file) || set_direct(&file, true).is_err() {
            return Sink::Cached(BufWriter::with_capacity(BUF_BYTES, file));
        }
        match DirectFile::start(file) {
            Ok(d) => Sink::Direct(d),
            // No thread for it: through the cache after all (the flag belongs to the open
            // file, which the thread's copy shared).
            Err(file) => {
                let _ = set_direct(&file, false);
                Sink::Cached(BufWriter::with_capacity(BUF_BYTES, file))
            }
        }
    }

    /// Whether the bytes go straight to the device (as opened: a file system that takes
    /// the flag may still refuse a write, which then goes through the cache).
    pub fn is_direct(&self) -> bool {
        matches!(self, Sink::Direct(_))
    }

    /// The file behind a cached sink, with everything written so far handed to the kernel
    /// (for write-back windows); `None` for a direct sink, whose bytes are never cached.
    pub fn cached_file(&mut self) -> Option<io::Result<&File>> {
        match self {
            Sink::Cached(w) => Some(w.flush().map(|()| w.get_ref())),
            Sink::Direct(_) => None,
        }
    }

    /// Write what is still held and give the file back (not yet synced).
    pub fn into_file(self) -> io::Result<File> {
        match self {
            Sink::Cached(w) => w.into_inner().map_err(|e| e.into_error()),
            Sink::Direct(d) => d.into_file(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Cached(w) => w.write(bytes),
            Sink::Direct(d) => d.write(bytes),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Cached(w) => w.write_all(bytes),
            Sink::Direct(d) => d.write_all(bytes),
        }
    }

    /// A cached sink hands its buffer to the kernel; a direct one keeps a partial block until
    /// it is full or the file is finished ([`Sink::into_file`]).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Cached(w) => w.flush(),
            Sink::Direct(_) => Ok(()),
        }
    }
}

/// An aligned block of [`STAGE_BYTES`] and how much of it is filled.
struct Block {
    /// The block is `buf[start..start + STAGE_BYTES]`, aligned to [`BLOCK`].
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        // Its pages present now, in one call, not by the first bytes copied in.
        let buf = crate::guestmem::prefaulted(STAGE_BYTES + BLOCK);
        let start = buf.as_ptr().align_offset(BLOCK);
        Block { buf, start, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// A file written with `O_DIRECT` by a thread of its own, from aligned blocks: the writer
/// fills one block while up to [`BLOCKS`] - 1 others are on their way to the device.
pub struct DirectFile {
    cur: Block,
    /// Full blocks to the I/O thread.
    to_io: Option<SyncSender<Block>>,
    /// Blocks written, back for reuse.
    back: Receiver<Block>,
    /// Blocks made so far.
    made: usize,
    /// The I/O thread: the file when all is written, or the first error.
    io: Option<JoinHandle<io::Result<File>>>,
}

/// Blocks per file: the one being filled and those in flight (16 MiB in all).
const BLOCKS: usize = 4;

impl DirectFile {
    /// The writer of `file`, or `file` back if its thread cannot be had.
    fn start(file: File) -> Result<DirectFile, File> {
        let Ok(own) = file.try_clone() else {
            return Err(file);
        };
        let (to_io, rx) = mpsc::sync_channel::<Block>(BLOCKS);
        let (back_tx, back) = mpsc::channel();
        let io = std::thread::Builder::new()
            .name("xckpt-direct".into())
            .spawn(move || {
                let mut direct = true;
                for mut b in rx {
                    write_block(&own, &mut direct, b.filled())?;
                    b.len = 0;
                    // The writer may be gone (it finished or failed): nothing to hand back.
                    let _ = back_tx.send(b);
                }
                Ok(own)
            });
        match io {
            Ok(io) => Ok(DirectFile {
                cur: Block::new(),
                to_io: Some(to_io),
                back,
                made: 1,
                io: Some(io),
            }),
            Err(_) => Err(file),
        }
    }

    /// Hand the full block to the I/O thread and take an empty one.
    fn pass_block(&mut self) -> io::Result<()> {
        let next = if self.made < BLOCKS {
            self.made += 1;
            Block::new()
        } else {
            match self.back.recv() {
                Ok(b) => b,
                Err(_) => return Err(self.io_failed()),
            }
        };
        let full = std::mem::replace(&mut self.cur, next);
        let sent = self.to_io.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.io_failed()),
        }
    }

    /// No more blocks: wait for the I/O thread to write those it has. The file, or the first
    /// error.
    fn join_io(&mut self) -> io::Result<File> {
        self.to_io = None;
        match self.io.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(thread_stopped()),
        }
    }

    /// The I/O thread stopped early: its error.
    fn io_failed(&mut self) -> io::Error {
        self.join_io().err().unwrap_or_else(thread_stopped)
    }

    fn into_file(mut self) -> io::Result<File> {
        let file = self.join_io()?;
        if self.cur.len > 0 {
            // The tail is shorter than a block: through the page cache, at its exact length.
            set_direct(&file, false)?;
            (&file).write_all(self.cur.filled())?;
        }
        Ok(file)
    }
}

impl Drop for DirectFile {
    /// Unfinished (a failed layer, whose file is removed): the blocks in flight are written
    /// out before the thread is gone.
    fn drop(&mut self) {
        let _ = self.join_io();
    }
}

impl Write for DirectFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let b = &mut self.cur;
        let n = bytes.len().min(STAGE_BYTES - b.len);
        let at = b.start + b.len;
        b.buf[at..at + n].copy_from_slice(&bytes[..n]);
        b.len += n;
        if b.len == STAGE_BYTES {
            self.pass_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write one block at the file's position. A file system that took the flag but refuses the
/// write (`EINVAL`) gets this block and the rest through the page cache.
fn write_block(mut file: &File, direct: &mut bool, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(file, false)?;
                *direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn thread_stopped() -> io::Error {
    io::Error::other("the direct-write thread stopped")
}

fn memory_backed(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|s| {
        // `f_type` is an i64 on x86_64 and narrower on some other targets.
        #[allow(clippy::unnecessary_cast)]
        let t = s.f_type as i64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes of every length class: below a block, across blocks, and more blocks than
    /// [`BLOCKS`] (each is reused once written).
    fn payload() -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        let mut seed = 7u8;
        let more_than_all_blocks = BLOCKS * STAGE_BYTES + 5;
        for len in [
            1,
            4095,
            4096,
            70_000,
            STAGE_BYTES + 12_345,
            3,
            more_than_all_blocks,
            9,
        ] {
            parts.push(
                (0..len)
                    .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                    .collect(),
            );
            seed = seed.wrapping_add(1);
        }
        parts
    }

    fn round_trip(dir: &std::path::Path) -> bool {
        let path = dir.join("sink");
        let file = crate::fileio::create_private(&path).unwrap();
        let mut sink = Sink::new(file);
        let direct = sink.is_direct();
        let parts = payload();
        for p in &parts {
            sink.write_all(p).unwrap();
        }
        sink.flush().unwrap();
        sink.into_file().unwrap().sync_all().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, parts.concat(), "direct={direct}");
        direct
    }

    #[test]
    fn every_byte_lands_in_order_at_its_exact_length() {
        // Direct where this machine's temporary directory takes it; cached otherwise.
        let dir = tempfile::tempdir().unwrap();
        round_trip(dir.path());
    }

    #[test]
    fn an_unfinished_sink_is_dropped_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let file = crate::fileio::create_private(&dir.path().join("sink")).unwrap();
        let mut sink = Sink::new(file);
        sink.write_all(&vec![1u8; 2 * STAGE_BYTES + 100]).unwrap();
        drop(sink);
    }

    /// A device that fails every write (`/dev/full`: ENOSPC), behind the direct path's thread:
    /// the error comes back to the writer, whether it was writing on or finishing.
    #[test]
    fn a_failed_write_comes_back_to_the_writer() {
        let full = || {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .map(|f| DirectFile::start(f).unwrap_or_else(|_| panic!("no thread")))
        };
        let Ok(mut d) = full() else { return };
        let on = (0..2 * BLOCKS)
            .map(|_| d.write_all(&vec![3u8; STAGE_BYTES]))
            .find_map(Result::err);
        let e = on.expect("writing on past a failed block must fail");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");

        let mut d = full().unwrap();
        d.write_all(&vec![3u8; STAGE_BYTES + 10]).unwrap();
        let e = d
            .into_file()
            .expect_err("finishing after a failed block must fail");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    }

    #[test]
    fn tmpfs_goes_through_the_page_cache() {
        let shm = std::path::Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        assert!(!round_trip(dir.path()), "tmpfs must not be written direct");
    }
}
