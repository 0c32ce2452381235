//! Layers written by older formats stay readable. Each fixture holds a two-layer chain (a sim
//! base and a second layer) and `expected.txt`, which lists for each point and each pfn what the
//! writer's own reader composed (state, xxh3-64 of the page). The reader of today must verify
//! the chain and compose exactly the same images.
//!
//! - `tests/fixtures/layer-v1/`: format version 1, written by commit 4da0eff, its zstd frames
//!   carrying zstd's own content checksum.
//! - `tests/fixtures/layer-v3/`: format version 3 (frames checked by crc32c), written by commit
//!   a3a169b's `xckpt checkpoint --sim 524288`: a base of zstd frames (`--compress 1`) and a
//!   resync of raw frames (`--compress none`).
//!
//! `XCKPT_FIXTURE_WRITE=1` rewrites `expected.txt` from the reader of the day: only ever with
//! the writer's own commit checked out.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use xckpt::compose::{Image, PageState};
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::{page_digest, LayerReader};
use xckpt::store::Store;

const FIXTURES: [&str; 2] = ["layer-v1", "layer-v3"];

fn fixture_of(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture() -> PathBuf {
    fixture_of("layer-v1")
}

/// A private copy of a fixture store (0700 directories, 0600 files, as a store wants).
fn store_copy_of(fixture: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let chain = root.join("bench");
    std::fs::create_dir_all(&chain).unwrap();
    for d in [&root, &chain] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for e in std::fs::read_dir(fixture.join("bench")).unwrap() {
        let e = e.unwrap();
        let to = chain.join(e.file_name());
        std::fs::copy(e.path(), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (tmp, root)
}

/// Every point's composed image, one line per pfn: `point pfn state digest`.
fn composed_listing(root: &Path) -> String {
    let store = Store::open(root).unwrap();
    let chain = store.chain("bench").unwrap();
    let mut out = String::new();
    for id in [1, 2] {
        let image = chain.compose(Some(id)).unwrap();
        let mut buf = vec![0u8; PAGE_SIZE];
        for pfn in 0..image.pfn_count() {
            let (state, digest) = match image.page_state(pfn) {
                PageState::Data(layer) => {
                    image.read_page(pfn, &mut buf).unwrap();
                    (format!("data{layer}"), page_digest(&buf))
                }
                PageState::Zero => ("zero".into(), 0),
                PageState::Evicted(p) => (format!("{p:?}"), 0),
                PageState::Unpopulated => ("unpopulated".into(), 0),
            };
            writeln!(out, "{id} {pfn} {state} {digest:016x}").unwrap();
        }
    }
    out
}

#[test]
fn older_layers_verify_and_compose() {
    for name in FIXTURES {
        let (_tmp, root) = store_copy_of(&fixture_of(name));
        let store = Store::open(&root).unwrap();
        let chain = store.chain("bench").unwrap();
        chain.verify(None).expect("the older chain verifies");
        chain.verify_deep(None).expect("every point of it composes");
        for f in ["layer-000001.xcl", "layer-000002.xcl"] {
            let r = LayerReader::open(&root.join("bench").join(f)).unwrap();
            r.verify().unwrap();
        }
        let got = composed_listing(&root);
        let expected_path = fixture_of(name).join("expected.txt");
        if std::env::var_os("XCKPT_FIXTURE_WRITE").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&expected_path).unwrap();
        assert_eq!(got.lines().count(), want.lines().count(), "{name}");
        for (g, w) in got.lines().zip(want.lines()) {
            assert_eq!(
                g, w,
                "{name}: composed page differs from what its reader composed"
            );
        }
    }
}

#[test]
fn a_damaged_older_frame_is_named() {
    for name in FIXTURES {
        let (_tmp, root) = store_copy_of(&fixture_of(name));
        let path = root.join("bench/layer-000002.xcl");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x40; // inside the first frame (frames start at byte 32)
        std::fs::write(&path, &bytes).unwrap();
        let store = Store::open(&root).unwrap();
        let err = store.chain("bench").unwrap().verify(None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("layer-000002.xcl"), "{name}: {text}");
    }
}

/// Version-1 zstd frames carry zstd's content checksum; frames written now do not (the frame's
/// check code and the pages' digests cover them), and plain layers say version 4, whose frame
/// check code is xxh3-based (version 3's fixture frames carry crc32c).
#[test]
fn new_frames_drop_the_zstd_checksum_and_layers_say_version_4() {
    const CHECKSUM_FLAG: u8 = 0x04; // Frame_Header_Descriptor bit 2 (RFC 8878)
    let old = std::fs::read(fixture().join("bench/layer-000001.xcl")).unwrap();
    assert_eq!(
        &old[32..36],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "first frame is zstd"
    );
    assert_ne!(old[36] & CHECKSUM_FLAG, 0);
    assert_eq!(u32::from_le_bytes(old[8..12].try_into().unwrap()), 1);
    let pages: Vec<u8> = (0..4 * PAGE_SIZE).map(|i| (i / 64) as u8).collect();
    let f = xckpt::layer::compress_frame(&pages, 1);
    assert_eq!(f.codec, xckpt::layer::Codec::Zstd);
    assert_eq!(&f.data[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    assert_eq!(f.data[4] & CHECKSUM_FLAG, 0);
    assert_eq!(xckpt::layer::format::VERSION, 4);
    assert_eq!(xckpt::layer::format::preamble()[8..12], 4u32.to_le_bytes());
    // Frame check codes: xxh3 of the encoded bytes (zstd) or of the pages' digests (raw).
    assert_eq!(
        f.crc,
        xxhash_rust::xxh3::xxh3_64(&f.data) as u32,
        "a zstd frame's code"
    );
    let raw = xckpt::layer::compress_frame(&pages, 0);
    let digests: Vec<u8> = raw.digests.iter().flat_map(|d| d.to_le_bytes()).collect();
    assert_eq!(raw.crc, xxhash_rust::xxh3::xxh3_64(&digests) as u32);
    let v3 = std::fs::read(fixture_of("layer-v3").join("bench/layer-000001.xcl")).unwrap();
    assert_eq!(u32::from_le_bytes(v3[8..12].try_into().unwrap()), 3);
}
