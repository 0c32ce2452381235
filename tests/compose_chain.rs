//! Composition of a chain of layers, checked against a reference model at every point.

mod chain_util;
mod layer_util;

use std::collections::HashMap;

use chain_util::lock_free;
use layer_util::{fill, meta, page, state, Put};
use xckpt::compose::{ComposeError, ComposedImage, FeedOptions, Image, PageSource, PageState};
use xckpt::hv::{Pfn, PAGE_SIZE};
use xckpt::layer::{EvictPolicy, LayerKind, LayerReadError, PageEntry};
use xckpt::store::{Chain, Store, StoreError};

const PFNS: u64 = 300;

/// What the model expects for a pfn: the state kind and, for data, (layer id, version).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Data(u64, u64),
    Zero,
    Evicted(EvictPolicy),
    Unpopulated,
}

/// The puts of layer `id` (1 = base) of the reference chain.
fn layer_puts(id: u64, rng: &mut fastrand::Rng) -> Vec<(Pfn, Put)> {
    let pfns: Vec<Pfn> = if id == 1 {
        (0..PFNS).filter(|p| p % 17 != 5).collect() // some pfns no layer covers
    } else {
        (0..rng.usize(5..60)).map(|_| rng.u64(0..PFNS)).collect()
    };
    let mut puts = Vec::new();
    for (i, pfn) in pfns.into_iter().enumerate() {
        let put = match rng.u8(0..10) {
            0 => Put::Other(PageEntry::Zero),
            1 => Put::Other(PageEntry::Unpopulated),
            2 => Put::Other(PageEntry::Evicted(EvictPolicy::Free)),
            3 => Put::Other(PageEntry::Evicted(EvictPolicy::Balloon)),
            _ => Put::Data(id * 1000 + i as u64),
        };
        puts.push((pfn, put));
    }
    puts
}

fn apply(model: &mut HashMap<Pfn, Want>, id: u64, puts: &[(Pfn, Put)]) {
    for &(pfn, put) in puts {
        let w = match put {
            Put::Data(v) => Want::Data(id, v),
            Put::Other(PageEntry::Zero) => Want::Zero,
            Put::Other(PageEntry::Evicted(p)) => Want::Evicted(p),
            Put::Other(_) => Want::Unpopulated,
        };
        model.insert(pfn, w);
    }
}

fn commit(chain: &Chain, id: u64, puts: &[(Pfn, Put)]) {
    let parent = (id > 1).then(|| id - 1);
    let (writer, index) = fill(chain.begin_layer().unwrap(), PFNS, puts, 8, 3);
    let record = chain
        .commit_layer(
            writer,
            &meta(id, parent, PFNS),
            &index,
            &state(id),
            &layer_util::config(id),
        )
        .unwrap();
    assert_eq!(record.id, id);
}

fn check_image(img: &ComposedImage, model: &HashMap<Pfn, Want>, top: u64) {
    assert_eq!(img.pfn_count(), PFNS);
    assert_eq!(img.layers().len() as u64, top);
    assert_eq!(img.state_blobs(), state(top).as_slice());
    assert_eq!(img.config(), layer_util::config(top).as_slice());
    let mut buf = vec![0u8; PAGE_SIZE];
    for pfn in 0..PFNS {
        let want = model.get(&pfn).copied().unwrap_or(Want::Unpopulated);
        let got = img.page_state(pfn);
        img.read_page(pfn, &mut buf).unwrap();
        match want {
            Want::Data(id, v) => {
                assert_eq!(got, PageState::Data(id as usize - 1), "pfn {pfn} at {top}");
                assert_eq!(buf, page(pfn, v), "pfn {pfn} at {top}");
                assert!(img.page_digest(pfn).is_some_and(|d| d.matches(&buf)));
            }
            other => {
                let state = match other {
                    Want::Zero => PageState::Zero,
                    Want::Evicted(p) => PageState::Evicted(p),
                    _ => PageState::Unpopulated,
                };
                assert_eq!(got, state, "pfn {pfn} at {top}");
                assert!(buf.iter().all(|&b| b == 0), "pfn {pfn} at {top} not zeros");
                assert_eq!(img.page_digest(pfn), None);
            }
        }
    }
    let mut seen = vec![0u32; PFNS as usize];
    img.for_each_page(|pfn, state, data| -> Result<(), LayerReadError> {
        seen[pfn as usize] += 1;
        assert_eq!(state, img.page_state(pfn), "pfn {pfn}");
        match (model.get(&pfn), data) {
            (Some(Want::Data(_, v)), Some(d)) => assert_eq!(d, page(pfn, *v).as_slice()),
            (Some(Want::Data(..)), None) => panic!("pfn {pfn}: data page visited without data"),
            (_, d) => assert!(d.is_none(), "pfn {pfn}: non-data page visited with data"),
        }
        Ok(())
    })
    .unwrap();
    assert!(
        seen.iter().all(|&n| n == 1),
        "every pfn visited exactly once"
    );
}

