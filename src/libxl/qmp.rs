//! A minimal QMP client for the device model libxl starts (`/var/run/xen/qmp-libxl-<domid>`).
//!
//! One connection per command, as libxl does: read the greeting, negotiate capabilities, send
//! the command, and wait for its `return` or `error`, skipping asynchronous events.
//!
//! QEMU's device state goes through a file descriptor passed with the command (`add-fd`, then
//! `xen-save-devices-state` into `/dev/fdset/N`), as libxl 4.17 does: it works when QEMU runs
//! deprivileged (`dm_restrict`) and cannot open a path of ours, and nothing touches the disk.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// How long QEMU may take to answer one command (saving device state is quick; this only
/// bounds a hung device model).
const TIMEOUT: Duration = Duration::from_secs(60);

/// A QMP failure, naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting or talking to the socket failed.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP socket {path}: unexpected reply {reply:?}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What came back.
        reply: String,
    },
    /// QEMU refused the command.
    #[error("QMP socket {path}: {command} failed: {class}: {desc}")]
    Command {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// QMP error class.
        class: String,
        /// QMP error description.
        desc: String,
    },
}

/// The QMP socket libxl creates for `domid` under `dir`.
pub fn socket_path(dir: &Path, domid: u32) -> PathBuf {
    dir.join(format!("qmp-libxl-{domid}"))
}

/// Run one QMP command with `arguments` on the socket at `path` and return its `return` value.
pub fn execute(path: &Path, command: &str, arguments: Value) -> Result<Value, QmpError> {
    Conn::open(path)?.call(command, arguments, None)
}

/// QEMU's device state (`xen-save-devices-state`, not live), written by QEMU into an anonymous
/// memory file whose write end is passed to it over the socket at `path`.
pub fn save_devices_state(path: &Path) -> Result<Vec<u8>, QmpError> {
    let io = |source| QmpError::Io {
        path: path.to_path_buf(),
        source,
    };
    let memfd = rustix::fs::memfd_create("xckpt-qemu-state", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io(e.into()))?;
    // QEMU opens /dev/fdset/N write-only, and only dups an fd of that access mode.
    let write_end = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", memfd.as_raw_fd()))
        .map_err(io)?;
    let mut conn = Conn::open(path)?;
    let added = conn.call("add-fd", json!({}), Some(write_end.as_fd()))?;
    drop(write_end);
    let fdset = added
        .get("fdset-id")
        .and_then(Value::as_u64)
        .ok_or_else(|| conn.protocol(&added))?;
    let saved = conn.call(
        "xen-save-devices-state",
        json!({ "filename": format!("/dev/fdset/{fdset}"), "live": false }),
        None,
    );
    // QEMU also frees the set when this connection closes; say so explicitly all the same.
    let _ = conn.call("remove-fd", json!({ "fdset-id": fdset }), None);
    saved?;
    let mut file = std::fs::File::from(memfd);
    let mut data = Vec::new();
    file.rewind().map_err(io)?;
    file.read_to_end(&mut data).map_err(io)?;
    Ok(data)
}

struct Conn<'p> {
    path: &'p Path,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl<'p> Conn<'p> {
    /// Connect, read the greeting and negotiate capabilities.
    fn open(path: &'p Path) -> Result<Self, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut conn = Conn {
            path,
            reader: BufReader::new(stream.try_clone().map_err(io)?),
            writer: stream,
        };
        let greeting = conn.next_message()?;
        if greeting.get("QMP").is_none() {
            return Err(conn.protocol(&greeting));
        }
        conn.call("qmp_capabilities", json!({}), None)?;
        Ok(conn)
    }

    fn protocol(&self, v: &Value) -> QmpError {
        QmpError::Protocol {
            path: self.path.to_path_buf(),
            reply: v.to_string(),
        }
    }

    fn next_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                path: self.path.to_path_buf(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            path: self.path.to_path_buf(),
            reply: line.trim().to_string(),
        })
    }

    /// Send `command` (with `fd` attached as SCM_RIGHTS, if given) and wait for its reply.
    fn call(
        &mut self,
        command: &str,
        arguments: Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut text = msg.to_string();
        text.push('\n');
        let sent = match fd {
            None => self.writer.write_all(text.as_bytes()),
            Some(fd) => send_with_fd(&self.writer, text.as_bytes(), fd),
        };
        sent.map_err(|source| QmpError::Io {
            path: self.path.to_path_buf(),
            source,
        })?;
        loop {
            let reply = self.next_message()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                return Err(QmpError::Command {
                    path: self.path.to_path_buf(),
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            if reply.get("event").is_none() {
                return Err(self.protocol(&reply));
            }
        }
    }
}

/// Write all of `bytes` on `stream`, the first chunk carrying `fd` as SCM_RIGHTS.
fn send_with_fd(mut stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("SCM_RIGHTS does not fit its buffer"));
    }
    let n = sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    stream.write_all(&bytes[n..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted QMP server: checks each request line and sends the canned replies.
    fn serve(
        listener: UnixListener,
        script: Vec<(&'static str, &'static str)>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            for (expect, reply) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let got: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(got, serde_json::from_str::<Value>(expect).unwrap());
                w.write_all(reply.as_bytes()).unwrap();
            }
        })
    }

    #[test]
    fn command_with_events_and_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), 7);
        let t = serve(
            UnixListener::bind(&path).unwrap(),
            vec![
                (r#"{"execute":"qmp_capabilities"}"#, "{\"return\": {}}\n"),
                (
                    r#"{"execute":"xen-set-global-dirty-log","arguments":{"enable":true}}"#,
                    "{\"event\": \"STOP\"}\n{\"return\": {}}\n",
                ),
            ],
        );
        let r = execute(&path, "xen-set-global-dirty-log", json!({"enable": true})).unwrap();
        assert_eq!(r, json!({}));
        t.join().unwrap();

        let t = serve(
            UnixListener::bind(dir.path().join("b")).unwrap(),
            vec![
                (r#"{"execute":"qmp_capabilities"}"#, "{\"return\": {}}\n"),
                (
                    r#"{"execute":"xen-save-devices-state","arguments":{"filename":"/x","live":false}}"#,
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
                ),
            ],
        );
        let e = execute(
            &dir.path().join("b"),
            "xen-save-devices-state",
            json!({"filename": "/x", "live": false}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, QmpError::Command { class, desc, .. } if class == "GenericError" && desc == "nope")
        );
        t.join().unwrap();
        assert!(matches!(
            execute(&dir.path().join("none"), "x", json!({})),
            Err(QmpError::Io { .. })
        ));
    }
}
