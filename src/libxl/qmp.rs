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
/// memory file whose write end is passed to it over the socket at `path`: a
/// [`DeviceStateSession`] opened and used at once.
pub fn save_devices_state(path: &Path) -> Result<Vec<u8>, QmpError> {
    DeviceStateSession::open(path)?.save()
}

/// QEMU's device state in two steps, so that a checkpoint's pause holds only the second:
/// [`DeviceStateSession::open`] connects, negotiates capabilities and passes the write end of
/// an anonymous memory file (`add-fd`) while the guest still runs; [`DeviceStateSession::save`]
/// asks for the state into that file and reads it back. Under the test bed's TCG the first step
/// is most of the 64-78 ms an HVM guest's state took inside the pause (docs/benchmarks.md).
///
/// The session holds the monitor's connection, which QEMU serves one client at a time, from
/// `open` until it is dropped; the drop removes the file descriptor set (QEMU would free it on
/// the disconnect anyway).
pub struct DeviceStateSession {
    conn: Conn,
    memfd: std::os::fd::OwnedFd,
    fdset: u64,
    saved: bool,
}

impl DeviceStateSession {
    /// Connect to the socket at `path` and hand QEMU the memory file the state will go into.
    pub fn open(path: &Path) -> Result<Self, QmpError> {
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
        let fdset = added
            .get("fdset-id")
            .and_then(Value::as_u64)
            .ok_or_else(|| conn.protocol(&added))?;
        Ok(DeviceStateSession {
            conn,
            memfd,
            fdset,
            saved: false,
        })
    }

    /// Save the device state into the session's file and read it back. A session saves at
    /// most once: a second call fails.
    pub fn save(&mut self) -> Result<Vec<u8>, QmpError> {
        if self.saved {
            return Err(QmpError::Protocol {
                path: self.conn.path.clone(),
                reply: "this session already saved the device state".into(),
            });
        }
        self.saved = true;
        self.conn.call(
            "xen-save-devices-state",
            json!({ "filename": format!("/dev/fdset/{}", self.fdset), "live": false }),
            None,
        )?;
        let read = |fd: std::os::fd::OwnedFd| {
            let mut file = std::fs::File::from(fd);
            let mut data = Vec::new();
            file.rewind()?;
            file.read_to_end(&mut data)?;
            Ok(data)
        };
        self.memfd
            .try_clone()
            .and_then(read)
            .map_err(|source| QmpError::Io {
                path: self.conn.path.clone(),
                source,
            })
    }
}

impl Drop for DeviceStateSession {
    fn drop(&mut self) {
        let _ = self
            .conn
            .call("remove-fd", json!({ "fdset-id": self.fdset }), None);
    }
}

struct Conn {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    /// Connect, read the greeting and negotiate capabilities.
    fn open(path: &Path) -> Result<Self, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut conn = Conn {
            path: path.to_path_buf(),
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
            path: self.path.clone(),
            reply: v.to_string(),
        }
    }

    fn next_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                path: self.path.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
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
            path: self.path.clone(),
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
                    path: self.path.clone(),
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
