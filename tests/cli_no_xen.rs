//! `xckpt-no-xen`: on a host that is not a Xen dom0, verbs that need Xen exit non-zero with one
//! clear line, and the store-only verbs still work.

use std::process::Command;

fn xckpt(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xckpt"))
        .args(args)
        .output()
        .expect("run xckpt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_dom0() -> bool {
    std::path::Path::new("/dev/xen/privcmd").exists()
}

#[test]
fn xen_verbs_fail_with_one_clear_line() {
    if is_dom0() {
        eprintln!("skipped: this host is a Xen dom0");
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let s = store.path().to_str().unwrap();
    for args in [
        vec!["list", "--store", s],
        vec!["checkpoint", "--store", s, "x"],
    ] {
        let (code, _, err) = xckpt(&args);
        assert_ne!(code, 0, "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
        assert!(err.starts_with("xckpt: "), "{err}");
        let clear = ["Xen", "dom0", "xen-utils", "libxen"]
            .iter()
            .any(|w| err.contains(w));
        assert!(
            clear,
            "{args:?}: the line does not say Xen is missing: {err}"
        );
    }
}

#[test]
fn store_verbs_work_without_xen() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path().join("store");
    let s = s.to_str().unwrap();
    let (code, _, err) = xckpt(&["inspect", "--store", s, "g"]);
    assert_ne!(code, 0);
    assert!(err.contains("no store at"), "{err}");
    let (code, out, err) = xckpt(&["list", "--offline", "--json", "--store", s]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["chains"].as_array().unwrap().is_empty());
}
