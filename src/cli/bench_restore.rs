//! The restore half of `xckpt bench --sim`: the latest point restored through
//! [`xckpt::restore::restore_point`] (what `xckpt restore` runs) into a reader that consumes
//! the stream from a pipe as `xl restore` does and discards it, beside an xl-like baseline:
//! the same memory read back raw from a file on the store's file system.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use std::os::fd::AsFd;
use xckpt::compose::Image;
use xckpt::restore::{restore_point, RestoreError, RestoreOptions, WriteStream, XlTool};
use xckpt::store::Store;
use xckpt::stream::{GuestFill, StreamStats, FILL_BATCH};

/// The restore's figures (flattened into the bench's JSON). Each side is sampled
/// [`RESTORE_SAMPLES`] times, interleaved (restore, xl-like, restore, xl-like, ...), each from
/// cold page cache; the figures the check relies on are the medians.
#[derive(Debug, Serialize)]
pub struct RestoreFigures {
    /// Wall time of the restore of the latest point (open, compose, stream, consumed): the
    /// median of `restore_samples_s`.
    pub restore_s: f64,
    /// Each restore's wall time, in the order taken.
    pub restore_samples_s: Vec<f64>,
    /// Guest memory restored per second over `restore_s` (the median), GB/s.
    pub restore_gbps: f64,
    /// Wall time of reading the same memory back raw from a file (the xl-like baseline): the
    /// median of `xl_like_restore_samples_s`.
    pub xl_like_restore_s: f64,
    /// Each read-back's wall time, in the order taken.
    pub xl_like_restore_samples_s: Vec<f64>,
    /// `restore_s / xl_like_restore_s`: the ratio of the medians.
    pub restore_over_xl_like: f64,
    /// CPU seconds per GB of guest memory of each restore stage: read, decompress, check
    /// (the decode workers) and stream (the thread writing the stream into the pipe), summed
    /// over every restore sample and divided by the number of samples (one restore's cost).
    /// Its own key: the capture's stages are `cpu_s_per_gb` in the same (flattened) object.
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

/// The check of the restore half: within 1.5x of the xl-like read-back (median over median).
pub const RESTORE_OVER_XL_LIKE_MAX: f64 = 1.5;

/// Samples of each side of the restore check, as in the test bed's `xckpt-vs-xl` scenario.
pub const RESTORE_SAMPLES: usize = 3;

impl RestoreFigures {
    /// The restore check: `Ok(restore_s <= 1.5 x xl_like_restore_s)`, or `Err` naming the
    /// sample that is not a number of seconds (not finite, or not above zero).
    pub fn check(&self) -> Result<bool, String> {
        numbers_of_seconds(
            "restore",
            [
                ("restore_samples_s", &self.restore_samples_s),
                ("xl_like_restore_samples_s", &self.xl_like_restore_samples_s),
            ],
        )?;
        Ok(self.restore_over_xl_like <= RESTORE_OVER_XL_LIKE_MAX)
    }
}

/// `Err` naming the first sample of either side of check `what` that is not a number of
/// seconds above zero, or the side that has none.
pub fn numbers_of_seconds(what: &str, sides: [(&str, &[f64]); 2]) -> Result<(), String> {
    for (side, samples) in sides {
        if samples.is_empty() {
            return Err(format!("{what} check failed: {side} is empty"));
        }
        if let Some((i, s)) = samples
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(format!(
                "{what} check failed: {side}[{i}] is {s}, not a number of seconds above zero"
            ));
        }
    }
    Ok(())
}

/// The median of `samples` (the mean of the middle two for an even count; NaN when empty).
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The smallest and the largest of `samples`.
pub fn range(samples: &[f64]) -> (f64, f64) {
    samples
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        })
}

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

