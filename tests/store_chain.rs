//! The store: names, permissions, manifest, lock, verification, and crashes at every write
//! point of a commit (a child process aborted by a failpoint).

mod chain_util;
mod layer_util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use chain_util::lock_free;
use layer_util::{config, fill, meta, state, Put};
use xckpt::layer::LayerReadError;
use xckpt::store::{Chain, ChainVerifyError, Store, StoreError, TrackingState};

/// Held by the test that spawns children and by the one that tests the lock: a child forked
/// while a lock file is open shares its flock until it execs, so a lock dropped in that window
/// still looks held for a moment (this failed once on a loaded machine).
static FORKS: Mutex<()> = Mutex::new(());

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn puts(id: u64) -> Vec<(u64, Put)> {
    (0..20)
        .filter(|p| id == 1 || p % id == 0)
        .map(|p| (p, Put::Data(id)))
        .collect()
}

fn commit(chain: &Chain, id: u64) {
    let (writer, index) = fill(chain.begin_layer().unwrap(), 32, &puts(id), 4, 3);
    let parent = (id > 1).then(|| id - 1);
    chain
        .commit_layer(
            writer,
            &meta(id, parent, 32),
            &index,
            &state(id),
            &config(id),
        )
        .unwrap();
}

#[test]
fn names_are_validated() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    for bad in [
        "",
        ".",
        "..",
        "../etc",
        "a/b",
        "/abs",
        ".hidden",
        "x\0y",
        "sp ace",
        "é",
        &"a".repeat(65),
    ] {
        let err = store
            .chain(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(matches!(err, StoreError::BadName { .. }), "{bad:?}: {err}");
    }
    for good in [
        "guest1",
        "a",
        "web-01.prod_x",
        "..x".trim_start_matches('.'),
        &"a".repeat(64),
    ] {
        store.chain(good).unwrap();
    }
    assert!(
        store.chains().unwrap().is_empty(),
        "looking a chain up does not create it"
    );
}

#[test]
fn permissions_and_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
    let chain = store.chain("g").unwrap();
    commit(&chain, 1);
    assert_eq!(mode(chain.dir()), 0o700);
    assert_eq!(mode(&chain.dir().join("manifest.json")), 0o600);
    assert_eq!(mode(&chain.dir().join("layer-000001.xcl")), 0o600);
    assert_eq!(store.chains().unwrap(), vec!["g".to_string()]);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(store.warnings().len(), 1);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    assert!(matches!(
        Store::open(&link),
        Err(StoreError::Symlink { .. })
    ));
    std::os::unix::fs::symlink(tmp.path(), root.join("evil")).unwrap();
    assert!(matches!(
        store.chain("evil"),
        Err(StoreError::Symlink { .. })
    ));
}

#[test]
fn manifest_records_layers_and_tracking() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = store.chain("g").unwrap();
    assert!(chain.manifest().unwrap().layers.is_empty());
    assert!(matches!(
        chain.compose(None),
        Err(StoreError::EmptyChain { .. })
    ));
    commit(&chain, 1);
    commit(&chain, 2);
    let m = chain.manifest().unwrap();
    assert_eq!(
        m.layers
            .iter()
            .map(|r| (r.id, r.parent))
            .collect::<Vec<_>>(),
        [(1, None), (2, Some(1))]
    );
    assert_eq!(m.layers[1].file, "layer-000002.xcl");
    assert_eq!(
        m.layers[1].bytes,
        std::fs::metadata(chain.dir().join("layer-000002.xcl"))
            .unwrap()
            .len()
    );
    assert_eq!(m.domain.as_ref().unwrap().name, "guest1");
    // Ids must grow and parents must exist.
    let (w, i) = fill(chain.begin_layer().unwrap(), 32, &puts(1), 4, 3);
    let err = chain
        .commit_layer(w, &meta(2, Some(1), 32), &i, &[], &[])
        .unwrap_err();
    assert!(matches!(err, StoreError::BadCommit { id: 2, .. }), "{err}");
    let (w, i) = fill(chain.begin_layer().unwrap(), 32, &puts(1), 4, 3);
    let err = chain
        .commit_layer(w, &meta(5, Some(4), 32), &i, &[], &[])
        .unwrap_err();
    assert!(matches!(err, StoreError::BadCommit { id: 5, .. }), "{err}");
    let tracking = TrackingState {
        armed: true,
        identity: layer_util::identity(),
        since_layer: 2,
        in_flight: false,
        spot: vec![xckpt::store::SpotPage {
            pfn: 3,
            digest: 0x1234_5678_9abc_def0,
            hash: xckpt::layer::DigestKind::Xxh64,
        }],
    };
    // A sample kept before format version 5 names no hash: its digests are xxh3.
    let old: xckpt::store::SpotPage = serde_json::from_str(r#"{"pfn":3,"digest":5}"#).unwrap();
    assert_eq!(old.hash, xckpt::layer::DigestKind::Xxh3);
    chain.set_tracking(Some(tracking.clone())).unwrap();
    let m = chain.manifest().unwrap();
    assert_eq!(m.tracking, Some(tracking));
    assert_eq!(m.layers.len(), 2);
    let r = chain.open_layer(2).unwrap();
    assert_eq!(r.meta().id, 2);
    assert!(matches!(
        chain.open_layer(3),
        Err(StoreError::NoSuchLayer { id: 3, .. })
    ));
    std::fs::write(chain.dir().join("manifest.json"), b"{not json").unwrap();
    assert!(matches!(
        chain.manifest(),
        Err(StoreError::ManifestJson { .. })
    ));
}

