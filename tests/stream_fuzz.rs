//! The parser on arbitrary and mutated bytes: it must return (Ok or an error), never panic.

mod stream_common;

use std::sync::OnceLock;

use proptest::prelude::*;
use stream_common::{image, Collect, STORE_PFN};
use xckpt::compose::{Image, PageState};
use xckpt::hv::GuestType;
use xckpt::layer::EvictPolicy;
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

fn parse(b: &[u8]) {
    let mut sink = Collect::default();
    let _ = parse_save_file(&mut &b[..], &mut sink);
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
        let mut b = valid().to_vec();
        for (i, x) in flips {
            let at = i.index(b.len());
            b[at] = x;
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
        }
        parse(&b);
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
