//! The restore half of `xckpt bench --sim`: the latest point restored through
//! [`xckpt::restore::restore_point`] (what `xckpt restore` runs) into a reader that consumes
//! the stream from a pipe as `xl restore` does and discards it, beside an xl-like baseline:
//! the same memory read back raw from a file on the store's file system.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use std::os::fd::AsFd;
use xckpt::compose::Image;
use xckpt::restore::{restore_point, RestoreError, RestoreOptions, WriteStream, XlTool};
use xckpt::store::Store;
use xckpt::stream::{GuestFill, StreamStats, FILL_BATCH};

/// The restore's figures (flattened into the bench's JSON).
#[derive(Debug, Serialize)]
pub struct RestoreFigures {
    /// Wall time of the restore of the latest point (open, compose, stream, consumed).
    pub restore_s: f64,
    /// Guest memory restored per second, GB/s.
    pub restore_gbps: f64,
    /// Wall time of reading the same memory back raw from a file (the xl-like baseline).
    pub xl_like_restore_s: f64,
    /// `restore_s / xl_like_restore_s`.
    pub restore_over_xl_like: f64,
    /// CPU seconds per GB of guest memory of each restore stage: read, decompress, check
    /// (the decode workers) and stream (the thread writing the stream into the pipe). Its
    /// own key: the capture's stages are `cpu_s_per_gb` in the same (flattened) object.
    #[serde(rename = "restore_cpu_s_per_gb")]
    pub cpu_s_per_gb: RestoreCpu,
    /// Bytes of the stream.
    pub stream_bytes: u64,
    /// For reference, the restore as it was before decoding once (2026-12-02): `verify` of
    /// every frame, then the stream read page by page through the reader's frame cache on one
    /// thread, into the same discarding reader.
    pub two_pass_restore_s: f64,
}

/// CPU seconds per GB of guest memory, per restore stage.
#[derive(Debug, Serialize)]
pub struct RestoreCpu {
    /// Reading frames.
    pub read: f64,
    /// Decompressing.
    pub decompress: f64,
    /// Checking frames and page digests.
    pub check: f64,
    /// Writing the stream into the pipe.
    pub stream: f64,
}

/// The check of the restore half: within 1.5x of the xl-like read-back.
pub const RESTORE_OVER_XL_LIKE_MAX: f64 = 1.5;

/// How much the stand-in for `xl restore` and the xl-like read-back read at once (libxc: one
/// record, up to 2 MiB).
const XL_READ_BYTES: usize = 1 << 20;

/// Stands for `xl restore`: a thread reads the stream from a pipe and discards it.
struct DiscardingXl {
    stream_cpu_ns: std::sync::atomic::AtomicU64,
}

impl XlTool for DiscardingXl {
    fn restore(
        &self,
        _paused: bool,
        _what: &str,
        write: &mut WriteStream<'_>,
    ) -> Result<StreamStats, RestoreError> {
        let (reader, writer) = rustix::pipe::pipe().map_err(|e| RestoreError::Spawn {
            xl: "pipe".into(),
            source: e.into(),
        })?;
        let (mut reader, mut writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
        xckpt::restore::size_pipe(&writer);
        std::thread::scope(|s| {
            // libxc reads the stream record by record, a PAGE_DATA record (up to 2 MiB) at
            // once; `io::copy`'s 8 KiB reads would cost the writer a wake-up per 8 KiB, which
            // on a one-vCPU dom0 made this stand-in far slower than `xl restore` itself.
            s.spawn(move || {
                let mut buf = vec![0u8; XL_READ_BYTES];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            });
            let t0 = xckpt::layer::thread_cpu_ns();
            let written = match writer.as_fd().try_clone_to_owned() {
                Ok(pipe) => {
                    let mut fill = ScratchFill {
                        pipe,
                        guest: vec![0u8; FILL_BATCH * xckpt::hv::PAGE_SIZE],
                    };
                    write(&mut writer, Some(&mut fill))
                }
                Err(_) => write(&mut writer, None),
            };
            let flushed = writer.flush();
            self.stream_cpu_ns.store(
                xckpt::layer::thread_cpu_ns() - t0,
                std::sync::atomic::Ordering::Relaxed,
            );
            drop(writer);
            let what = "bench".to_string();
            flushed.map_err(|e| RestoreError::Stream {
                what: what.clone(),
                source: Box::new(e.into()),
            })?;
            written.map_err(|source| RestoreError::Stream {
                what,
                source: Box::new(source),
            })
        })
    }

    fn destroy(&self, _name: &str) {}

    fn unpause(&self, _names: &[String]) -> Result<(), RestoreError> {
        Ok(())
    }
}

/// Stands for the memory of the domain `xl restore` builds: pages are copied into one region
/// of a batch's size, as they would be into the mapped guest frames.
struct ScratchFill {
    pipe: std::os::fd::OwnedFd,
    guest: Vec<u8>,
}

impl GuestFill for ScratchFill {
    fn drained(&mut self) -> std::io::Result<()> {
        // The reader reads until the pipe closes.
        xckpt::restore::pipe_drained(&self.pipe, || Ok(false))
    }