#[test]
fn lock_is_exclusive_and_protects_leftovers() {
    let _no_forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = store.chain("g").unwrap();
    let held = lock_free(&chain);
    let err = chain.lock_exclusive(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    // A writer in progress under the lock: opening the chain elsewhere must not remove its file.
    let writer = chain.begin_layer().unwrap();
    let tmp = writer.temp_path().to_path_buf();
    let again = store.chain("g").unwrap();
    assert!(again.removed_leftovers().is_empty());
    assert!(tmp.exists());
    drop(held);
    std::mem::forget(writer); // as if killed
    let again = store.chain("g").unwrap();
    assert_eq!(again.removed_leftovers().len(), 1);
    assert!(!tmp.exists());
    lock_free(&chain);
}

#[test]
fn verify_names_the_bad_layer() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = store.chain("g").unwrap();
    for id in 1..=3 {
        commit(&chain, id);
    }
    let report = chain.verify(None).unwrap();
    assert_eq!((report.top, report.path.clone()), (3, vec![1, 2, 3]));
    // Damage one byte of layer 2's page data.
    let p2 = chain.dir().join("layer-000002.xcl");
    let mut bytes = std::fs::read(&p2).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&p2, &bytes).unwrap();
    let err = chain.verify(None).unwrap_err();
    assert!(
        matches!(
            &err,
            ChainVerifyError::Layer {
                id: 2,
                error: LayerReadError::FrameChecksum { .. },
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("layer-000002.xcl") && msg.contains("--full"),
        "{msg}"
    );
    assert_eq!(chain.verify(Some(1)).unwrap().path, vec![1]);
    // The manifest disagreeing with a header.
    let mpath = chain.dir().join("manifest.json");
    let mut m = chain.manifest().unwrap();
    m.layers[0].bytes += 1;
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = chain.verify(Some(1)).unwrap_err();
    assert!(
        matches!(err, ChainVerifyError::Mismatch { id: 1, .. }),
        "{err}"
    );
    // A layer whose parent is gone from the manifest.
    m.layers[0].bytes -= 1;
    m.layers.remove(1);
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = chain.verify(None).unwrap_err();
    assert!(
        matches!(
            err,
            ChainVerifyError::BrokenLink {
                id: 3,
                parent: 2,
                ..
            }
        ),
        "{err}"
    );
}

/// Helper run in a child process: commit layer 2 into the chain at `XCKPT_CRASH_DIR`, with
/// `XCKPT_FAILPOINT` set by the parent. Does nothing when run normally.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var("XCKPT_CRASH_DIR") else {
        return;
    };
    let store = Store::open(Path::new(&root)).unwrap();
    let chain = store.chain("g").unwrap();
    let _lock = lock_free(&chain);
    commit(&chain, 2);
    std::process::exit(0);
}

/// Failpoints of a commit and the layers the chain must list after a crash there.
const CRASHES: &[(&str, &[u64])] = &[
    ("layer.create", &[1]),
    ("layer.frame", &[1]),
    ("layer.frame:3", &[1]),
    ("layer.sections.before", &[1]),
    ("layer.sections.after", &[1]),
    ("layer.trailer", &[1]),
    ("layer.rename.before", &[1]),
    ("layer.rename.after", &[1]),
    ("manifest.temp", &[1]),
    ("manifest.rename.before", &[1]),
    ("manifest.rename.after", &[1, 2]),
];

#[test]
fn crash_at_every_write_point_leaves_a_readable_chain() {
    let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    for &(point, want) in CRASHES {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        commit(&store.chain("g").unwrap(), 1);
        let status = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("XCKPT_CRASH_DIR", root.path())
            .env("XCKPT_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!status.status.success(), "{point}: child was not killed");
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(
            stderr.contains(&format!("failpoint {}", point.split(':').next().unwrap())),
            "{point}: {stderr}"
        );
        let chain = store.chain("g").unwrap();
        assert_eq!(chain_util::ids(&chain), want, "{point}");
        // Leftovers are gone: only the listed layers, the manifest and the lock remain.
        let mut names: Vec<String> = std::fs::read_dir(chain.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expect: Vec<String> = want.iter().map(|id| format!("layer-{id:06}.xcl")).collect();
        expect.extend(["lock".to_string(), "manifest.json".to_string()]);
        assert_eq!(names, expect, "{point}");
        let report = chain.verify(None).unwrap();
        assert_eq!(report.top, *want.last().unwrap(), "{point}");
        // The newest listed point restores in full exactly as in a chain never crashed.
        let clean = tempfile::tempdir().unwrap();
        let reference = Store::open(clean.path()).unwrap().chain("g").unwrap();
        want.iter().for_each(|&id| commit(&reference, id));
        let top = *want.last().unwrap();
        assert!(
            chain_util::point(&chain, top) == chain_util::point(&reference, top),
            "{point}: point {top} differs from the one never crashed"
        );
        // And the chain goes on: the next commit works.
        let next = want.last().unwrap() + 1;
        commit(&chain, next);
        assert_eq!(
            chain.verify(None).unwrap().path,
            (1..=next).collect::<Vec<_>>(),
            "{point}"
        );
    }
}

#[test]
fn damaged_manifest_deletes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let chain = store.chain("g").unwrap();
    commit(&chain, 1);
    std::fs::write(chain.dir().join("manifest.json"), b"garbage").unwrap();
    let chain = store.chain("g").unwrap();
    assert!(chain.removed_leftovers().is_empty());
    assert!(chain.dir().join("layer-000001.xcl").exists());
    let err = chain.verify(None).unwrap_err();
    assert!(
        matches!(
            err,
            ChainVerifyError::Store(StoreError::ManifestJson { .. })
        ),
        "{err}"
    );
}
