//! `--encrypt` end to end through the `xckpt` command: an imported save file becomes an
//! encrypted chain; restore, export, verify and inspect need the key; and a tampered or
//! wrong-key chain is refused with one line before `xl restore` is even started (restore
//! authenticates every frame of the chain first; the fake `xl` records whether it ran).

mod stream_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stream_common::image;
use xckpt::hv::GuestType;
use xckpt::stream::{write_save_file, StreamOptions};

struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Bed {
        let bed = Bed {
            dir: tempfile::tempdir().unwrap(),
        };
        let img = image(GuestType::Pvh, 300);
        let mut save = Vec::new();
        write_save_file(&img, &StreamOptions::default(), &mut save).unwrap();
        std::fs::write(bed.path("in.save"), save).unwrap();
        bed.key("key", &[7u8; 32]);
        bed.key("other", format!("{}\n", "ab".repeat(32)).as_bytes());
        // A fake `xl`: records that it ran, and keeps the stream it was fed.
        let xl = bed.path("xl");
        std::fs::write(
            &xl,
            format!(
                "#!/bin/sh\necho \"$@\" > {}\ncat > {}\n",
                bed.path("xl.ran").display(),
                bed.path("xl.stream").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&xl, std::fs::Permissions::from_mode(0o755)).unwrap();
        bed
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Run xckpt with `--store` and the fake xl; (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let store = self.path("store");
        let out = Command::new(env!("CARGO_BIN_EXE_xckpt"))
            .args(args)
            .arg("--store")
            .arg(&store)
            .env("XCKPT_XL", self.path("xl"))
            .env_remove("XCKPT_STORE")
            .env_remove("XCKPT_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn key_arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    fn layer(&self) -> PathBuf {
        self.path("store/g/layer-000001.xcl")
    }
}

/// `args` fail with exactly one `xckpt:` line containing `needle`, and xl did not run.
fn refused(bed: &Bed, args: &[&str], needle: &str) {
    let (code, _, err) = bed.run(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("xckpt: ") && err.contains(needle),
        "{args:?}: {err}"
    );
    assert!(
        !bed.path("xl.ran").exists(),
        "{args:?}: xl restore was started"
    );
}

#[test]
fn encrypted_chain_round_trip_and_refusals() {
    let bed = Bed::new();
    let key = bed.key_arg("key");
    let save = bed.key_arg("in.save");
    let (code, _, err) = bed.run(&["import", &save, "--name", "g", "--encrypt", &key]);
    assert_eq!(code, 0, "{err}");
    let raw = std::fs::read(bed.layer()).unwrap();
    assert_eq!(&raw[8..12], &2u32.to_le_bytes(), "not a version 2 layer");

    // Without the key: every reading verb says how to give it.
    for verb in ["verify", "inspect"] {
        refused(&bed, &[verb, "g"], "--encrypt KEYFILE");
    }
    refused(&bed, &["restore", "g"], "--encrypt KEYFILE");
    // A second layer without the key would be plain: refused too.
    let (code, _, err) = bed.run(&["import", &save, "--name", "g"]);
    assert_ne!(code, 0, "{err}");
    // The wrong key.
    let other = bed.key_arg("other");
    refused(&bed, &["restore", "g", "--encrypt", &other], "another key");
    refused(&bed, &["verify", "g", "--encrypt", &other], "another key");

    // The right key: verify, inspect, export and restore work, and xl gets the same stream
    // as the export file.
    let (code, out, err) = bed.run(&["verify", "g", "--encrypt", &key]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
    let (code, _, err) = bed.run(&["inspect", "g@1", "--json", "--encrypt", &key]);
    assert_eq!(code, 0, "{err}");
    let exported = bed.key_arg("out.save");
    let (code, _, err) = bed.run(&["export", "g@1", "-o", &exported, "--encrypt", &key]);
    assert_eq!(code, 0, "{err}");
    let mode = std::fs::metadata(&exported).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "exported stream mode");
    let (code, _, err) = bed.run(&["restore", "g", "--encrypt", &key]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(bed.path("xl.stream")).unwrap(),
        std::fs::read(&exported).unwrap()
    );
    std::fs::remove_file(bed.path("xl.ran")).unwrap();

    // One flipped byte in the last frame: the restore checks each frame as it streams it, so
    // xl restore gets a stream cut before the damaged frame (the real one then fails and
    // makes no domain) and the restore fails with one line naming the layer.
    let mut b = raw.clone();
    let at = b.len() / 2;
    b[at] ^= 0x40;
    std::fs::write(bed.layer(), &b).unwrap();
    let (code, _, err) = bed.run(&["restore", "g", "--encrypt", &key]);
    assert_ne!(code, 0, "a damaged frame was restored");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("fails authentication") && err.contains("layer-000001"),
        "{err}"
    );
    let cut = std::fs::read(bed.path("xl.stream")).unwrap();
    assert!(
        cut.len() < std::fs::read(&exported).unwrap().len(),
        "the stream was not cut"
    );
    std::fs::remove_file(bed.path("xl.ran")).unwrap();
    refused(
        &bed,
        &["export", "g", "-o", &exported, "--encrypt", &key],
        "layer 1",
    );
    refused(&bed, &["verify", "g", "--encrypt", &key], "layer 1");
}

#[test]
fn key_file_problems_are_one_line() {
    let bed = Bed::new();
    let save = bed.key_arg("in.save");
    let loose = bed.path("loose");
    std::fs::write(&loose, [1u8; 32]).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = loose.to_string_lossy().into_owned();
    refused(
        &bed,
        &["import", &save, "--name", "g", "--encrypt", &loose],
        "chmod 600",
    );
    bed.key("short", b"0123");
    let short = bed.key_arg("short");
    refused(
        &bed,
        &["import", &save, "--name", "g", "--encrypt", &short],
        "32 raw bytes or 64 hex digits",
    );
    assert!(!Path::new(&bed.path("store/g/manifest.json")).exists());
}
