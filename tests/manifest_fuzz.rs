//! The chain manifest and the group manifest are input: a store copied from another host, or
//! edited by hand, holds whatever bytes it holds. Arbitrary bytes, and valid manifests with any
//! field set to a hostile value (huge or zero ids, loops of parents, names that leave the
//! directory, duplicated or reordered records), never make a reader or an operation acting on
//! the manifest (open, verify, compose, retention, merge, prune, compaction, the next
//! checkpoint, the group's points) panic, allocate without bound or loop: each gives a result
//! or an error.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;
use xckpt::backend::sim::{SimConfig, SimDomain};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::group::{GroupDir, GroupMember, GroupPoint};
use xckpt::store::{RetentionPolicy, Store};

const PAGES: u64 = 64;

fn opts() -> CaptureOptions {
    CaptureOptions {
        compress_level: 0,
        threads: 1,
        frame_pages: 16,
        ..Default::default()
    }
}

/// A valid chain `g` (a base and three incrementals) and a group point naming it: every file's
/// name and bytes.
struct Template {
    layers: Vec<(String, Vec<u8>)>,
    manifest: Vec<u8>,
    group: Vec<u8>,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chain = store.chain("g").unwrap();
        let dom = Arc::new(SimDomain::new(SimConfig::small(PAGES)).unwrap());
        for i in 0..4u8 {
            dom.write_page(u64::from(i) * 3, &[i + 1; 4096]).unwrap();
            checkpoint(&dom, &chain, &opts()).unwrap();
        }
        let layers = chain
            .manifest()
            .unwrap()
            .layers
            .iter()
            .map(|r| {
                let bytes = std::fs::read(chain.dir().join(&r.file)).unwrap();
                (r.file.clone(), bytes)
            })
            .collect();
        let manifest = std::fs::read(chain.dir().join("manifest.json")).unwrap();
        let g = GroupDir::open(dir.path(), "job").unwrap();
        let _lock = g.lock(Duration::ZERO).unwrap();
        for id in [2, 4] {
            g.record(GroupPoint {
                id: id / 2,
                instant_unix_ms: 1_000 * id,
                skew_us: 7,
                members: vec![GroupMember {
                    chain: "g".into(),
                    layer: id,
                    downtime_us: 100,
                    disks: 0,
                    slot: Some(1),
                }],
            })
            .unwrap();
        }
        let group = std::fs::read(dir.path().join(".groups/job/manifest.json")).unwrap();
        Template {
            layers,
            manifest,
            group,
        }
    })
}

/// Every JSON pointer to a leaf (number, string, bool, null) or array of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            out.push(at.clone());
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// A hostile value: the edges of every integer type the fields use, names that leave the
/// directory, and wrong types.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0u64)),
        Just(Value::from(1u64)),
        Just(Value::from(2u64)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(u64::MAX - 1)),
        Just(Value::from(u64::from(u32::MAX))),
        Just(Value::from(1u64 << 53)),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(-1i64)),
        Just(Value::from(1.5f64)),
        Just(Value::Null),
        Just(Value::from(true)),
        Just(Value::from("")),
        Just(Value::from("../../etc/passwd")),
        Just(Value::from("layer-000001.xcl")),
        Just(Value::from("layer-999999.xcl")),
        (1u64..5).prop_map(|id| Value::from(format!("layer-{id:06}.r{}.xcl", u64::MAX))),
        (1u64..5).prop_map(|id| Value::from(format!("layer-{id:06}.r1.xcl"))),
        Just(Value::from("g")),
        Just(Value::from("x".repeat(5000))),
        Just(Value::Array(Vec::new())),
    ]
}

/// How to change one spot of a manifest.
#[derive(Debug, Clone)]
enum Edit {
    /// Set the leaf (or array) at the chosen pointer to a hostile value.
    Set(prop::sample::Index, Value),
    /// Duplicate an element of the chosen array (or of the array holding the chosen leaf).
    Dup(prop::sample::Index),
    /// Remove that element.
    Remove(prop::sample::Index),
    /// Reverse that array.
    Reverse(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), hostile()).prop_map(|(i, v)| Edit::Set(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Edit::Dup),
        1 => any::<prop::sample::Index>().prop_map(Edit::Remove),
        1 => any::<prop::sample::Index>().prop_map(Edit::Reverse),
    ]
}

/// The array at or holding `ptr`, with the index of `ptr` in it when it is an element.
fn array_of<'a>(v: &'a mut Value, ptr: &str) -> Option<(&'a mut Vec<Value>, Option<usize>)> {
    if v.pointer(ptr).is_some_and(Value::is_array) {
        return v.pointer_mut(ptr)?.as_array_mut().map(|a| (a, None));
    }
    let (parent, last) = ptr.rsplit_once('/')?;
    let i: usize = last.parse().ok()?;
    v.pointer_mut(parent)?.as_array_mut().map(|a| (a, Some(i)))
}

fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    for e in edits {
        let mut ptrs = Vec::new();
        pointers(&v, String::new(), &mut ptrs);
        let pick = |i: &prop::sample::Index| ptrs[i.index(ptrs.len())].clone();
        match e {
            Edit::Set(i, x) => {
                if let Some(slot) = v.pointer_mut(&pick(i)) {
                    *slot = x.clone();
                }
            }
            Edit::Dup(i) | Edit::Remove(i) | Edit::Reverse(i) => {
                let ptr = pick(i);
                let Some((a, at)) = array_of(&mut v, &ptr) else {
                    continue;
                };
                let at = at.unwrap_or(0);
                match e {
                    Edit::Dup(_) if at < a.len() => a.insert(at, a[at].clone()),
                    Edit::Remove(_) if at < a.len() => drop(a.remove(at)),
                    Edit::Reverse(_) => a.reverse(),
                    _ => {}
                }
            }
        }
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// A store in `dir` holding the template's layer files and group, with `manifest` as the
/// chain's manifest and `group` as the group's.
fn store_with(dir: &Path, manifest: &[u8], group: &[u8]) -> Store {
    let t = template();
    let store = Store::open(dir).unwrap();
    let chain_dir = dir.join("g");
    std::fs::create_dir(&chain_dir).unwrap();
    for (name, bytes) in &t.layers {
        std::fs::write(chain_dir.join(name), bytes).unwrap();
    }
    std::fs::write(chain_dir.join("manifest.json"), manifest).unwrap();
    let gdir = dir.join(".groups/job");
    std::fs::create_dir_all(&gdir).unwrap();
    std::fs::write(gdir.join("manifest.json"), group).unwrap();
    store
}

/// Everything that reads the chain's manifest and acts on it; any outcome but a panic is fine.
fn exercise_chain(store: &Store, write: bool) {
    let Ok(chain) = store.chain("g") else {
        return;
    };
    let Ok(m) = chain.manifest() else {
        return;
    };
    let _ = chain.verify(None);
    let _ = chain.verify_deep(None);
    for r in m.layers.iter().take(6) {
        if let Ok(img) = chain.compose(Some(r.id)) {
            let _ = SimDomain::from_image(&img);
        }
        let _ = chain.verify(Some(r.id));
    }
    let _ = chain.compose(None);
    for policy in [
        RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        },
        RetentionPolicy {
            keep_last: Some(u32::MAX),
            keep_hourly: Some(3),
            keep_daily: Some(u32::MAX),
        },
    ] {
        let _ = policy.select(&m.layers);
    }
    if !write {
        return;
    }
    let Ok(lock) = chain.lock_exclusive(Duration::from_secs(5)) else {
        return;
    };
    if let Some(r) = m.layers.get(1) {
        let _ = chain.compact_dead(&lock, r.id, 0.0);
        let _ = chain.merge(&lock, r.id);
    }
    drop(lock);
    let dom = Arc::new(SimDomain::new(SimConfig::small(PAGES)).unwrap());
    let _ = checkpoint(&dom, &chain, &opts());
}

/// Everything that reads the group manifest.
fn exercise_group(store: &Store) {
    let Ok(g) = GroupDir::open(store.root(), "job") else {
        return;
    };
    let _ = GroupDir::list(store.root());
    let Ok(m) = g.manifest() else {
        return;
    };
    let _ = m.next_id();
    for p in m.points.iter().take(4) {
        let _ = m.point(Some(p.id));
        let _ = p.missing(store);
    }
    let _ = m.point(None);
}

fn run(manifest: &[u8], group: &[u8], write: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), manifest, group);
    exercise_group(&store);
    exercise_chain(&store, write);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn hostile_chain_manifest_fields_never_panic(
        edits in proptest::collection::vec(edit(), 1..4),
        write in any::<bool>(),
    ) {
        let t = template();
        run(&apply(&t.manifest, &edits), &t.group, write);
    }

    #[test]
    fn hostile_group_manifest_fields_never_panic(
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let t = template();
        run(&t.manifest, &apply(&t.group, &edits), false);
    }

    #[test]
    fn arbitrary_or_mangled_manifest_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let t = template();
        run(&bytes, &bytes, false);
        let mut m = t.manifest.clone();
        let mut g = t.group.clone();
        for (i, x) in &flips {
            let at = i.index(m.len());
            m[at] = *x;
            let at = i.index(g.len());
            g[at] = *x;
        }
        m.truncate(cut.index(m.len() + 1));
        g.truncate(cut.index(g.len() + 1));
        run(&m, &g, true);
    }
}

#[test]
fn the_untouched_template_is_valid() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &t.manifest, &t.group);
    let chain = store.chain("g").unwrap();
    assert_eq!(chain.manifest().unwrap().layers.len(), 4);
    chain.verify_deep(None).unwrap();
    let g = GroupDir::open(dir.path(), "job")
        .unwrap()
        .manifest()
        .unwrap();
    assert_eq!(g.next_id(), 3);
    assert!(g.points[0].missing(&store).unwrap().is_empty());
}
