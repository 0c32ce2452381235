//! Helpers of the chain tests: what every point of a chain restores to, and the comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;

use xckpt::compose::{Image, PageState};
use xckpt::hv::{StateBlob, PAGE_SIZE};
use xckpt::store::Chain;

/// What a point restores to: every page's state and bytes, CPU state and config.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub states: Vec<PageState>,
    pub memory: Vec<u8>,
    pub blobs: Vec<StateBlob>,
    pub config: Vec<u8>,
}

/// Compose point `id` of `chain` and read all of it.
pub fn point(chain: &Chain, id: u64) -> Point {
    let image = chain.compose(Some(id)).unwrap();
    let n = image.pfn_count();
    let mut memory = vec![0u8; n as usize * PAGE_SIZE];
    let mut states = Vec::with_capacity(n as usize);
    for pfn in 0..n {
        image
            .read_page(pfn, &mut memory[pfn as usize * PAGE_SIZE..][..PAGE_SIZE])
            .unwrap();
        // Which layer a page comes from changes with a merge; only the kind matters.
        states.push(match image.page_state(pfn) {
            PageState::Data(_) => PageState::Data(0),
            s => s,
        });
    }
    Point {
        states,
        memory,
        blobs: image.state_blobs().to_vec(),
        config: image.config().to_vec(),
    }
}

/// Every point of the chain.
pub fn points(chain: &Chain) -> BTreeMap<u64, Point> {
    chain
        .manifest()
        .unwrap()
        .layers
        .iter()
        .map(|r| (r.id, point(chain, r.id)))
        .collect()
}

/// The ids of the points the chain lists, oldest first.
pub fn ids(chain: &Chain) -> Vec<u64> {
    chain
        .manifest()
        .unwrap()
        .layers
        .iter()
        .map(|r| r.id)
        .collect()
}

/// Every point the chain still lists restores exactly as in `before`; returns how many.
pub fn assert_kept_points_equal(chain: &Chain, before: &BTreeMap<u64, Point>, what: &str) -> usize {
    let ids = ids(chain);
    for id in &ids {
        let want = before
            .get(id)
            .unwrap_or_else(|| panic!("{what}: layer {id} is new"));
        let got = point(chain, *id);
        assert_eq!(
            got.states, want.states,
            "{what}: point {id}: page states differ"
        );
        if got.memory != want.memory {
            let pfn = got
                .memory
                .chunks(PAGE_SIZE)
                .zip(want.memory.chunks(PAGE_SIZE))
                .position(|(a, b)| a != b)
                .unwrap();
            panic!("{what}: point {id}: pfn {pfn:#x} differs");
        }
        assert_eq!(
            got.blobs, want.blobs,
            "{what}: point {id}: vCPU state differs"
        );
        assert_eq!(
            got.config, want.config,
            "{what}: point {id}: config differs"
        );
    }
    ids.len()
}

/// Names of the files in the chain directory, sorted.
pub fn files(chain: &Chain) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(chain.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The chain directory holds exactly the listed layer files, the manifest and the lock
/// (plus the pending-bits file when present).
pub fn assert_no_leftovers(chain: &Chain, what: &str) {
    let m = chain.manifest().unwrap();
    let mut want: Vec<String> = m.layers.iter().map(|r| r.file.clone()).collect();
    want.push("lock".to_string());
    if chain.dir().join("manifest.json").exists() || !m.layers.is_empty() {
        want.push("manifest.json".to_string());
    }
    want.sort();
    let got: Vec<String> = files(chain)
        .into_iter()
        .filter(|n| n != "pending-dirty.bits")
        .collect();
    assert_eq!(got, want, "{what}: leftover files");
}

/// Take `chain`'s writer lock, which the test expects to be free. It waits a little: a child
/// that a parallel test forks while a lock file is open shares that flock until it execs, so a
/// lock just dropped can look held for a moment.
pub fn lock_free(chain: &Chain) -> xckpt::store::ChainLock {
    chain
        .lock_exclusive(std::time::Duration::from_secs(5))
        .unwrap()
}