/// Restore the latest point of `chain` and read the xl-like baseline back,
/// [`RESTORE_SAMPLES`] times each, interleaved, every one from cold page cache where the file
/// system allows (the files are fsynced and dropped from the cache first).
pub fn measure(store: &Store, chain: &str, mem_bytes: u64) -> anyhow::Result<RestoreFigures> {
    let c = store.chain(chain)?;
    let layers: Vec<PathBuf> = c
        .manifest()?
        .layers
        .iter()
        .map(|r| c.layer_path(r))
        .collect();
    let xl = DiscardingXl {
        stream_cpu_ns: 0.into(),
    };
    let raw = write_raw(store.root(), mem_bytes)?;
    let sampled = sample(store, chain, &layers, &xl, &raw);
    let removed = std::fs::remove_file(&raw).with_context(|| format!("removing {}", raw.display()));
    let s = sampled?;
    removed?;
    layers.iter().for_each(|p| drop_cache(p));
    let t = Instant::now();
    c.verify(None)?;
    let image = c.compose(None)?;
    xl.restore(false, "bench", &mut |out, _| {
        xckpt::stream::write_save_file(&PageByPage(&image), &Default::default(), &mut &mut *out)
    })?;
    let two_pass_restore_s = t.elapsed().as_secs_f64();
    let gb = mem_bytes as f64 / 1e9;
    // One restore's CPU: the sum over the samples, divided by their number.
    let n = s.restore_s.len() as f64;
    let per = |total: f64| total / n / gb;
    let restore_s = median(&s.restore_s);
    let xl_like_restore_s = median(&s.xl_like_s);
    Ok(RestoreFigures {
        restore_s,
        restore_samples_s: s.restore_s,
        restore_gbps: gb / restore_s,
        xl_like_restore_s,
        xl_like_restore_samples_s: s.xl_like_s,
        restore_over_xl_like: restore_s / xl_like_restore_s,
        cpu_s_per_gb: RestoreCpu {
            read: per(s.decode.read_s),
            decompress: per(s.decode.decompress_s),
            check: per(s.decode.check_s),
            stream: per(s.stream_s),
        },
        stream_bytes: s.stream_bytes,
        two_pass_restore_s,
    })
}

/// What [`sample`] measured.
struct Samples {
    restore_s: Vec<f64>,
    xl_like_s: Vec<f64>,
    /// Decode CPU of all the restores together.
    decode: xckpt::layer::DecodeCost,
    /// Stream-writer CPU seconds of all the restores together.
    stream_s: f64,
    stream_bytes: u64,
}

/// [`RESTORE_SAMPLES`] pairs, in order: the latest point of `chain` restored into `xl` with
/// its layer files `layers` dropped from the cache, then the raw file `raw` read back likewise.
fn sample(
    store: &Store,
    chain: &str,
    layers: &[PathBuf],
    xl: &DiscardingXl,
    raw: &Path,
) -> anyhow::Result<Samples> {
    let mut s = Samples {
        restore_s: Vec::with_capacity(RESTORE_SAMPLES),
        xl_like_s: Vec::with_capacity(RESTORE_SAMPLES),
        decode: Default::default(),
        stream_s: 0.0,
        stream_bytes: 0,
    };
    let before = xckpt::layer::decode_cost();
    for _ in 0..RESTORE_SAMPLES {
        layers.iter().for_each(|p| drop_cache(p));
        let t = Instant::now();
        let r = restore_point(store, chain, None, None, &RestoreOptions::default(), xl)
            .context("restoring the latest point")?;
        s.restore_s.push(t.elapsed().as_secs_f64());
        s.stream_s += xl.stream_cpu_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
        s.stream_bytes = r.stats.bytes;
        s.xl_like_s.push(read_back(raw)?);
    }
    let after = xckpt::layer::decode_cost();
    s.decode = xckpt::layer::DecodeCost {
        read_s: after.read_s - before.read_s,
        decompress_s: after.decompress_s - before.decompress_s,
        check_s: after.check_s - before.check_s,
    };
    Ok(s)
}

/// The xl-like baseline's file: `mem_bytes` written raw to a file in `dir` and fsynced
/// (untimed: the file `xl save` would have written). Returns its path.
fn write_raw(dir: &Path, mem_bytes: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join("xl-like-restore.raw");
    let chunk = vec![0x5au8; 1 << 20];
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = mem_bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(path)
}

