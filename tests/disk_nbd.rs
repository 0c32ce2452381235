//! Disks that follow a domain to another host, on the real tools without Xen: stock `qemu-nbd`
//! serves a snapshot, `qemu-img` makes the overlay backed by the export, and a QEMU (no guest,
//! `-machine none`) holding the overlay runs the QMP block-stream copy as a qdisk device
//! model would. Once the copy is complete, the source may go: the overlay alone holds the
//! disk, byte for byte (checked by `qemu-img compare`, not by xckpt).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xckpt::disk::nbd::{create_overlay, CopyState, DiskCopy, Server};

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(20);

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is missing: install qemu-utils and qemu-system-x86 (tools/test-all does)"
    );
}

/// A raw disk of `mib` MiB, every 4 KiB block different, with holes.
fn source(dir: &Path, mib: usize) -> PathBuf {
    let mut data = vec![0u8; mib * MIB];
    for (i, block) in data.chunks_mut(4096).enumerate() {
        if i % 7 != 3 {
            let word = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
            for (j, b) in block.iter_mut().enumerate() {
                *b = word[j % 8] ^ (j as u8);
            }
        }
    }
    let p = dir.join("snap.raw");
    std::fs::write(&p, data).unwrap();
    p
}

/// A QEMU with no guest whose one drive is the overlay, and its QMP socket.
struct Dm(Child, PathBuf);

impl Dm {
    fn start(dir: &Path, overlay: &Path) -> Dm {
        let qmp = dir.join("qmp.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-drive")
            .arg(format!(
                "file={},format=qcow2,if=none,id=xvda",
                overlay.display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64");
        let until = Instant::now() + LIMIT;
        while !qmp.exists() {
            assert!(Instant::now() < until, "QEMU made no QMP socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        Dm(child, qmp)
    }

    /// The copy of `overlay` in this device model, at `mib_s` MiB/s.
    fn copy(&self, overlay: &Path, mib_s: u64) -> DiskCopy {
        DiskCopy {
            qmp: self.1.clone(),
            overlay: overlay.to_str().unwrap().to_string(),
            job: "xckpt-xvda".into(),
            rate: Some(mib_s << 20),
        }
    }
}

impl Drop for Dm {
    // Killed, not quit: what the copy made durable is all the overlay has (a host crash).
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll until the copy is no longer copying; the states seen on the way.
fn follow(copy: &DiskCopy) -> (CopyState, Vec<CopyState>) {
    let until = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    loop {
        let s = copy.progress().unwrap();
        if !matches!(s, CopyState::Copying { .. }) {
            return (s, seen);
        }
        seen.push(s);
        assert!(Instant::now() < until, "the copy did not end: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn compare(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
        .args([a, b])
        .status()
        .unwrap()
        .success()
}

fn setup(mib: usize) -> (tempfile::TempDir, PathBuf, Server, PathBuf) {
    for t in ["qemu-nbd", "qemu-img", "qemu-system-x86_64"] {
        need(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), mib);
    let server = Server::start(
        src.to_str().unwrap(),
        "raw",
        "127.0.0.1",
        "127.0.0.1",
        "hping-xvda",
        LIMIT,
    )
    .unwrap();
    let overlay = dir.path().join("local.qcow2");
    create_overlay(server.export(), &overlay, LIMIT).unwrap();
    (dir, src, server, overlay)
}

#[test]
fn a_complete_copy_holds_the_whole_disk_once_the_source_is_gone() {
    let (dir, src, mut server, overlay) = setup(32);
    assert!(server.export().uri().starts_with("nbd://127.0.0.1:"));
    let dm = Dm::start(dir.path(), &overlay);
    let copy = dm.copy(&overlay, 64);
    copy.start().unwrap();
    let (end, seen) = follow(&copy);
    assert_eq!(end, CopyState::Complete, "after {seen:?}");
    if let Some(CopyState::Copying { len, .. }) = seen.last() {
        assert_eq!(*len, 32 * MIB as u64, "the job copies the whole disk");
    }
    // The source goes away; the domain's device model no longer needs it, and has said so by
    // closing its connection.
    assert!(server.running());
    assert_eq!(
        server.clients(),
        0,
        "the device model still reads the export"
    );
    drop(server);
    drop(dm);
    assert!(
        compare(&src, &overlay),
        "the overlay differs from the snapshot"
    );
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(
        info.get("backing-filename").is_none(),
        "the overlay still names a backing file: {info}"
    );
}

#[test]
fn a_source_lost_in_the_middle_fails_the_copy_and_says_so() {
    let (dir, _src, server, overlay) = setup(16);
    let dm = Dm::start(dir.path(), &overlay);
    // 4 MiB/s: the 16 MiB copy takes seconds, the source dies in its first.
    let copy = dm.copy(&overlay, 4);
    copy.start().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.clients(), 1, "the copy reads the export");
    drop(server);
    let (end, _) = follow(&copy);
    match end {
        CopyState::Failed { why } => assert!(!why.is_empty()),
        other => panic!("a copy whose source died ended {other:?}"),
    }
}
