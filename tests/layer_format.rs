//! Layer files: round trip, re-pushed pages, and detection of every kind of damage.

mod layer_util;

use std::path::Path;

use layer_util::{config, fill_writer, meta, page, small_layer, state, write_layer, Put};
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::format::{TRAILER_LEN, VERSION};
use xckpt::layer::{
    EvictPolicy, LayerIndex, LayerReadError, LayerReader, LayerWriteError, LayerWriter, PageEntry,
};

fn read(path: &Path, pfn: u64) -> Vec<u8> {
    let r = LayerReader::open(path).unwrap();
    let mut buf = vec![0xaa; PAGE_SIZE];
    r.read_page(pfn, &mut buf).unwrap();
    buf
}

#[test]
fn round_trip_every_entry_kind() {
    for level in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = small_layer(dir.path(), level);
        let r = LayerReader::open(&path).unwrap();
        assert_eq!(r.meta(), &meta(1, None, 12));
        assert_eq!(r.state(), state(1).as_slice());
        assert_eq!(r.config(), config(1).as_slice());
        let expect = [
            Some(PageEntry::Data),
            Some(PageEntry::Data),
            Some(PageEntry::Zero),
            Some(PageEntry::Evicted(EvictPolicy::Free)),
            Some(PageEntry::Unpopulated),
            Some(PageEntry::Data),
            Some(PageEntry::Evicted(EvictPolicy::Balloon)),
            Some(PageEntry::Data),
            None,
            Some(PageEntry::Evicted(EvictPolicy::Cache)),
            None,
            None,
        ];
        for (pfn, e) in expect.iter().enumerate() {
            assert_eq!(r.entry(pfn as u64), *e, "pfn {pfn}");
        }
        assert_eq!(r.entry(12), None);
        let mut buf = vec![0u8; PAGE_SIZE];
        for (pfn, version) in [(0, 1), (1, 2), (5, 1), (7, 1)] {
            r.read_page(pfn, &mut buf).unwrap();
            assert_eq!(buf, page(pfn, version), "pfn {pfn}");
        }
        for pfn in [2, 3, 4, 6, 8, 9, 11, 1000] {
            buf.fill(0xff);
            r.read_page(pfn, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "pfn {pfn} not zero-filled");
        }
        let c = r.index().counts();
        assert_eq!((c.data, c.zero, c.evicted, c.unpopulated), (4, 1, 3, 1));
        let f = r.figures();
        assert_eq!(
            (f.frames, f.slots, f.live_slots, f.dead_slots),
            (4, 5, 4, 1)
        );
        assert_eq!(f.file_bytes, std::fs::metadata(&path).unwrap().len());
        if level == 0 {
            assert_eq!(f.raw_frames, 4);
        }
        r.verify().unwrap();
        assert!(matches!(
            r.read_page(0, &mut [0u8; 10]),
            Err(LayerReadError::BadBuffer { len: 10, .. })
        ));
    }
}

#[test]
fn repushed_pfn_returns_latest_copy() {
    let dir = tempfile::tempdir().unwrap();
    let puts: Vec<(u64, Put)> = (0..5)
        .flat_map(|v| (0..40).map(move |pfn| (pfn, Put::Data(v * 10 + pfn % 3))))
        .collect();
    let path = write_layer(dir.path(), &meta(1, None, 64), &puts, 16, 3);
    let r = LayerReader::open(&path).unwrap();
    for pfn in 0..40 {
        assert_eq!(read(&path, pfn), page(pfn, 40 + pfn % 3));
    }
    assert_eq!(r.figures().dead_slots, 160);
    // A later non-data entry wins over earlier data, and data again over it.
    let puts = [
        (3, Put::Data(1)),
        (3, Put::Other(PageEntry::Zero)),
        (4, Put::Other(PageEntry::Zero)),
        (4, Put::Data(7)),
    ];
    let path = write_layer(dir.path(), &meta(2, None, 8), &puts, 4, 3);
    let r = LayerReader::open(&path).unwrap();
    assert_eq!(r.entry(3), Some(PageEntry::Zero));
    assert_eq!(r.entry(4), Some(PageEntry::Data));
    assert_eq!(read(&path, 4), page(4, 7));
}

