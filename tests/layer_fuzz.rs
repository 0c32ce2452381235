//! Arbitrary bytes and mutated valid layers never make the reader panic.

mod layer_util;

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::LayerReader;

/// A valid small layer's bytes.
fn valid() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::read(layer_util::small_layer(dir.path(), 3)).unwrap()
    })
}

/// Open, verify and read every pfn; any outcome but a panic is fine.
fn exercise(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.xcl");
    std::fs::write(&path, bytes).unwrap();
    exercise_path(&path);
}

fn exercise_path(path: &Path) {
    let Ok(r) = LayerReader::open(path) else {
        return;
    };
    let _ = r.verify();
    let mut buf = vec![0u8; PAGE_SIZE];
    for pfn in 0..r.meta().pfn_count.min(64) + 2 {
        let _ = r.read_page(pfn, &mut buf);
    }
    let _ = r.figures();
}

/// Recompute every checksum of a (mutated) layer so the mutation reaches the parsers behind
/// them. Works on the layout the trailer describes, as far as it is in bounds.
fn reseal(b: &mut [u8]) {
    let n = b.len();
    if n < 96 {
        return;
    }
    let crc = crc32c::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    let t = n - 64;
    let table = u64::from_le_bytes(b[t + 16..t + 24].try_into().unwrap()) as usize;
    let table_len = u64::from_le_bytes(b[t + 24..t + 32].try_into().unwrap()) as usize;
    if table.checked_add(table_len).is_some_and(|e| e <= t) {
        for e in (table..table + table_len)
            .step_by(32)
            .take_while(|e| e + 32 <= t)
        {
            let off = u64::from_le_bytes(b[e + 8..e + 16].try_into().unwrap()) as usize;
            let len = u64::from_le_bytes(b[e + 16..e + 24].try_into().unwrap()) as usize;
            if off.checked_add(len).is_some_and(|end| end <= n) {
                let crc = crc32c::crc32c(&b[off..off + len]);
                b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&b[table..table + table_len]);
        b[t + 56..t + 60].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b[t..t + 60]);
    b[t + 60..].copy_from_slice(&crc.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_bytes_with_valid_frame_do_not_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        // A valid preamble and trailer magic around garbage, resealed.
        let mut bytes = valid()[..32].to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&valid()[valid().len() - 64..]);
        reseal(&mut bytes);
        exercise(&bytes);
    }

    #[test]
    fn mutated_layers_do_not_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        resealed in any::<bool>(),
    ) {
        let mut bytes = valid().to_vec();
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if resealed {
            reseal(&mut bytes);
        }
        exercise(&bytes);
    }
}

#[test]
fn resealed_mutations_reach_the_parsers() {
    // Sanity check of `reseal`: a resealed copy of a valid file opens.
    let mut bytes = valid().to_vec();
    reseal(&mut bytes);
    assert_eq!(bytes, valid());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_index_bytes_do_not_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        slots in 0u64..20,
    ) {
        use xckpt::layer::{EvictPolicy, LayerIndex, PageEntry};
        let mut idx = LayerIndex::new(130);
        idx.set(3, PageEntry::Data, Some(0));
        idx.set(64, PageEntry::Zero, None);
        idx.set(129, PageEntry::Evicted(EvictPolicy::Free), None);
        idx.set(100, PageEntry::Data, Some(1));
        let mut bytes = idx.to_bytes();
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        if let Ok(parsed) = LayerIndex::from_bytes(&bytes, slots) {
            for pfn in 0..parsed.pfn_count().min(300) + 1 {
                if let Some((PageEntry::Data, slot)) = parsed.get(pfn) {
                    prop_assert!(slot.is_some_and(|s| s < slots));
                }
            }
            let _ = parsed.counts();
            let _ = parsed.iter().count();
        }
    }
}