/// One sample of the xl-like baseline: `path` dropped from the cache, then read back in 1 MiB
/// reads and timed, as `xl restore` reads a save file.
fn read_back(path: &Path) -> anyhow::Result<f64> {
    drop_cache(path);
    let t = Instant::now();
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; XL_READ_BYTES];
    while f.read(&mut buf)? > 0 {}
    Ok(t.elapsed().as_secs_f64())
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
    let (rlo, rhi) = range(&r.restore_samples_s);
    let (xlo, xhi) = range(&r.xl_like_restore_samples_s);
    println!(
        "restore of the latest point: median {:.2} s ({:.2}-{:.2}), {:.2} GB/s; xl-like read-back \
         median {:.2} s ({:.2}-{:.2}); {} samples each; ratio of medians {:.2} \
         (<= {RESTORE_OVER_XL_LIKE_MAX}: {within})",
        r.restore_s,
        rlo,
        rhi,
        r.restore_gbps,
        r.xl_like_restore_s,
        xlo,
        xhi,
        r.restore_samples_s.len(),
        r.restore_over_xl_like
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xckpt::backend::sim::{SimConfig, SimDomain};

    /// Figures holding the given samples, their medians and the ratio of the medians.
    fn figures(restore: &[f64], xl_like: &[f64]) -> RestoreFigures {
        let (r, x) = (median(restore), median(xl_like));
        RestoreFigures {
            restore_s: r,
            restore_samples_s: restore.to_vec(),
            restore_gbps: 1.0 / r,
            xl_like_restore_s: x,
            xl_like_restore_samples_s: xl_like.to_vec(),
            restore_over_xl_like: r / x,
            cpu_s_per_gb: RestoreCpu {
                read: 0.0,
                decompress: 0.0,
                check: 0.0,
                stream: 0.0,
            },
            stream_bytes: 0,
            two_pass_restore_s: 1.0,
        }
    }

    #[test]
    fn the_median_is_the_middle_sample_and_the_range_its_ends() {
        assert_eq!(median(&[0.9, 0.4, 1.3]), 0.9);
        assert_eq!(median(&[2.0, 1.0, 4.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(range(&[0.9, 0.4, 1.3]), (0.4, 1.3));
    }

    #[test]
    fn the_check_is_the_ratio_of_the_medians_and_fails_on_a_sample_that_is_no_number() {
        // One quick read-back among three does not decide the verdict.
        assert_eq!(
            figures(&[1.0, 1.1, 0.9], &[0.4, 0.9, 1.0]).check(),
            Ok(true)
        );
        assert_eq!(
            figures(&[2.0, 2.1, 1.9], &[0.4, 0.9, 1.0]).check(),
            Ok(false)
        );
        for bad in [f64::NAN, f64::INFINITY, 0.0, -0.5] {
            let e = figures(&[1.0, bad, 1.0], &[1.0; 3]).check().unwrap_err();
            assert!(e.contains("restore_samples_s[1]"), "{e}");
            let e = figures(&[1.0; 3], &[1.0, 1.0, bad]).check().unwrap_err();
            assert!(e.contains("xl_like_restore_samples_s[2]"), "{e}");
        }
        let e = figures(&[], &[1.0]).check().unwrap_err();
        assert!(e.contains("restore_samples_s is empty"), "{e}");
    }

    /// The keys `measure` fills in, on a small chain: three samples a side, each a number of
    /// seconds above zero, the reported figures their medians (no timing is judged here).
    #[test]
    fn measure_reports_three_samples_a_side_and_their_medians() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let cfg = SimConfig::small(1024);
        let mem = cfg.pfn_count * xckpt::hv::PAGE_SIZE as u64;
        let dom = Arc::new(SimDomain::new(cfg).unwrap());
        let mut stop = xckpt::capture::SoloStop::new(dom.clone(), Default::default());
        let opts = xckpt::capture::CaptureOptions::default();
        let chain = store.chain("bench").unwrap();
        crate::cli::xenverbs::take_checkpoint(&dom, &chain, &opts, &mut stop).unwrap();

        let figures = measure(&store, "bench", mem).unwrap();
        let json = serde_json::to_value(&figures).unwrap();
        let seconds = |key: &str| -> Vec<f64> {
            let v = json[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key}: {json}"));
            v.iter().map(|s| s.as_f64().unwrap()).collect()
        };
        let middle = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (samples, median_key) in [
            ("restore_samples_s", "restore_s"),
            ("xl_like_restore_samples_s", "xl_like_restore_s"),
        ] {
            let s = seconds(samples);
            assert_eq!(s.len(), RESTORE_SAMPLES, "{samples}: {s:?}");
            assert!(s.iter().all(|x| x.is_finite() && *x > 0.0), "{s:?}");
            assert_eq!(json[median_key].as_f64(), Some(middle(s)), "{median_key}");
        }
        let (r, x) = (figures.restore_s, figures.xl_like_restore_s);
        assert_eq!(figures.restore_over_xl_like, r / x);
        assert_eq!(figures.restore_gbps, mem as f64 / 1e9 / r);
        assert!(figures.check().is_ok());
        assert!(!dir.path().join("store/xl-like-restore.raw").exists());
    }
}