#[test]
fn file_is_private_and_temp_is_removed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = small_layer(dir.path(), 3);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
    // An unfinished writer leaves nothing behind when dropped.
    let (writer, _) = fill_writer(dir.path(), 8, &[(0, Put::Data(1))], 4, 3);
    let tmp = writer.temp_path().to_path_buf();
    assert!(tmp.exists());
    drop(writer);
    assert!(!tmp.exists());
    // An existing layer is never overwritten.
    let (writer, index) = fill_writer(dir.path(), 12, &[(0, Put::Data(1))], 4, 3);
    let err = writer
        .finish(&meta(1, None, 12), &index, &[], &[], &path)
        .unwrap_err();
    assert!(matches!(err, LayerWriteError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn writer_refuses_inconsistent_index() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LayerWriter::create(dir.path()).unwrap();
    let mut index = LayerIndex::new(8);
    index.set(1, PageEntry::Data, Some(0));
    let err = writer
        .finish(&meta(1, None, 8), &index, &[], &[], &dir.path().join("x"))
        .unwrap_err();
    assert!(matches!(err, LayerWriteError::Inconsistent { .. }), "{err}");
    let (writer, index) = fill_writer(dir.path(), 8, &[(0, Put::Data(1))], 4, 3);
    let err = writer
        .finish(&meta(1, None, 9), &index, &[], &[], &dir.path().join("x"))
        .unwrap_err();
    assert!(matches!(err, LayerWriteError::Inconsistent { .. }), "{err}");
}

/// Open and verify; the error if either fails.
fn check(path: &Path) -> Result<(), LayerReadError> {
    LayerReader::open(path)?.verify()
}

#[test]
fn every_bit_flip_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_layer(dir.path(), 3);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.xcl");
    for at in 0..good.len() {
        let bit = at % 8;
        let mut bytes = good.clone();
        bytes[at] ^= 1 << bit;
        std::fs::write(&bad, &bytes).unwrap();
        let err = check(&bad).expect_err(&format!("flip of bit {bit} at byte {at} not detected"));
        assert!(
            err.to_string().contains("bad.xcl"),
            "error does not name the file: {err}"
        );
    }
}

#[test]
fn every_truncation_and_extension_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_layer(dir.path(), 3);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("cut.xcl");
    for len in 0..good.len() {
        std::fs::write(&bad, &good[..len]).unwrap();
        let err = check(&bad).expect_err(&format!("truncation to {len} bytes not detected"));
        assert!(err.to_string().contains("cut.xcl"), "{err}");
        let expect_torn = len as u64 >= 96;
        assert_eq!(
            matches!(err, LayerReadError::Torn { .. }),
            expect_torn,
            "len {len}: {err}"
        );
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&good[good.len() - TRAILER_LEN as usize..]);
    std::fs::write(&bad, &longer).unwrap();
    assert!(matches!(
        check(&bad),
        Err(LayerReadError::SizeMismatch { .. })
    ));
}

/// Rewrite the file with `f` applied to its bytes and return the open error.
fn tamper(path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> LayerReadError {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    let bad = path.with_extension("bad");
    std::fs::write(&bad, &bytes).unwrap();
    check(&bad).unwrap_err()
}

/// Fix the trailer's own crc after editing it.
fn reseal_trailer(b: &mut [u8]) {
    let t = b.len() - 64;
    let crc = crc32c::crc32c(&b[t..t + 60]);
    b[t + 60..].copy_from_slice(&crc.to_le_bytes());
}

/// Fix the preamble's crc after editing it.
fn reseal_preamble(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn tampering_gives_exact_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_layer(dir.path(), 3);
    let e = tamper(&path, |b| b[0] = b'Y');
    assert!(
        matches!(e, LayerReadError::BadMagic { found, .. } if &found == b"YCKPTLYR"),
        "{e}"
    );
    let e = tamper(&path, |b| {
        b[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        reseal_preamble(b);
    });
    assert!(
        matches!(e, LayerReadError::BadVersion { found, .. } if found == VERSION + 1),
        "{e}"
    );
    let e = tamper(&path, |b| b[12] = 1);
    assert!(matches!(e, LayerReadError::PreambleChecksum { .. }), "{e}");
    let e = tamper(&path, |b| {
        let n = b.len();
        b[n - 64] = b'x';
    });
    assert!(matches!(e, LayerReadError::Torn { .. }), "{e}");
    let e = tamper(&path, |b| {
        let n = b.len();
        b[n - 50] ^= 1;
    });
    assert!(matches!(e, LayerReadError::TrailerChecksum { .. }), "{e}");
    let e = tamper(&path, |b| {
        let t = b.len() - 64;
        let table = u64_at(b, t + 16) as usize;
        b[table + 2] ^= 1;
    });
    assert!(matches!(e, LayerReadError::TableChecksum { .. }), "{e}");
    let e = tamper(&path, |b| {
        let t = b.len() - 64;
        b[t + 32] ^= 4; // recorded file length
        reseal_trailer(b);
    });
    assert!(matches!(e, LayerReadError::SizeMismatch { .. }), "{e}");
    // First byte of the META section (it follows the frames).
    let e = tamper(&path, |b| {
        let t = b.len() - 64;
        let meta_at = 32 + u64_at(b, t + 40) as usize;
        b[meta_at] ^= 1;
    });
    assert!(
        matches!(
            e,
            LayerReadError::SectionChecksum {
                section: "META",
                ..
            }
        ),
        "{e}"
    );
    // A bit of the first frame's data: open succeeds, verify and reads fail.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    let bad = path.with_extension("frame");
    std::fs::write(&bad, &bytes).unwrap();
    let r = LayerReader::open(&bad).unwrap();
    let e = r.verify().unwrap_err();
    assert!(
        matches!(e, LayerReadError::FrameChecksum { frame: 0, .. }),
        "{e}"
    );
    let e = r.read_page(0, &mut [0u8; PAGE_SIZE]).unwrap_err();
    assert!(
        matches!(e, LayerReadError::FrameChecksum { frame: 0, .. }),
        "{e}"
    );
    let mut buf = [0u8; PAGE_SIZE];
    r.read_page(7, &mut buf).unwrap();
    assert_eq!(
        buf.as_slice(),
        page(7, 1).as_slice(),
        "other frames still read"
    );
}

#[test]
fn torn_writes_are_refused_with_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, _) = fill_writer(dir.path(), 8, &[(0, Put::Data(1)), (1, Put::Data(1))], 1, 3);
    let tmp = writer.temp_path().to_path_buf();
    writer
        .push_frame(&xckpt::layer::compress_frame(
            &page(3, 3),
            3,
            writer.digest_kind(),
        ))
        .unwrap();
    // Simulate a kill: nothing flushed, nothing removed.
    std::mem::forget(writer);
    let e = check(&tmp).unwrap_err();
    assert!(
        matches!(
            e,
            LayerReadError::TooSmall { .. } | LayerReadError::Torn { .. }
        ),
        "{e}"
    );
}

