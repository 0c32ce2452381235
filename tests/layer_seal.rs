//! Encrypted layers (format version 2): round trip, wrong or missing key, a flipped byte in a
//! frame, a section or the preamble (even with every crc fixed up, as an attacker would), and
//! fresh nonces for every file.

mod layer_util;

use std::path::{Path, PathBuf};

use layer_util::{config, fill, meta, page, state, Put};
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::format::{
    u32_at, u64_at, SectionEntry, Trailer, PREAMBLE_V2_LEN, SECTION_ENTRY_LEN, TRAILER_LEN,
    VERSION_SEALED,
};
use xckpt::layer::{LayerKey, LayerReadError, LayerReader, LayerWriter, PageEntry};

fn key(b: u8) -> LayerKey {
    LayerKey::from_bytes([b; 32])
}

fn puts() -> Vec<(u64, Put)> {
    let mut p: Vec<(u64, Put)> = (0..40).map(|pfn| (pfn, Put::Data(1))).collect();
    p.push((41, Put::Other(PageEntry::Zero)));
    p.push((3, Put::Data(2)));
    p
}

/// An encrypted layer `id` in `dir` at zstd `level`.
fn sealed_layer(dir: &Path, k: &LayerKey, id: u64, level: i32) -> PathBuf {
    let m = meta(id, None, 48);
    let w = LayerWriter::create_with_key(dir, Some((k, id))).unwrap();
    assert!(w.is_sealed());
    let (w, index) = fill(w, m.pfn_count, &puts(), 8, level);
    let dest = dir.join(format!("layer-{id:06}.xcl"));
    w.finish(&m, &index, &state(id), &config(id), &dest)
        .unwrap();
    dest
}

fn open(path: &Path, k: Option<&LayerKey>) -> Result<LayerReader, LayerReadError> {
    let r = LayerReader::open_with_key(path, k)?;
    r.verify()?;
    Ok(r)
}

/// Recompute every plain crc32c (preamble, sections, table, trailer) after an edit, as someone
/// without the key could.
fn fix_crcs(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[..PREAMBLE_V2_LEN - 4]);
    b[PREAMBLE_V2_LEN - 4..PREAMBLE_V2_LEN].copy_from_slice(&crc.to_le_bytes());
    let tl = b.len() - TRAILER_LEN as usize;
    let t = Trailer::decode(&b[tl..]);
    let (to, tlen) = (t.table_offset as usize, t.table_len as usize);
    for at in (to..to + tlen).step_by(SECTION_ENTRY_LEN) {
        let mut e = SectionEntry::decode(&b[at..at + SECTION_ENTRY_LEN]).unwrap();
        e.crc = crc32c::crc32c(&b[e.offset as usize..(e.offset + e.len) as usize]);
        b[at..at + SECTION_ENTRY_LEN].copy_from_slice(&e.encode());
    }
    let trailer = Trailer {
        table_crc: crc32c::crc32c(&b[to..to + tlen]),
        ..t
    };
    b[tl..].copy_from_slice(&trailer.encode());
}

#[test]
fn round_trip_reads_the_same_pages() {
    for level in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let path = sealed_layer(dir.path(), &k, 4, level);
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(u32_at(&raw, 8), VERSION_SEALED);
        assert_eq!(u64_at(&raw, 24), 4, "layer id in the preamble");
        let r = open(&path, Some(&k)).unwrap();
        assert!(r.is_sealed());
        assert_eq!(r.meta(), &meta(4, None, 48));
        assert_eq!(r.state(), state(4).as_slice());
        assert_eq!(r.config(), config(4).as_slice());
        let mut buf = vec![0u8; PAGE_SIZE];
        for pfn in 0..40 {
            r.read_page(pfn, &mut buf).unwrap();
            let v = if pfn == 3 { 2 } else { 1 };
            assert_eq!(buf, page(pfn, v), "pfn {pfn}");
        }
        assert_eq!(r.entry(41), Some(PageEntry::Zero));
        // No page appears in the clear, and the config and state are not readable either.
        for pfn in [0u64, 1, 5] {
            let p = page(pfn, 1);
            assert!(
                !raw.windows(64).any(|w| w == &p[..64]),
                "pfn {pfn} in clear"
            );
        }
        let cfg = config(4);
        assert!(!raw.windows(cfg.len()).any(|w| w == cfg), "config in clear");
    }
}

