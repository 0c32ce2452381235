//! `xckpt-no-xen`: on a host that is not a Xen dom0, verbs that need Xen exit non-zero with one
//! clear line, and the read verbs (`list`, `inspect`, `verify`, `export`) work on a copied
//! store, with the Xen libraries hidden where this host has them.

mod stream_common;

use std::process::Command;

fn xckpt(args: &[&str]) -> (i32, String, String) {
    outcome(Command::new(env!("CARGO_BIN_EXE_xckpt")).args(args))
}

/// Run `cmd` (without the caller's store and config); (exit code, stdout, stderr).
fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .env_remove("XCKPT_STORE")
        .env_remove("XCKPT_CONFIG")
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
        vec!["checkpoint", "--store", s, "x"],
        vec!["untrack", "--store", s, "x"],
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

/// Run xckpt with every `libxen*.so*` of this host replaced by an empty file (a private mount
/// namespace, as root), so that nothing Xen can be loaded. Without `unshare` or root, runs it
/// as it is (the host is still not a dom0).
fn xckpt_no_libs(args: &[&str]) -> (i32, String, String) {
    let hide =
        "for f in /usr/lib/*/libxen*.so* /usr/lib/libxen*.so* /usr/local/lib/libxen*.so*; do \
                [ -f \"$f\" ] && { mount --bind /dev/null \"$f\" || exit 97; }; done; exec \"$@\"";
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", hide, "sh", "true"])
        .status();
    let mut cmd = if matches!(probe, Ok(s) if s.success()) {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", hide, "sh", env!("CARGO_BIN_EXE_xckpt")]);
        c
    } else {
        eprintln!("note: cannot hide the Xen libraries (no unshare/root); running as is");
        Command::new(env!("CARGO_BIN_EXE_xckpt"))
    };
    outcome(cmd.args(args))
}

/// Copy directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn read_verbs_work_on_a_copied_store_without_xen() {
    if is_dom0() {
        eprintln!("skipped: this host is a Xen dom0");
        return;
    }
    // A chain of two layers taken on the sim, and one imported from a save file (a sim layer
    // has no HVM state, so it cannot be exported), then copied as a backup host holds them.
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("orig");
    let o = orig.to_str().unwrap();
    for _ in 0..2 {
        let (code, _, err) = xckpt(&["checkpoint", "--store", o, "--sim", "16M", "g"]);
        assert_eq!(code, 0, "{err}");
    }
    let img = stream_common::image(xckpt::hv::GuestType::Pvh, 300);
    let mut save = Vec::new();
    xckpt::stream::write_save_file(&img, &Default::default(), &mut save).unwrap();
    let input = dir.path().join("in.save");
    std::fs::write(&input, save).unwrap();
    let (code, _, err) = xckpt(&[
        "import",
        "--store",
        o,
        input.to_str().unwrap(),
        "--name",
        "h",
    ]);
    assert_eq!(code, 0, "{err}");
    let copy = dir.path().join("copy");
    copy_dir(&orig, &copy);
    let s = copy.to_str().unwrap();
    // `list` without --offline: the store, and one note that Xen was not asked.
    let (code, out, err) = xckpt_no_libs(&["list", "--store", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("g ")), "{out}");
    assert_eq!(err.lines().count(), 1, "not one note: {err:?}");
    assert!(
        err.starts_with("xckpt: note: ") && err.contains("--offline"),
        "{err}"
    );
    let (code, out, err) = xckpt_no_libs(&["list", "--json", "--store", s]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["offline"], true);
    assert_eq!(v["chains"][0]["name"], "g");
    assert_eq!(v["chains"][0]["layers"], 2);
    let (code, _, err) = xckpt_no_libs(&["--quiet", "list", "--store", s]);
    assert_eq!((code, err.as_str()), (0, ""), "--quiet prints no note");
    let (code, out, err) = xckpt_no_libs(&["list", "g", "--store", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().count() >= 3, "{out}");
    let (code, out, err) = xckpt_no_libs(&["inspect", "g@2", "--store", s]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());
    let (code, out, err) = xckpt_no_libs(&["verify", "--deep", "g", "--store", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK up to layer 2"), "{out}");
    let save = dir.path().join("g.save");
    let (code, out, err) = xckpt_no_libs(&[
        "export",
        "h@1",
        "-o",
        save.to_str().unwrap(),
        "--json",
        "--store",
        s,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["bytes"].as_u64(),
        Some(std::fs::metadata(&save).unwrap().len())
    );
    // The original store is untouched by the reads of its copy.
    assert!(orig.join("g").exists());
}

/// The pause watchdog (`xckpt __watchdog DOMID`, parsed without the command-line parser)
/// starts, reads its pipe, and after a `U` exits without touching any domain when xckpt closes
/// the pipe.
#[test]
fn the_watchdog_runs_from_its_short_command_line() {
    use xckpt::backend::xen::watchdog::{Watchdog, RESUMED};
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_xckpt"));
    let mut w = Watchdog::spawn(exe, 7).expect("the watchdog starts");
    w.announce(RESUMED).unwrap();
    drop(w);
    // Anything else after the hidden verb goes through the parser, which refuses it.
    let (code, _, err) = xckpt(&["__watchdog", "7", "extra"]);
    assert_eq!(code, 2, "{err}");
}
