//! A minimal QMP client for the device model libxl starts (`/var/run/xen/qmp-libxl-<domid>`).
//!
//! One connection per command, as libxl does: read the greeting, negotiate capabilities, send
//! the command, and wait for its `return` or `error`, skipping asynchronous events.

use std::io::{BufRead, BufReader, Write};
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
    conn.call("qmp_capabilities", json!({}))?;
    conn.call(command, arguments)
}

struct Conn<'p> {
    path: &'p Path,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn<'_> {
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

    fn call(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|source| QmpError::Io {
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
