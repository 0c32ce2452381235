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
//! - `tests/fixtures/layer-v4/`: format version 4 (page digests and frame check codes xxh3),
//!   written the same way by commit 141b49f.
//!
//! `XCKPT_FIXTURE_WRITE=1` rewrites `expected.txt` from the reader of the day: only ever with
//! the writer's own commit checked out.

mod layer_util;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use xckpt::compose::{Image, PageState};
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::{DigestKind, LayerReader};
use xckpt::store::Store;

const FIXTURES: [&str; 3] = ["layer-v1", "layer-v3", "layer-v4"];

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
                    (format!("data{layer}"), DigestKind::Xxh3.hash(&buf))
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

/// A version-5 layer on top of a version-4 chain (a store written before the upgrade): each
/// page is proven with the hash of the layer that holds it, by `verify`, by the restore's
/// feed and by the digests a resync compares live pages with.
#[test]
fn a_new_layer_on_an_older_chain_is_checked_with_each_layers_hash() {
    let (_tmp, root) = store_copy_of(&fixture_of("layer-v4"));
    let store = Store::open(&root).unwrap();
    let chain = store.chain("bench").unwrap();
    let old = chain.compose(Some(2)).unwrap();
    let pfn_count = old.pfn_count();
    let mut meta = layer_util::meta(3, Some(2), pfn_count);
    meta.domain = chain.manifest().unwrap().domain.unwrap();
    let writer = chain.begin_layer().unwrap();
    assert_eq!(writer.digest_kind(), DigestKind::Xxh64);
    let puts: Vec<_> = (0..8).map(|p| (p, layer_util::Put::Data(9))).collect();
    let (w, index) = layer_util::fill(writer, pfn_count, &puts, 4, 0);
    chain.commit_layer(w, &meta, &index, &[], &[]).unwrap();
    chain.verify(None).expect("the mixed chain verifies");
    chain.verify_deep(None).expect("every point of it composes");
    let image = chain.compose(Some(3)).unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    let (mut new, mut older) = (0, 0);
    for pfn in 0..pfn_count {
        if let PageState::Data(layer) = image.page_state(pfn) {
            image.read_page(pfn, &mut buf).unwrap();
            let d = image.page_digest(pfn).unwrap();
            assert!(d.matches(&buf), "pfn {pfn} of layer {layer}");
            if pfn < 8 {
                assert_eq!(d.kind, DigestKind::Xxh64);
                assert_eq!(buf, layer_util::page(pfn, 9));
                new += 1;
            } else {
                assert_eq!(d.kind, DigestKind::Xxh3);
                older += 1;
            }
        }
    }
    assert_eq!(new, 8);
    assert!(older > 50, "{older} pages of the older layers");
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
/// check code and the pages' digests cover them), and plain layers say version 5, whose page
/// digests and frame check codes are xxh64 (version 4's are xxh3, version 3's frames carry
/// crc32c).
#[test]
fn new_frames_drop_the_zstd_checksum_and_layers_say_version_5() {
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
    let f = xckpt::layer::compress_frame(&pages, 1, DigestKind::PLAIN);
    assert_eq!(f.codec, xckpt::layer::Codec::Zstd);
    assert_eq!(&f.data[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    assert_eq!(f.data[4] & CHECKSUM_FLAG, 0);
    assert_eq!(xckpt::layer::format::VERSION, 5);
    assert_eq!(xckpt::layer::format::preamble()[8..12], 5u32.to_le_bytes());
    // Page digests: xxh64 of each page. Frame check codes: xxh64 of the encoded bytes (zstd)
    // or of the pages' digests (raw).
    assert_eq!(
        f.digests[0],
        xxhash_rust::xxh64::xxh64(&pages[..PAGE_SIZE], 0)
    );
    assert_eq!(
        f.crc,
        xxhash_rust::xxh64::xxh64(&f.data, 0) as u32,
        "a zstd frame's code"
    );
    let raw = xckpt::layer::compress_frame(&pages, 0, DigestKind::PLAIN);
    let digests: Vec<u8> = raw.digests.iter().flat_map(|d| d.to_le_bytes()).collect();
    assert_eq!(raw.crc, xxhash_rust::xxh64::xxh64(&digests, 0) as u32);
    let v4 = std::fs::read(fixture_of("layer-v4").join("bench/layer-000001.xcl")).unwrap();
    assert_eq!(u32::from_le_bytes(v4[8..12].try_into().unwrap()), 4);
    let v3 = std::fs::read(fixture_of("layer-v3").join("bench/layer-000001.xcl")).unwrap();
    assert_eq!(u32::from_le_bytes(v3[8..12].try_into().unwrap()), 3);
}