/// A reference chain of `layers` layers in a new store (random puts from `seed`), and the
/// model of each point; the store's directory and the chain's lock live as long as the first
/// two.
fn reference_chain(
    layers: u64,
    seed: u64,
) -> (
    tempfile::TempDir,
    Chain,
    xckpt::store::ChainLock,
    Vec<HashMap<Pfn, Want>>,
) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("store")).unwrap();
    let chain = store.chain("guest1").unwrap();
    let lock = lock_free(&chain);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut models = Vec::new();
    let mut model = HashMap::new();
    for id in 1..=layers {
        let puts = layer_puts(id, &mut rng);
        apply(&mut model, id, &puts);
        commit(&chain, id, &puts);
        models.push(model.clone());
    }
    (root, chain, lock, models)
}

#[test]
fn ten_layer_chain_matches_model_at_every_point() {
    let (_root, chain, _lock, models) = reference_chain(10, 42);
    for top in 1..=10u64 {
        let img = chain.compose(Some(top)).unwrap();
        check_image(&img, &models[top as usize - 1], top);
        // The same point's layers, not composed, say the same of every pfn.
        let stack = chain.layers(Some(top)).unwrap();
        assert_eq!(stack.pfn_count(), img.pfn_count());
        let populated = img
            .populated()
            .expect("a composed image keeps its populated pfns");
        assert_eq!(populated.len() as u64, img.pfn_count());
        for pfn in 0..img.pfn_count() {
            assert_eq!(
                stack.page_state(pfn),
                img.page_state(pfn),
                "pfn {pfn} at {top}"
            );
            assert_eq!(
                populated[pfn as usize],
                img.page_state(pfn) != PageState::Unpopulated,
                "populated bit of pfn {pfn} at {top}"
            );
            assert_eq!(
                stack.page_digest(pfn),
                img.page_digest(pfn),
                "pfn {pfn} at {top}"
            );
        }
    }
    let newest = chain.compose(None).unwrap();
    assert_eq!(newest.top().meta().id, 10);
    let report = chain.verify(None).unwrap();
    assert_eq!(report.path, (1..=10).collect::<Vec<_>>());
    assert_eq!(report.layers.len(), 10);
    assert!(matches!(
        chain.compose(Some(11)),
        Err(StoreError::NoSuchLayer { id: 11, .. })
    ));
}

/// The feed hands out every live data page of each point in pfn order, each the model's, and
/// refuses a pfn that is not the next data page (naming the one it expected) without losing
/// its place.
#[test]
fn the_feed_hands_out_live_pages_in_pfn_order_and_refuses_others() {
    let (_root, chain, _lock, models) = reference_chain(6, 7);
    for top in 1..=6u64 {
        let img = chain.compose(Some(top)).unwrap();
        let data: Vec<(Pfn, u64)> = (0..PFNS)
            .filter_map(|pfn| match models[top as usize - 1].get(&pfn) {
                Some(Want::Data(_, v)) => Some((pfn, *v)),
                _ => None,
            })
            .collect();
        let opts = FeedOptions {
            workers: 2,
            read_ahead: 3,
        };
        std::thread::scope(|s| {
            let mut feed = img.feed(s, opts);
            let (last, _) = *data.last().unwrap();
            let err = feed.page(last).err().expect("a pfn past the next one");
            let want = format!("(that is {:#x})", data[0].0);
            assert!(err.to_string().contains(&want), "{err}");
            for &(pfn, v) in &data {
                let got = feed.page(pfn).unwrap();
                assert_eq!(got.bytes(), &page(pfn, v)[..], "pfn {pfn} at {top}");
            }
            assert!(feed.page(last).is_err(), "a pfn handed out twice");
            assert_eq!(
                feed.frames_decoded() as usize,
                feed.frames_needed(),
                "each frame once"
            );
        });
    }
}

#[test]
fn composition_needs_a_base_and_linked_parents() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = store.chain("g").unwrap();
    let _lock = lock_free(&chain);
    let mut rng = fastrand::Rng::with_seed(1);
    for id in 1..=3 {
        commit(&chain, id, &layer_puts(id, &mut rng));
    }
    let m = chain.manifest().unwrap();
    let path = |id: u64| chain.layer_path(m.layer(id).unwrap());
    // Layer 3 without its parent.
    let err = ComposedImage::open(&path(3), |id| (id != 2).then(|| path(id)))
        .err()
        .unwrap();
    assert!(
        matches!(err, ComposeError::MissingParent { parent: 2, .. }),
        "{err}"
    );
    // Layers out of order, and no base at the bottom.
    let open = |id| xckpt::layer::LayerReader::open(&path(id)).unwrap();
    let err = ComposedImage::from_layers(vec![open(1), open(3)])
        .err()
        .unwrap();
    assert!(
        matches!(err, ComposeError::BadLink { below: 1, .. }),
        "{err}"
    );
    let err = ComposedImage::from_layers(vec![open(2), open(3)])
        .err()
        .unwrap();
    assert!(matches!(err, ComposeError::NoBase { .. }), "{err}");
    assert!(matches!(
        ComposedImage::from_layers(vec![]),
        Err(ComposeError::Empty)
    ));
    let img = ComposedImage::from_layers(vec![open(1), open(2)]).unwrap();
    assert_eq!(img.top().meta().kind, LayerKind::Incremental);
}