    fn write(
        &mut self,
        batch: &[(xckpt::hv::Pfn, Option<&[u8]>)],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for (&(_, page), dst) in batch
            .iter()
            .zip(self.guest.chunks_exact_mut(xckpt::hv::PAGE_SIZE))
        {
            match page {
                Some(p) => dst.copy_from_slice(p),
                None => dst.fill(0),
            }
        }
        Ok(())
    }
}

/// Restore the latest point of `chain` and read the xl-like baseline back, both from cold
/// page cache where the file system allows (the files are fsynced and dropped from the cache
/// first).
pub fn measure(store: &Store, chain: &str, mem_bytes: u64) -> anyhow::Result<RestoreFigures> {
    let c = store.chain(chain)?;
    for r in &c.manifest()?.layers {
        drop_cache(&c.layer_path(r));
    }
    let xl = DiscardingXl {
        stream_cpu_ns: 0.into(),
    };
    let before = xckpt::layer::decode_cost();
    let t = Instant::now();
    let r = restore_point(store, chain, None, None, &RestoreOptions::default(), &xl)
        .context("restoring the latest point")?;
    let restore_s = t.elapsed().as_secs_f64();
    let after = xckpt::layer::decode_cost();
    // This restore's own writer (the two-pass reference below writes through `xl` again).
    let stream_s = xl.stream_cpu_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let xl_like_restore_s = xl_like_read_back(store.root(), mem_bytes)?;
    for r in &c.manifest()?.layers {
        drop_cache(&c.layer_path(r));
    }
    let t = Instant::now();
    c.verify(None)?;
    let image = c.compose(None)?;
    xl.restore(false, "bench", &mut |out, _| {
        xckpt::stream::write_save_file(&PageByPage(&image), &Default::default(), &mut &mut *out)
    })?;
    let two_pass_restore_s = t.elapsed().as_secs_f64();
    let gb = mem_bytes as f64 / 1e9;
    Ok(RestoreFigures {
        restore_s,
        restore_gbps: gb / restore_s,
        xl_like_restore_s,
        restore_over_xl_like: restore_s / xl_like_restore_s,
        cpu_s_per_gb: RestoreCpu {
            read: (after.read_s - before.read_s) / gb,
            decompress: (after.decompress_s - before.decompress_s) / gb,
            check: (after.check_s - before.check_s) / gb,
            stream: stream_s / gb,
        },
        stream_bytes: r.stats.bytes,
        two_pass_restore_s,
    })
}

/// The xl-like baseline: `mem_bytes` written raw to a file in `dir` and fsynced (untimed, the
/// file `xl save` would have written), dropped from the cache, then read back in 1 MiB reads
/// and timed, as `xl restore` reads a save file.
fn xl_like_read_back(dir: &Path, mem_bytes: u64) -> anyhow::Result<f64> {
    let path = dir.join("xl-like-restore.raw");
    let chunk = vec![0x5au8; 1 << 20];
    {
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut left = mem_bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    drop_cache(&path);
    let t = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; XL_READ_BYTES];
    while f.read(&mut buf)? > 0 {}
    let s = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(s)
}

/// Ask the kernel to drop `path`'s clean pages from the page cache (no effect on tmpfs).
fn drop_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// The restore lines of the bench's table.
pub fn print(r: &RestoreFigures, within: bool) {
    let c = &r.cpu_s_per_gb;
    println!(
        "restore of the latest point: {:.2} s, {:.2} GB/s; xl-like read-back {:.2} s; ratio {:.2} \
         (<= {RESTORE_OVER_XL_LIKE_MAX}: {within})",
        r.restore_s, r.restore_gbps, r.xl_like_restore_s, r.restore_over_xl_like
    );
    println!(
        "restore CPU s/GB: read {:.3}, decompress {:.3}, check {:.3}, stream {:.3}; \
         two-pass restore (before 2026-12-02) {:.2} s",
        c.read, c.decompress, c.check, c.stream, r.two_pass_restore_s
    );
}

/// A composed image read page by page ([`Image::read_page`]), without the decode-once feed.
struct PageByPage<'a>(&'a xckpt::compose::ComposedImage);

impl Image for PageByPage<'_> {
    fn pfn_count(&self) -> u64 {
        self.0.pfn_count()
    }
    fn guest_type(&self) -> xckpt::hv::GuestType {
        self.0.guest_type()
    }
    fn vcpus(&self) -> u32 {
        self.0.vcpus()
    }
    fn page_state(&self, pfn: xckpt::hv::Pfn) -> xckpt::compose::PageState {
        self.0.page_state(pfn)
    }
    fn read_page(
        &self,
        pfn: xckpt::hv::Pfn,
        buf: &mut [u8],
    ) -> Result<(), xckpt::layer::LayerReadError> {
        self.0.read_page(pfn, buf)
    }
    fn state_blobs(&self) -> &[xckpt::hv::StateBlob] {
        self.0.state_blobs()
    }
    fn config(&self) -> &[u8] {
        self.0.config()
    }
}
