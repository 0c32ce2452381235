//! Guest memory images are secrets: every directory of the store is 0700 and every file 0600
//! whatever the umask (layers, temp files, manifest, lock, pending bits, exported streams),
//! nothing is reached through a symlink, and names cannot lead out of the store.

mod chain_util;
mod layer_util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use chain_util::lock_free;
use layer_util::{fill, meta, state, Put};
use xckpt::capture::pending;
use xckpt::hv::PfnBitmap;
use xckpt::store::{Chain, Store, StoreError};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every directory under `root` (and `root`) is 0700, every file 0600.
fn assert_private(root: &Path) -> usize {
    assert_eq!(mode(root), 0o700, "{}", root.display());
    let mut n = 0;
    for ent in std::fs::read_dir(root).unwrap() {
        let p = ent.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            n += assert_private(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            n += 1;
        }
    }
    n
}

fn commit(chain: &Chain, id: u64) {
    let puts: Vec<(u64, Put)> = (0..8).map(|p| (p, Put::Data(id))).collect();
    let (w, index) = fill(chain.begin_layer().unwrap(), 16, &puts, 4, 1);
    let parent = (id > 1).then(|| id - 1);
    chain
        .commit_layer(w, &meta(id, parent, 16), &index, &state(id), b"{}")
        .unwrap();
}

/// With umask 0 every mode comes from xckpt itself: 0700 directories, 0600 files, including
/// the temp file of a layer being written and the pending dirty bits.
#[test]
fn modes_do_not_depend_on_the_umask() {
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0) };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let chain = store.chain("g").unwrap();
    commit(&chain, 1);
    let writer = chain.begin_layer().unwrap();
    assert_eq!(mode(writer.temp_path()), 0o600, "temp layer file");
    let bits = PfnBitmap::repeat(true, 16);
    // A leftover temp of the pending bits with loose bits is not reused.
    let leftover = chain.dir().join(".pending-dirty.bits.tmp");
    std::fs::write(&leftover, b"x").unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o666)).unwrap();
    pending::save(chain.dir(), &bits).unwrap();
    // A lock file someone made world-readable is tightened.
    drop(lock_free(&chain));
    std::fs::set_permissions(
        chain.dir().join("lock"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    drop(lock_free(&chain));
    let files = assert_private(&root);
    drop(writer);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    // manifest, layer, lock, temp layer, pending bits
    assert!(files >= 5, "{files} files");
}

#[test]
fn nothing_is_reached_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let chain = store.chain("g").unwrap();
    commit(&chain, 1);
    let secret = tmp.path().join("elsewhere");
    std::fs::write(&secret, b"not a layer").unwrap();

    // A layer file replaced by a symlink: not followed, and said so in one line.
    let layer = chain.dir().join("layer-000001.xcl");
    let saved = tmp.path().join("saved.xcl");
    std::fs::rename(&layer, &saved).unwrap();
    std::os::unix::fs::symlink(&saved, &layer).unwrap();
    let e = chain
        .open_layer(1)
        .err()
        .expect("followed a symlinked layer");
    let msg = e.to_string();
    assert!(
        msg.contains("symbolic link") || msg.contains("symlink"),
        "{msg}"
    );
    assert!(chain.verify(None).is_err());
    std::fs::remove_file(&layer).unwrap();
    std::fs::rename(&saved, &layer).unwrap();

    // The manifest replaced by a symlink.
    let manifest = chain.dir().join("manifest.json");
    std::fs::rename(&manifest, tmp.path().join("m.json")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("m.json"), &manifest).unwrap();
    let e = chain.manifest().unwrap_err();
    assert!(matches!(e, StoreError::Symlink { .. }), "{e}");
    std::fs::remove_file(&manifest).unwrap();
    std::fs::rename(tmp.path().join("m.json"), &manifest).unwrap();
    chain.verify(None).unwrap();

    // The pending bits as a symlink: unusable (the next layer resyncs), never read through.
    std::os::unix::fs::symlink(&secret, chain.dir().join("pending-dirty.bits")).unwrap();
    assert!(matches!(
        pending::load(chain.dir(), 16),
        pending::Pending::Unusable(_)
    ));

    // A chain directory swapped for a symlink after the store was opened.
    let real = tmp.path().join("real-g");
    std::fs::rename(chain.dir(), &real).unwrap();
    std::os::unix::fs::symlink(&real, root.join("g")).unwrap();
    let e = chain
        .begin_layer()
        .err()
        .expect("wrote through a symlinked chain dir");
    assert!(matches!(e, StoreError::Symlink { .. }), "{e}");
    assert!(matches!(store.chain("g"), Err(StoreError::Symlink { .. })));
    assert!(
        store.chains().unwrap().is_empty(),
        "a symlink listed as a chain"
    );
}

#[test]
fn a_manifest_cannot_point_outside_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let chain = store.chain("g").unwrap();
    commit(&chain, 1);
    let path = chain.dir().join("manifest.json");
    for evil in ["../../elsewhere", "/etc/shadow", "layer-1.xcl/../x"] {
        let text = std::fs::read_to_string(&path).unwrap();
        let bad = text.replace("layer-000001.xcl", evil);
        std::fs::write(&path, &bad).unwrap();
        let e = chain.manifest().unwrap_err().to_string();
        assert!(e.contains("not layer-NNNNNN.xcl"), "{e}");
        std::fs::write(&path, text).unwrap();
    }
    chain.manifest().unwrap();
}

/// Once a chain's newest layer is encrypted, a layer without the key is refused (it would
/// hold pages in the clear); with the key the chain goes on, and reads need the key.
#[test]
fn an_encrypted_chain_takes_no_plain_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let key = xckpt::layer::LayerKey::from_bytes([9; 32]);
    let sealed = store.chain("g").unwrap().with_key(Some(key.clone()));
    commit(&sealed, 1);
    let plain = store.chain("g").unwrap();
    let e = plain
        .begin_layer()
        .err()
        .expect("a plain layer on an encrypted chain");
    assert!(matches!(e, StoreError::NeedKey { .. }), "{e}");
    assert!(plain.verify(None).is_err());
    commit(&sealed, 2);
    assert_eq!(sealed.verify(None).unwrap().path, vec![1, 2]);
    assert!(sealed.open_layer(2).unwrap().is_sealed());
}

fn xckpt(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xckpt"))
        .args(args)
        .env_remove("XCKPT_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

/// Domain names, chain names and `@N` cannot leave the store; each is refused in one line.
#[test]
fn names_cannot_traverse() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    Store::open(&root).unwrap();
    let s = root.to_str().unwrap();
    let save = tmp.path().join("x.save");
    std::fs::write(&save, b"").unwrap();
    let save = save.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["verify", "--store", s, "../etc"],
            "invalid domain name",
        ),
        (
            vec!["inspect", "--store", s, "a/b@1"],
            "invalid domain name",
        ),
        (
            vec!["list", "--store", s, "--offline", ".."],
            "invalid domain name",
        ),
        (
            vec!["restore", "--store", s, "/etc/passwd@1"],
            "invalid domain name",
        ),
        (
            vec!["export", "--store", s, "..@1", "-o", "/tmp/x"],
            "invalid domain name",
        ),
        (
            vec!["import", "--store", s, save, "--name", "../../x"],
            "invalid domain name",
        ),
        (vec!["verify", "--store", s, "g@../1"], "layer number"),
    ];
    for (args, needle) in cases {
        let (code, err) = xckpt(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if needle != "layer number" {
            // clap usage errors are clap's; ours are one line.
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}
