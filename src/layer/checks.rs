//! The checks of [`super::LayerReader::open`], in order: trailer, table, preamble, layout,
//! section checksums, then the parse of each section.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{
    is_plain, preamble_len, u32_at, FrameEntry, MetaDoc, SectionEntry, SectionKind, Trailer,
    FRAME_ENTRY_LEN, MAGIC, PREAMBLE_LEN, SECTION_ENTRY_LEN, SECTION_KINDS, SECTION_RAW,
    SECTION_ZSTD, TRAILER_LEN, TRAILER_MAGIC, VERSION_SEALED,
};
use super::frame::MAX_FRAME_PAGES;
use super::index::MAX_PFN_COUNT;
use super::read_error::LayerReadError;
use super::seal::{preamble_cipher_ok, FileSeal, LayerKey, OpenError, TAG_LEN};
use super::{Codec, LayerIndex, LayerMeta};
use crate::hv::PAGE_SIZE;

/// The raw pieces found by [`open_sections`].
pub(super) struct Sections {
    pub(super) trailer: Trailer,
    /// Section bodies, decrypted when the layer is sealed.
    pub(super) bodies: Vec<(SectionEntry, Vec<u8>)>,
    /// Where frames start (the preamble's length).
    pub(super) data_start: u64,
    /// The cipher of a sealed (version 2) layer.
    pub(super) seal: Option<FileSeal>,
}

/// The error for a sealed piece that does not open.
pub(super) fn sealed_err(path: &Path, what: String, e: OpenError) -> LayerReadError {
    match e {
        OpenError::WrongKey => LayerReadError::WrongKey {
            path: path.to_path_buf(),
        },
        OpenError::Tampered => LayerReadError::Tampered {
            path: path.to_path_buf(),
            what,
        },
    }
}

