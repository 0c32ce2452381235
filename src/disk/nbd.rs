//! Disks that follow a domain to another host (docs/design-group.md "Storage"), the seeds'
//! way:
//!
//! ```text
//! source host   Server: stock `qemu-nbd --read-only` serves the snapshot as one export
//! target host   create_overlay: a local qcow2 whose backing file is the export, so the
//!               guest's reads of blocks not copied yet are fetched on demand
//!               DiskCopy::start: QMP `block-stream` in the domain's device model copies
//!               every block into the overlay and then drops the backing link
//!               DiskCopy::progress: `query-block-jobs`, then `query-block` once the job is
//!               gone: complete only when the overlay has no backing file left
//! ```
//!
//! Once the copy is complete the domain no longer reads the source, which may then stop.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::command::run;
use super::qcow2::query_device;
use crate::libxl::qmp;

/// One NBD export of a disk snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// The host serving it, as the other hosts reach it.
    pub host: String,
    /// Its TCP port.
    pub port: u16,
    /// The export name.
    pub name: String,
}

impl Export {
    /// The export as QEMU names a backing file: `nbd://HOST:PORT/NAME`.
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host) // An IPv6 address.
        } else {
            self.host.clone()
        };
        format!("nbd://{host}:{}/{}", self.port, self.name)
    }
}

/// A `qemu-nbd` serving one snapshot read-only, until dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    export: Export,
    path: String,
}

