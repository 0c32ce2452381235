//! `xckpt serve`: a command run by the resident service prints, exits and leaves the store as
//! the same command run by its client; the socket is the service user's alone; a client that
//! goes away interrupts its command (the chain unchanged); what the service does not take runs
//! in the client; SIGTERM ends the service and removes its socket.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Service {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/service.sock");
        let log = dir.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_xckpt"))
            .args(["serve", "--socket", socket.to_str().unwrap()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !socket.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Service {
            child,
            socket,
            log,
            _dir: dir,
        }
    }

    /// `xckpt ARGS` with the store's environment cleared, through this service (or not: `off`).
    fn xckpt(&self, args: &[&str], through: bool) -> (i32, String, String) {
        let out = self.command(args, through).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn command(&self, args: &[&str], through: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xckpt"));
        // Another XCKPT_ variable (tools/test-all exports XCKPT_PROFILE) changes nothing.
        c.args(args)
            .env("XCKPT_PROFILE", "ci")
            .env_remove("XCKPT_STORE")
            .env_remove("XCKPT_CONFIG")
            .env_remove("XCKPT_FAILPOINT")
            .env_remove("XCKPT_FAILPOINT_LOG")
            .env(
                "XCKPT_SERVICE",
                if through {
                    self.socket.as_os_str()
                } else {
                    "off".as_ref()
                },
            );
        c
    }

    /// The commands the service ran, from its log.
    fn served(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(" exited "))
            .map(str::to_owned)
            .collect()
    }

    fn wait_served(&self, n: usize) {
        let t0 = Instant::now();
        while self.served().len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{:?}",
                self.served()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_served_command_is_the_command_run_here() {
    let svc = Service::start();
    assert_eq!(mode(&svc.socket), 0o600);
    assert_eq!(mode(svc.socket.parent().unwrap()), 0o700);
    let store = tempfile::tempdir().unwrap();
    let s = store.path().join("store");
    let s = s.to_str().unwrap();

    let (code, out, err) = svc.xckpt(&["checkpoint", "--sim", "16M", "--store", s, "g"], true);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("g: layer 1 (Base)"), "{out}");
    assert_eq!(svc.served().len(), 1, "{:?}", svc.served());
    assert!(svc.served()[0].contains("checkpoint exited 0"));

    // The same output, exit code and one-line errors either way.
    for args in [
        &["list", "--store", s][..],
        &["list", "--store", s, "g"],
        &["verify", "--store", s, "g"],
        &["verify", "--store", s, "nosuch"],
        &["inspect", "--store", s, "g@7"],
        &["list", "--no-such-option"],
    ] {
        let here = svc.xckpt(args, false);
        let served = svc.xckpt(args, true);
        assert_eq!(here, served, "{args:?}");
    }
    assert_eq!(svc.served().len(), 7, "{:?}", svc.served());

    // `--help` and the crash points of the tests run here.
    let (code, out, _) = svc.xckpt(&["list", "--help"], true);
    assert_eq!(code, 0);
    assert!(out.contains("Usage: xckpt list"), "{out}");
    let mut c = svc.command(&["list", "--store", s], true);
    c.env("XCKPT_FAILPOINT_LOG", store.path().join("fp.log"));
    assert!(c.output().unwrap().status.success());
    assert_eq!(svc.served().len(), 7, "{:?}", svc.served());

    // The figures of a served checkpoint count from its client's start.
    let (code, out, err) = svc.xckpt(
        &["checkpoint", "--json", "--sim", "16M", "--store", s, "h"],
        true,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let since = v["since_start_s"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&since), "{since}");
    assert!(v["setup_s"]["command"].as_f64().unwrap() <= since);
}

#[test]
fn a_client_that_goes_away_interrupts_its_command() {
    let svc = Service::start();
    let store = tempfile::tempdir().unwrap();
    let s = store.path().join("store");
    let s = s.to_str().unwrap();
    let mut client = svc
        .command(
            &[
                "--progress",
                "json",
                "checkpoint",
                "--sim",
                "1G",
                "--store",
                s,
                "g",
            ],
            true,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first progress event: the capture runs in the service.
    let mut line = String::new();
    BufReader::new(client.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with('{'), "{line}");
    client.kill().unwrap();
    client.wait().unwrap();
    svc.wait_served(1);
    assert!(
        svc.served()[0].contains("checkpoint exited 1"),
        "{:?}",
        svc.served()
    );
    // No layer: the chain is as it was.
    let (code, out, _) = svc.xckpt(&["list", "--store", s, "g"], false);
    assert_eq!(code, 0);
    assert!(!out.contains("base"), "{out}");
    // The service goes on.
    let (code, _, err) = svc.xckpt(&["checkpoint", "--sim", "16M", "--store", s, "k"], true);
    assert_eq!(code, 0, "{err}");
    svc.wait_served(2);
}

#[test]
fn sigterm_ends_the_service_and_removes_its_socket() {
    let mut svc = Service::start();
    let pid = rustix::process::Pid::from_raw(svc.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = svc.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!svc.socket.exists());
    // With no service, the client runs the command itself.
    let (code, _, err) = svc.xckpt(&["list", "--store", "/nonexistent-store"], true);
    assert_eq!(code, 0, "{err}");
}
