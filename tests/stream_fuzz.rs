//! The parser on arbitrary and mutated bytes, alone and behind `xckpt import` (a save file from
//! someone else is input): it must return (Ok or an error), never panic, and never allocate
//! beyond what the bytes present justify.

mod stream_common;

use std::sync::OnceLock;

use proptest::prelude::*;
use stream_common::{image, Collect, STORE_PFN};
use xckpt::compose::{Image, PageState};
use xckpt::hv::GuestType;
use xckpt::import::{import_file, ImportError};
use xckpt::layer::EvictPolicy;
use xckpt::store::Store;
use xckpt::stream::{parse_save_file, write_save_file, StreamOptions};

/// A small valid HVM stream to mutate.
fn valid() -> &'static [u8] {
    static V: OnceLock<Vec<u8>> = OnceLock::new();
    V.get_or_init(|| {
        let mut out = Vec::new();
        write_save_file(
            &image(GuestType::Hvm, 40),
            &StreamOptions::default(),
            &mut out,
        )
        .unwrap();
        out
    })
}

/// The valid stream with bytes replaced at `flips`, cut at `cut` if given.
fn mutated(flips: Vec<(prop::sample::Index, u8)>, cut: Option<prop::sample::Index>) -> Vec<u8> {
    let mut b = valid().to_vec();
    for (i, x) in flips {
        let at = i.index(b.len());
        b[at] = x;
    }
    if let Some(c) = cut {
        b.truncate(c.index(b.len()));
    }
    b
}

fn parse(b: &[u8]) {
    let mut sink = Collect::default();
    let _ = parse_save_file(&mut &b[..], &mut sink);
}

/// `xckpt import` of `b` into a new chain; a chain it creates must verify.
fn import(b: &[u8]) -> Result<(), ImportError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guest.save");
    std::fs::write(&path, b).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("imported").unwrap();
    import_file(&path, &chain, 1)?;
    chain.verify_deep(None).expect("an imported chain verifies");
    Ok(())
}

/// Offset of the first PAGE_DATA record of a stream (type 1, a length that fits its count).
fn first_page_data(b: &[u8]) -> usize {
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    (0..b.len() - 24)
        .find(|&at| {
            let (ty, len, count) = (u32_at(at), u32_at(at + 4), u32_at(at + 8));
            ty == 1
                && count > 0
                && u32_at(at + 12) == 0
                && len >= 8 + count * 8
                && (len - 8 - count * 8) % 4096 == 0
                && (len - 8 - count * 8) / 4096 <= count
        })
        .expect("a PAGE_DATA record")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..4096)) {
        parse(&b);
    }

    #[test]
    fn valid_prefix_then_garbage_never_panics(
        cut in 0usize..200_000,
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let v = valid();
        let mut b = v[..cut.min(v.len())].to_vec();
        b.extend_from_slice(&tail);
        parse(&b);
    }

    #[test]
    fn mutated_stream_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        parse(&mutated(flips, cut));
    }

    #[test]
    fn mutated_header_fields_never_panic(
        at in 0usize..400,
        word in any::<u32>(),
    ) {
        // Overwrite one little-endian word in the headers / first records with any value,
        // including huge lengths and counts.
        let mut b = valid().to_vec();
        let at = at.min(b.len() - 4);
        b[at..at + 4].copy_from_slice(&word.to_le_bytes());
        parse(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mutated_stream_import_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let _ = import(&mutated(flips, cut));
    }

    #[test]
    fn hostile_pfn_words_import_without_panic_or_huge_allocation(
        page in 0usize..40,
        pfn in prop_oneof![
            Just(0u64), Just(1 << 24), Just(1 << 32), Just((1 << 52) - 1), any::<u64>()
        ],
    ) {
        // Rewrite one pfn word of the first PAGE_DATA record (keeping its type bits). A pfn
        // just below 2^32 is legal and costs an index of 2^32 pfns (minutes): not tried here.
        let mut b = valid().to_vec();
        let at = first_page_data(&b);
        let count = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        let w = at + 16 + 8 * (page % count);
        let word = u64::from_le_bytes(b[w..w + 8].try_into().unwrap());
        let word = (word & !((1 << 52) - 1)) | (pfn & ((1 << 52) - 1));
        b[w..w + 8].copy_from_slice(&word.to_le_bytes());
        parse(&b);
        let _ = import(&b);
    }
}

/// A save file naming a pfn no layer can hold is refused with one clear error, before an index
/// of that many pfns (here 2^40: 128 GiB per bitmap) is allocated.
#[test]
fn import_refuses_a_pfn_beyond_the_layer_format() {
    let mut b = valid().to_vec();
    let at = first_page_data(&b) + 16;
    let word = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let word = (word & !((1 << 52) - 1)) | (1 << 40);
    b[at..at + 8].copy_from_slice(&word.to_le_bytes());
    let msg = import(&b).unwrap_err().to_string();
    assert!(msg.contains("pfn 0x10000000000 is beyond"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

fn state_of(code: u8) -> PageState {
    match code % 5 {
        0 => PageState::Unpopulated,
        1 => PageState::Zero,
        2 => PageState::Evicted(EvictPolicy::Cache),
        _ => PageState::Data(0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any mix of page states round-trips: populated pfns in order, data byte-equal.
    #[test]
    fn random_images_round_trip(codes in proptest::collection::vec(any::<u8>(), 17..2200)) {
        let mut img = image(GuestType::Pvh, codes.len());
        for (pfn, c) in codes.iter().enumerate() {
            if pfn as u64 != STORE_PFN {
                img.states[pfn] = state_of(*c);
            }
            if let PageState::Data(_) = img.states[pfn] {
                img.data.entry(pfn as u64).or_insert_with(|| vec![*c; 4096]);
            }
        }
        let mut out = Vec::new();
        write_save_file(&img, &StreamOptions::default(), &mut out).unwrap();
        let mut sink = Collect::default();
        parse_save_file(&mut &out[..], &mut sink).unwrap();
        let want: Vec<u64> = (0..codes.len() as u64)
            .filter(|&p| img.page_state(p) != PageState::Unpopulated)
            .collect();
        prop_assert_eq!(sink.pages.iter().map(|p| p.0).collect::<Vec<_>>(), want);
        for (pfn, _, data) in &sink.pages {
            let data = data.as_ref().unwrap();
            match img.page_state(*pfn) {
                PageState::Data(_) => prop_assert_eq!(data, &img.data[pfn]),
                _ => prop_assert!(data.iter().all(|&b| b == 0)),
            }
        }
    }
}

#[test]
fn valid_stream_parses() {
    let mut sink = Collect::default();
    parse_save_file(&mut valid(), &mut sink).unwrap();
    assert!(!sink.pages.is_empty());
}