impl Server {
    /// Serve the image at `path` (of `format`: the guest sees its contents, whatever the
    /// format) as export `name`, listening on `bind` and announced as `advertise`. Returns once
    /// the export takes connections; `limit` bounds the wait.
    pub fn start(
        path: &str,
        format: &str,
        bind: &str,
        advertise: &str,
        name: &str,
        limit: Duration,
    ) -> Result<Server, String> {
        let port = free_port(bind)?;
        let mut cmd = Command::new("qemu-nbd");
        cmd.args(["--read-only", "--persistent", "--shared=16"])
            .args(["--bind", bind, "--port", &port.to_string()])
            .args(["--export-name", name, "--format", format, path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run qemu-nbd (install qemu-utils): {e}"))?;
        let mut server = Server {
            child,
            export: Export {
                host: advertise.to_string(),
                port,
                name: name.to_string(),
            },
            path: path.to_string(),
        };
        server.wait_listening(bind, limit)?;
        Ok(server)
    }

    fn wait_listening(&mut self, bind: &str, limit: Duration) -> Result<(), String> {
        let until = Instant::now() + limit;
        let addr = (bind, self.export.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve {bind}"))?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                return Err(format!(
                    "qemu-nbd serving {} exited ({status}): {first}",
                    self.path
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "qemu-nbd serving {} did not listen on {bind}:{} within {} s",
                    self.path,
                    self.export.port,
                    limit.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it serves.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many clients are connected to it now (a copy that still reads the snapshot keeps
    /// its connection until its overlay no longer has the export as backing file).
    pub fn clients(&self) -> usize {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| established_on(&t, self.export.port))
            .sum()
    }
}

/// The connections in `/proc/net/tcp{,6}` text that are established on local port `port`.
fn established_on(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && f.get(3) == Some(&"01")
        })
        .count()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on `bind` now (the kernel's choice; `qemu-nbd` takes it a moment later).
fn free_port(bind: &str) -> Result<u16, String> {
    TcpListener::bind((bind, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on {bind}: {e}"))
}

/// Create the local qcow2 overlay at `path` whose backing file is `export` (raw: the export is
/// the guest's view of the disk). `qemu-img` reads the export's size, so the source must serve.
pub fn create_overlay(export: &Export, path: &Path, limit: Duration) -> Result<(), String> {
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(export.uri())
        .arg(path);
    run(c, limit).map(drop)
}

/// Where a copy stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum CopyState {
    /// Blocks are being copied: `done` of `len` bytes.
    Copying {
        /// Bytes copied.
        done: u64,
        /// Bytes in all.
        len: u64,
    },
    /// Every block is local; the overlay has no backing file.
    Complete,
    /// The job ended with the overlay still backed by the source.
    Failed {
        /// Why.
        why: String,
    },
}

/// The background copy of one overlay's blocks, run by the device model of the domain that
/// uses it.
#[derive(Debug, Clone)]
pub struct DiskCopy {
    /// The device model's QMP socket.
    pub qmp: PathBuf,
    /// The overlay the domain writes to.
    pub overlay: String,
    /// The block job's id.
    pub job: String,
    /// A bound on the copy's rate in bytes per second (None: as fast as it goes).
    pub rate: Option<u64>,
}

impl DiskCopy {
    fn device(&self) -> Result<(String, Value), String> {
        query_device(&self.qmp, &self.overlay).map(|((device, _), blocks)| (device, blocks))
    }

    /// Start copying: `block-stream` of the overlay's whole backing chain into it.
    pub fn start(&self) -> Result<(), String> {
        let (device, _) = self.device()?;
        let mut args = json!({ "job-id": self.job, "device": device });
        if let Some(r) = self.rate {
            args["speed"] = json!(r);
        }
        qmp::execute(&self.qmp, "block-stream", args)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Where the copy stands.
    pub fn progress(&self) -> Result<CopyState, String> {
        let jobs =
            qmp::execute(&self.qmp, "query-block-jobs", json!({})).map_err(|e| e.to_string())?;
        let job = jobs.as_array().into_iter().flatten().find(|j| {
            j.get("device").and_then(Value::as_str) == Some(self.job.as_str())
                || j.get("id").and_then(Value::as_str) == Some(self.job.as_str())
        });
        if let Some(j) = job {
            let n = |k: &str| j.get(k).and_then(Value::as_u64).unwrap_or(0);
            return Ok(match j.get("error").and_then(Value::as_str) {
                Some(e) => CopyState::Failed { why: e.to_string() },
                None => CopyState::Copying {
                    done: n("offset"),
                    len: n("len"),
                },
            });
        }
        // The job is gone: it completed only if the overlay stands alone now.
        let (_, blocks) = self.device()?;
        if backed(&blocks, &self.overlay) {
            return Ok(CopyState::Failed {
                why: format!(
                    "the copy job ended but {} still reads from its source",
                    self.overlay
                ),
            });
        }
        // The copied blocks' metadata may still sit in QEMU's qcow2 caches: flush it, so that
        // the overlay holds the whole disk on its own even if this host crashes once the
        // source is gone.
        let node = node_name(&blocks, &self.overlay)
            .ok_or_else(|| format!("{}: no node name in query-block", self.overlay))?;
        self.flush(&node)?;
        Ok(CopyState::Complete)
    }

    /// Flush the overlay's node (QMP has no flush command; HMP's `qemu-io` has one, and
    /// takes a node name where it finds no drive of that name).
    fn flush(&self, node: &str) -> Result<(), String> {
        let line = format!("qemu-io {node} \"flush\"");
        let out = qmp::execute(
            &self.qmp,
            "human-monitor-command",
            json!({ "command-line": line }),
        )
        .map_err(|e| e.to_string())?;
        match out.as_str().map(str::trim) {
            Some("") | None => Ok(()),
            Some(said) => Err(format!("flushing {}: {said}", self.overlay)),
        }
    }
}

/// The node name of the image `path` in `query-block` output.
fn node_name(blocks: &Value, path: &str) -> Option<String> {
    blocks.as_array()?.iter().find_map(|b| {
        let i = b.get("inserted")?;
        (i.get("file").and_then(Value::as_str) == Some(path))
            .then(|| i.get("node-name").and_then(Value::as_str))
            .flatten()
            .map(str::to_string)
    })
}

/// Whether the image `path` in `query-block` output still has a backing image.
fn backed(blocks: &Value, path: &str) -> bool {
    blocks.as_array().into_iter().flatten().any(|b| {
        let image = b.get("inserted").and_then(|i| i.get("image"));
        image
            .and_then(|i| i.get("filename"))
            .and_then(Value::as_str)
            == Some(path)
            && image.is_some_and(|i| i.get("backing-image").is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_names_itself_as_qemu_opens_it() {
        let e = Export {
            host: "xhost1".into(),
            port: 10809,
            name: "hping-xvda".into(),
        };
        assert_eq!(e.uri(), "nbd://xhost1:10809/hping-xvda");
        let e = Export {
            host: "fd00::1".into(),
            ..e
        };
        assert_eq!(e.uri(), "nbd://[fd00::1]:10809/hping-xvda");
    }

    #[test]
    fn counts_the_established_connections_on_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue
   0: 00000000:2A39 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:2A39 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0
   2: 0100007F:9C40 0100007F:2A39 01 00000000:00000000 00:00000000 00000000     0
   3: 0100007F:2A39 0100007F:9C41 06 00000000:00000000 00:00000000 00000000     0
";
        // 0x2A39 = 10809: the listener (0A) and a closing one (06) are not clients.
        assert_eq!(established_on(table, 10809), 1);
        assert_eq!(established_on(table, 80), 0);
    }

    #[test]
    fn an_overlay_with_a_backing_image_is_not_complete() {
        let blocks = json!([
            { "device": "", "inserted": { "node-name": "n1", "file": "/l/a.qcow2",
              "image": { "filename": "/l/a.qcow2",
                         "backing-image": { "filename": "nbd://h:1/a" } } } },
            { "device": "", "inserted": { "node-name": "n2", "file": "/l/b.qcow2",
              "image": { "filename": "/l/b.qcow2" } } }
        ]);
        assert!(backed(&blocks, "/l/a.qcow2"));
        assert!(!backed(&blocks, "/l/b.qcow2"));
        assert_eq!(node_name(&blocks, "/l/b.qcow2").as_deref(), Some("n2"));
    }

    #[test]
    fn copy_states_read_back_from_json() {
        for s in [
            CopyState::Copying { done: 5, len: 9 },
            CopyState::Complete,
            CopyState::Failed { why: "x".into() },
        ] {
            let j = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<CopyState>(&j).unwrap(), s, "{j}");
        }
        assert_eq!(
            serde_json::to_string(&CopyState::Complete).unwrap(),
            r#"{"state":"complete"}"#
        );
    }
}