pub(super) fn io(path: &Path, source: std::io::Error) -> LayerReadError {
    LayerReadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn bad(path: &Path, section: &'static str, reason: impl Into<String>) -> LayerReadError {
    LayerReadError::BadSection {
        path: path.to_path_buf(),
        section,
        reason: reason.into(),
    }
}

fn layout(path: &Path, reason: impl Into<String>) -> LayerReadError {
    LayerReadError::BadLayout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read `len` bytes at `offset`; the caller has bounded both by the file size.
pub(super) fn read_at(
    path: &Path,
    file: &File,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, LayerReadError> {
    let mut buf = Vec::new();
    read_into(path, file, offset, len, &mut buf)?;
    Ok(buf)
}

/// [`read_at`] into `buf` (resized to `len`; its memory is reused when large enough).
pub(super) fn read_into(
    path: &Path,
    file: &File,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<(), LayerReadError> {
    let len = usize::try_from(len).map_err(|_| layout(path, "length overflows"))?;
    crate::guestmem::resize_for_overwrite(buf, len);
    file.read_exact_at(buf, offset)
        .map_err(|source| io(path, source))
}

/// Steps up to and including the section checksums (and, for a sealed layer, the key check
/// and the sections' authentication).
pub(super) fn open_sections(
    path: &Path,
    file: &File,
    size: u64,
    key: Option<&LayerKey>,
) -> Result<Sections, LayerReadError> {
    if size < PREAMBLE_LEN + TRAILER_LEN {
        return Err(LayerReadError::TooSmall {
            path: path.to_path_buf(),
            size,
        });
    }
    let t = read_at(path, file, size - TRAILER_LEN, TRAILER_LEN)?;
    let found: [u8; 8] = t[0..8].try_into().unwrap_or_default();
    if found != TRAILER_MAGIC {
        return Err(LayerReadError::Torn {
            path: path.to_path_buf(),
            found,
        });
    }
    let (expected, computed) = (u32_at(&t, 60), crc32c::crc32c(&t[..60]));
    if expected != computed {
        return Err(LayerReadError::TrailerChecksum {
            path: path.to_path_buf(),
            expected,
            found: computed,
        });
    }
    let trailer = Trailer::decode(&t);
    if trailer.file_len != size {
        return Err(LayerReadError::SizeMismatch {
            path: path.to_path_buf(),
            recorded: trailer.file_len,
            actual: size,
        });
    }
    let data_start = preamble_len(trailer.version).ok_or(LayerReadError::BadVersion {
        path: path.to_path_buf(),
        found: trailer.version,
    })?;
    check_trailer_bounds(path, &trailer, data_start)?;
    let table = read_at(path, file, trailer.table_offset, trailer.table_len)?;
    let computed = crc32c::crc32c(&table);
    if computed != trailer.table_crc {
        return Err(LayerReadError::TableChecksum {
            path: path.to_path_buf(),
            expected: trailer.table_crc,
            found: computed,
        });
    }
    let seal = check_preamble(path, file, &trailer, data_start, key)?;
    let entries = parse_table(path, &table, &trailer, data_start)?;
    let mut bodies = Vec::with_capacity(entries.len());
    for (entry, kind) in entries {
        let body = read_at(path, file, entry.offset, entry.len)?;
        let found = crc32c::crc32c(&body);
        if found != entry.crc {
            let section = kind.name();
            return Err(LayerReadError::SectionChecksum {
                path: path.to_path_buf(),
                section,
                expected: entry.crc,
                found,
            });
        }
        let body = match &seal {
            Some(s) => s
                .open_section(entry.kind, entry.codec, &body)
                .map_err(|e| sealed_err(path, format!("{} section", kind.name()), e))?,
            None => body,
        };
        bodies.push((entry, body));
    }
    Ok(Sections {
        trailer,
        bodies,
        data_start,
        seal,
    })
}

fn check_trailer_bounds(path: &Path, t: &Trailer, data_start: u64) -> Result<(), LayerReadError> {
    let table_end = t
        .table_offset
        .checked_add(t.table_len)
        .and_then(|e| e.checked_add(TRAILER_LEN));
    if table_end != Some(t.file_len) {
        return Err(layout(
            path,
            format!(
                "section table at {}+{} does not end at the trailer",
                t.table_offset, t.table_len
            ),
        ));
    }
    if t.table_len != t.sections as u64 * SECTION_ENTRY_LEN as u64 {
        return Err(layout(
            path,
            format!("table of {} bytes for {} sections", t.table_len, t.sections),
        ));
    }
    if data_start
        .checked_add(t.frames_len)
        .is_none_or(|end| end > t.table_offset)
    {
        return Err(layout(
            path,
            format!("{} bytes of frames overrun the section table", t.frames_len),
        ));
    }
    Ok(())
}

/// Magic, version (equal to the trailer's), checksum and flags of the preamble. A sealed
/// (version 2) layer needs `key`, and the key must pass the preamble's key check.
fn check_preamble(
    path: &Path,
    file: &File,
    trailer: &Trailer,
    len: u64,
    key: Option<&LayerKey>,
) -> Result<Option<FileSeal>, LayerReadError> {
    let p = read_at(path, file, 0, len)?;
    let found: [u8; 8] = p[0..8].try_into().unwrap_or_default();
    if found != MAGIC {
        return Err(LayerReadError::BadMagic {
            path: path.to_path_buf(),
            found,
        });
    }
    let version = u32_at(&p, 8);
    if version != trailer.version {
        return Err(LayerReadError::BadVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let crc_at = p.len() - 4;
    let (expected, computed) = (u32_at(&p, crc_at), crc32c::crc32c(&p[..crc_at]));
    if expected != computed {
        return Err(LayerReadError::PreambleChecksum {
            path: path.to_path_buf(),
            expected,
            found: computed,
        });
    }
    if is_plain(version) {
        if p[12..28].iter().any(|&b| b != 0) {
            return Err(layout(
                path,
                "preamble has flags or reserved bytes set (unknown to versions 1, 3 and 4)",
            ));
        }
        return Ok(None);
    }
    debug_assert_eq!(version, VERSION_SEALED);
    if !preamble_cipher_ok(&p) {
        return Err(layout(
            path,
            "preamble names a cipher or flags this xckpt does not know",
        ));
    }
    let key = key.ok_or_else(|| LayerReadError::NeedKey {
        path: path.to_path_buf(),
    })?;
    FileSeal::from_preamble(key, &p)
        .map(Some)
        .map_err(|e| sealed_err(path, "preamble".into(), e))
}

/// Sections must be the six known kinds in file order, tiling the bytes between the frames
/// and the table exactly.
fn parse_table(
    path: &Path,
    table: &[u8],
    t: &Trailer,
    data_start: u64,
) -> Result<Vec<(SectionEntry, SectionKind)>, LayerReadError> {
    if t.sections as usize != SECTION_KINDS.len() {
        return Err(layout(
            path,
            format!("{} sections, {} expected", t.sections, SECTION_KINDS.len()),
        ));
    }
    let mut at = data_start + t.frames_len;
    let mut out = Vec::with_capacity(SECTION_KINDS.len());
    for (raw, kind) in table.chunks_exact(SECTION_ENTRY_LEN).zip(SECTION_KINDS) {
        let e = SectionEntry::decode(raw)
            .ok_or_else(|| layout(path, "section entry reserved word set"))?;
        if e.kind != kind as u32 {
            return Err(layout(
                path,
                format!("section kind {} where {} belongs", e.kind, kind.name()),
            ));
        }
        let codec_ok =
            e.codec == SECTION_RAW || (kind == SectionKind::Index && e.codec == SECTION_ZSTD);
        if !codec_ok {
            return Err(layout(
                path,
                format!("{} section has codec {}", kind.name(), e.codec),
            ));
        }
        if e.offset != at || e.len > t.table_offset - at {
            return Err(layout(
                path,
                format!(
                    "{} section at {}+{} does not follow byte {at}",
                    kind.name(),
                    e.offset,
                    e.len
                ),
            ));
        }
        at += e.len;
        out.push((e, kind));
    }
    if at != t.table_offset {
        return Err(layout(
            path,
            format!(
                "sections end at {at}, the table starts at {}",
                t.table_offset
            ),
        ));
    }
    Ok(out)
}

pub(super) fn parse_meta(path: &Path, json: &[u8]) -> Result<LayerMeta, LayerReadError> {
    let meta_err = |reason: String| LayerReadError::Meta {
        path: path.to_path_buf(),
        reason,
    };
    let doc: MetaDoc = serde_json::from_slice(json).map_err(|e| meta_err(e.to_string()))?;
    if doc.magic.as_bytes() != MAGIC || !is_plain(doc.version) {
        // META says the content's version (1, 3 or 4), not the file's sealing.
        return Err(meta_err(format!(
            "magic {:?} version {}",
            doc.magic, doc.version
        )));
    }
    if doc.meta.pfn_count > MAX_PFN_COUNT {
        return Err(meta_err(format!(
            "pfn count {} exceeds {MAX_PFN_COUNT}",
            doc.meta.pfn_count
        )));
    }
    Ok(doc.meta)
}

/// Frames must tile the bytes after the preamble in order, with sane sizes and codecs. A sealed
/// frame carries a [`TAG_LEN`]-byte tag on top of its encoded bytes.
pub(super) fn parse_frametab(
    path: &Path,
    tab: &[u8],
    t: &Trailer,
    data_start: u64,
    sealed: bool,
) -> Result<Vec<FrameEntry>, LayerReadError> {
    let tag = if sealed { TAG_LEN } else { 0 };
    if tab.len() % FRAME_ENTRY_LEN != 0 || (tab.len() / FRAME_ENTRY_LEN) as u64 != t.frame_count {
        return Err(bad(
            path,
            "FRAMETAB",
            format!("{} bytes for {} frames", tab.len(), t.frame_count),
        ));
    }
    let mut at = data_start;
    let mut frames = Vec::with_capacity(tab.len() / FRAME_ENTRY_LEN);
    for (k, raw) in tab.chunks_exact(FRAME_ENTRY_LEN).enumerate() {
        let f = FrameEntry::decode(raw);
        let reason = if f.offset != at {
            format!("frame {k} at {} does not follow byte {at}", f.offset)
        } else if f.pages == 0 || f.pages > MAX_FRAME_PAGES {
            format!("frame {k} holds {} pages", f.pages)
        } else {
            match Codec::from_code(f.codec) {
                None => format!("frame {k} has codec {}", f.codec),
                Some(Codec::Raw) if f.len as usize != f.pages as usize * PAGE_SIZE + tag => {
                    format!("raw frame {k} of {} bytes holds {} pages", f.len, f.pages)
                }
                Some(_) if (f.len as usize) < tag => format!("sealed frame {k} of {} bytes", f.len),
                Some(_) => String::new(),
            }
        };
        if !reason.is_empty() {
            return Err(bad(path, "FRAMETAB", reason));
        }
        at += f.len as u64;
        frames.push(f);
    }
    if at != data_start + t.frames_len {
        return Err(bad(
            path,
            "FRAMETAB",
            format!(
                "frames end at {at}, sections start at {}",
                data_start + t.frames_len
            ),
        ));
    }
    Ok(frames)
}

pub(super) fn prefix_slots(frames: &[FrameEntry]) -> Vec<u64> {
    let mut v = Vec::with_capacity(frames.len() + 1);
    let mut acc = 0u64;
    v.push(0);
    for f in frames {
        acc += f.pages as u64;
        v.push(acc);
    }
    v
}

pub(super) fn parse_digests(path: &Path, b: &[u8], slots: u64) -> Result<Vec<u64>, LayerReadError> {
    if b.len() as u64 != slots * 8 {
        return Err(bad(
            path,
            "DIGESTS",
            format!("{} bytes for {slots} slots", b.len()),
        ));
    }
    Ok(b.chunks_exact(8)
        .map(|c| super::format::u64_at(c, 0))
        .collect())
}

pub(super) fn parse_index(
    path: &Path,
    body: &[u8],
    meta: &LayerMeta,
    slots: u64,
) -> Result<LayerIndex, LayerReadError> {
    let err = |reason: String| LayerReadError::BadIndex {
        path: path.to_path_buf(),
        reason,
    };
    let limit = LayerIndex::serialized_len(meta.pfn_count, meta.pfn_count.min(slots))
        .ok_or_else(|| err("index too large".into()))?;
    let raw = decompress_capped(body, limit).map_err(err)?;
    let index = LayerIndex::from_bytes(&raw, slots).map_err(err)?;
    if index.pfn_count() != meta.pfn_count {
        return Err(err(format!(
            "index covers {} pfns, header says {}",
            index.pfn_count(),
            meta.pfn_count
        )));
    }
    Ok(index)
}

/// Decompress one zstd stream, refusing output beyond `limit` bytes. In one call into a buffer
/// of that capacity: no growing, zero-filling and copying of a buffer read to its end (the
/// index of a 4 GiB pfn space is about 1 MiB, mostly zeros, and every checkpoint's spot check
/// and every restore open one).
fn decompress_capped(body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    zstd::bulk::decompress(body, limit)
        .map_err(|e| format!("zstd (at most {limit} bytes expected): {e}"))
}
