//! Page frames: a run of pages encoded together, as one zstd frame or stored raw.
//!
//! [`compress_frame`] runs on the capture's parallel compress workers, so it keeps no shared
//! state: each thread has its own zstd contexts. [`decode_frame`] is the reader's inverse.

use std::cell::RefCell;
use std::time::Instant;

use super::digest::DigestKind;
use super::encode::{thread_cpu, Stage, StageClock, Tuner};
use crate::hv::PAGE_SIZE;

/// The most pages one frame may hold (16 MiB decoded); bounds what a reader allocates.
pub const MAX_FRAME_PAGES: u32 = 4096;

/// How a frame's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Pages stored as they are.
    Raw,
    /// One zstd frame (format version 1 wrote zstd's content checksum too; version 3 leaves it
    /// out: the frame's check code and the pages' digests already cover it).
    Zstd,
}

impl Codec {
    /// The on-disk code of the codec.
    pub fn code(self) -> u32 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }
    /// The codec of an on-disk code.
    pub fn from_code(code: u32) -> Option<Codec> {
        match code {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// An encoded frame of pages, ready for [`super::LayerWriter::push_frame`].
#[derive(Debug, Clone)]
pub struct Frame {
    /// Number of pages in the frame.
    pub pages: u32,
    /// Encoding of `data`.
    pub codec: Codec,
    /// Encoded bytes.
    pub data: Vec<u8>,
    /// The frame's check code ([`DigestKind::frame_code`]).
    pub crc: u32,
    /// The digest of each page's content, in frame order (`pages` entries).
    pub digests: Vec<u64>,
    /// The hash of `digests` and `crc`: the layer's ([`super::LayerWriter::digest_kind`]).
    pub kind: DigestKind,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compress `pages` (a multiple of 4096 bytes, at most [`MAX_FRAME_PAGES`] pages) at `level`
/// (0 = store raw), its digests taken with `kind`. Falls back to raw when compression does not
/// shrink the data.
pub fn compress_frame(pages: &[u8], level: i32, kind: DigestKind) -> Frame {
    encode_frame(pages.to_vec(), level, &Tuner::fixed(level), None, kind).0
}

/// Encode the pages in `pages` (a multiple of 4096 bytes) at `level` (0 = raw), taking the
/// buffer: a raw frame keeps it as its data (no copy), a compressed one hands it back (second
/// value) for reuse. Digests and check code are taken with `kind`. Times the digest and compress
/// stages on `clock` and tells `tuner` what compression gave.
pub fn encode_frame(
    pages: Vec<u8>,
    level: i32,
    tuner: &Tuner,
    clock: Option<&StageClock>,
    kind: DigestKind,
) -> (Frame, Option<Vec<u8>>) {
    debug_assert_eq!(pages.len() % PAGE_SIZE, 0, "frame of partial pages");
    let count = (pages.len() / PAGE_SIZE) as u32;
    let cpu = || clock.map(|_| thread_cpu()).unwrap_or_default();
    let t = cpu();
    let digests: Vec<u64> = pages
        .chunks_exact(PAGE_SIZE)
        .map(|p| kind.hash(p))
        .collect();
    let t1 = cpu();
    let w1 = Instant::now();
    let compressed = if level == 0 {
        None
    } else {
        zstd_compress(&pages, level)
    };
    let took = match clock {
        Some(c) => {
            let t2 = cpu();
            c.add(Stage::Digest, t1.saturating_sub(t));
            if level != 0 {
                c.add(Stage::Compress, t2.saturating_sub(t1));
            }
            t2.saturating_sub(t1)
        }
        None => w1.elapsed(),
    };
    if let Some(z) = &compressed {
        tuner.compressed(pages.len(), z.len(), took);
    }
    let (codec, data, spare) = match compressed {
        Some(data) if data.len() < pages.len() => (Codec::Zstd, data, Some(pages)),
        _ => {
            tuner.stored_raw();
            (Codec::Raw, pages, None)
        }
    };
    let crc = kind.frame_code(codec, &data, &digests);
    let frame = Frame {
        pages: count,
        codec,
        data,
        crc,
        digests,
        kind,
    };
    (frame, spare)
}

/// zstd-compress with a per-thread context at `level`, without zstd's content checksum (the
/// frame's check code covers the stored bytes, the pages' digests the decoded ones). None on error.
fn zstd_compress(src: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let mut c = zstd::bulk::Compressor::new(level).ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))
                .ok()?;
            *slot = Some((level, c));
        }
        let (_, c) = slot.as_mut()?;
        c.compress(src).ok()
    })
}

/// Decode a frame's bytes into `out`, which is resized to exactly `pages * 4096` bytes.
/// Errors are described in words; the caller adds the file and frame number.
pub fn decode_frame(
    codec: Codec,
    data: &[u8],
    pages: u32,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if pages == 0 || pages > MAX_FRAME_PAGES {
        return Err(format!(
            "frame of {pages} pages (1..={MAX_FRAME_PAGES} allowed)"
        ));
    }
    let want = pages as usize * PAGE_SIZE;
    match codec {
        Codec::Raw => {
            if data.len() != want {
                return Err(format!(
                    "raw frame of {} bytes, {want} expected",
                    data.len()
                ));
            }
            out.clear();
            out.extend_from_slice(data);
            Ok(())
        }
        Codec::Zstd => {
            out.clear();
            out.reserve_exact(want);
            let got = DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
                }
                let d = slot.as_mut().ok_or("no zstd context")?;
                d.decompress_to_buffer(data, out)
                    .map_err(|e| format!("zstd: {e}"))
            })?;
            if got != want {
                return Err(format!("frame decoded to {got} bytes, {want} expected"));
            }
            Ok(())
        }
    }
}