#[test]
fn large_sparse_pfn_space() {
    let dir = tempfile::tempdir().unwrap();
    let pfn_count = 1 << 24;
    let mut puts: Vec<(u64, Put)> = (0..300)
        .map(|i| (i * 55_001 % pfn_count, Put::Data(i)))
        .collect();
    puts.push((pfn_count - 1, Put::Other(PageEntry::Zero)));
    let path = write_layer(dir.path(), &meta(1, None, pfn_count), &puts, 64, 3);
    assert!(
        std::fs::metadata(&path).unwrap().len() < 2 << 20,
        "index of an empty space must be small"
    );
    let r = LayerReader::open(&path).unwrap();
    for &(pfn, put) in &puts {
        if let Put::Data(v) = put {
            assert_eq!(read(&path, pfn), page(pfn, v));
        }
    }
    assert_eq!(r.entry(pfn_count - 1), Some(PageEntry::Zero));
    assert_eq!(r.entry(pfn_count - 2), None);
    r.verify().unwrap();
}

#[test]
fn covered_words_hold_exactly_the_covered_pfns() {
    // Full words, partial words, an uncovered stretch, a block of the space never touched, and
    // limits short of the space.
    let mut idx = LayerIndex::new(20_000);
    for pfn in (0..256)
        .chain([300, 301, 363, 700])
        .chain(900..1000)
        .chain([19_999])
    {
        idx.set(pfn, PageEntry::Zero, None);
    }
    for len in [20_000usize, 950, 64, 0] {
        let mut seen = vec![false; len];
        for (w, bits, unpop) in idx.covered_words(len) {
            assert_ne!(bits, 0, "word {w} is empty");
            assert_eq!(unpop, 0, "word {w}");
            for k in 0..64 {
                if bits >> k & 1 == 1 {
                    seen[w * 64 + k] = true;
                }
            }
        }
        for (pfn, &v) in seen.iter().enumerate() {
            let covered = idx.entry(pfn as u64).is_some();
            assert_eq!(v, covered, "pfn {pfn} below {len}");
        }
    }
}

#[test]
fn index_pack_and_unpack_agree() {
    let mut idx = LayerIndex::new(5000);
    let mut model = std::collections::HashMap::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for step in 0..20_000u64 {
        let pfn = rng.u64(0..5000);
        let e = match rng.u8(0..6) {
            0 => PageEntry::Zero,
            1 => PageEntry::Unpopulated,
            2 => PageEntry::Evicted(EvictPolicy::Cache),
            _ => PageEntry::Data,
        };
        let slot = (e == PageEntry::Data).then_some(step);
        idx.set(pfn, e, slot);
        model.insert(pfn, (e, slot));
        if step % 5000 == 0 {
            idx.pack();
        }
    }
    let bytes = idx.to_bytes();
    let parsed = LayerIndex::from_bytes(&bytes, 20_000).unwrap();
    idx.pack();
    for pfn in 0..5001 {
        let want = model.get(&pfn).copied();
        assert_eq!(idx.get(pfn), want, "pfn {pfn}");
        assert_eq!(parsed.get(pfn), want, "pfn {pfn}");
    }
    assert_eq!(parsed.counts(), idx.counts());
    assert!(
        LayerIndex::from_bytes(&bytes, 19_000).is_err(),
        "slots beyond the frames must be refused"
    );
}

#[test]
fn readers_and_indexes_are_shareable() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<LayerReader>();
    send_sync::<LayerIndex>();
    send_sync::<xckpt::compose::ComposedImage>();
    send::<LayerWriter>();
}

#[test]
fn unknown_preamble_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_layer(dir.path(), 3);
    let e = tamper(&path, |b| {
        b[12] = 1;
        reseal_preamble(b);
    });
    assert!(matches!(e, LayerReadError::BadLayout { .. }), "{e}");
}