#[test]
fn missing_or_wrong_key_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = sealed_layer(dir.path(), &key(1), 1, 3);
    let e = open(&path, None).err().unwrap();
    assert!(matches!(e, LayerReadError::NeedKey { .. }), "{e}");
    assert!(e.to_string().contains("--encrypt KEYFILE"), "{e}");
    let e = open(&path, Some(&key(2))).err().unwrap();
    assert!(matches!(e, LayerReadError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("another key"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
    // A plain layer reads with a key too.
    let other = tempfile::tempdir().unwrap();
    let plain = layer_util::small_layer(other.path(), 3);
    open(&plain, Some(&key(1))).unwrap();
    assert!(!LayerReader::open(&plain).unwrap().is_sealed());
}

/// Flip one byte at `at` (optionally fixing every crc), and return what opening says.
fn flipped(path: &Path, at: usize, fix: bool) -> LayerReadError {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    if fix {
        fix_crcs(&mut b);
    }
    let bad = path.with_extension("bad");
    std::fs::write(&bad, &b).unwrap();
    open(&bad, Some(&key(1)))
        .err()
        .expect("a flipped byte must be refused")
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sealed_layer(dir.path(), &key(1), 1, 3);
    let len = std::fs::read(&path).unwrap().len();
    // In frame 0: authentication of that frame fails (frames have no plain crc to fix).
    let e = flipped(&path, PREAMBLE_V2_LEN + 5, false);
    assert!(
        matches!(&e, LayerReadError::Tampered { what, .. } if what == "frame 0"),
        "{e}"
    );
    assert!(e.to_string().contains("fails authentication"), "{e}");
    // In the preamble's layer id, crc fixed: every piece's associated data changes.
    let e = flipped(&path, 24, true);
    assert!(matches!(e, LayerReadError::Tampered { .. }), "{e}");
    // In the preamble's file nonce, crc fixed.
    let e = flipped(&path, 40, true);
    assert!(matches!(e, LayerReadError::Tampered { .. }), "{e}");
    // In the preamble, crc not fixed: the crc says so first.
    let e = flipped(&path, 24, false);
    assert!(matches!(e, LayerReadError::PreambleChecksum { .. }), "{e}");
    // In each section, crcs fixed: the section fails authentication.
    let raw = std::fs::read(&path).unwrap();
    let t = Trailer::decode(&raw[len - TRAILER_LEN as usize..]);
    for i in 0..t.sections as usize {
        let at = t.table_offset as usize + i * SECTION_ENTRY_LEN;
        let e0 = SectionEntry::decode(&raw[at..at + SECTION_ENTRY_LEN]).unwrap();
        let e = flipped(&path, (e0.offset + e0.len / 2) as usize, true);
        assert!(
            matches!(&e, LayerReadError::Tampered { what, .. } if what.ends_with("section")),
            "section {i}: {e}"
        );
    }
    // Frames swapped (same lengths: raw frames), crcs fixed: both are bound to their index.
    let dir0 = tempfile::tempdir().unwrap();
    let p0 = sealed_layer(dir0.path(), &key(1), 1, 0);
    let mut b = std::fs::read(&p0).unwrap();
    let n = 8 * PAGE_SIZE + 16;
    let (a, c) = (PREAMBLE_V2_LEN, PREAMBLE_V2_LEN + n);
    let first: Vec<u8> = b[a..a + n].to_vec();
    b.copy_within(c..c + n, a);
    b[c..c + n].copy_from_slice(&first);
    fix_crcs(&mut b);
    let bad = p0.with_extension("swapped");
    std::fs::write(&bad, &b).unwrap();
    let e = open(&bad, Some(&key(1))).err().unwrap();
    assert!(matches!(e, LayerReadError::Tampered { .. }), "{e}");
}

#[test]
fn a_frame_from_another_layer_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    let a = sealed_layer(&dir.path().join("a").tap_mkdir(), &k, 1, 0);
    let b = sealed_layer(&dir.path().join("b").tap_mkdir(), &k, 1, 0);
    let (ra, rb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ra.len(), rb.len());
    // Same key, same id, same content: every frame's ciphertext differs (fresh file nonce).
    let n = 8 * PAGE_SIZE + 16;
    for f in 0..5 {
        let at = PREAMBLE_V2_LEN + f * n;
        assert_ne!(ra[at..at + n], rb[at..at + n], "frame {f} repeats");
    }
    // Frame 0 of b pasted into a: refused.
    let mut mixed = ra.clone();
    mixed[PREAMBLE_V2_LEN..PREAMBLE_V2_LEN + n].copy_from_slice(&rb[PREAMBLE_V2_LEN..][..n]);
    let bad = dir.path().join("mixed.xcl");
    std::fs::write(&bad, &mixed).unwrap();
    let e = open(&bad, Some(&k)).err().unwrap();
    assert!(
        matches!(&e, LayerReadError::Tampered { what, .. } if what == "frame 0"),
        "{e}"
    );
}

#[test]
fn a_sealed_writer_must_finish_as_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let w = LayerWriter::create_with_key(dir.path(), Some((&key(1), 2))).unwrap();
    let (w, index) = fill(w, 48, &puts(), 8, 3);
    let e = w
        .finish(
            &meta(3, None, 48),
            &index,
            &state(3),
            &config(3),
            &dir.path().join("x.xcl"),
        )
        .unwrap_err();
    assert!(e.to_string().contains("encrypted as layer 2"), "{e}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir(&self).unwrap();
        self
    }
}
