//! The rendezvous's wire protocol: one JSON message per line over TCP, each line bounded.
//!
//! See [`super::rendezvous`] for who sends what when.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::coordinator::{PauseWindow, Phase};
use super::manifest::GroupMember;

/// The longest protocol line accepted.
const MAX_LINE: usize = 1 << 20;

/// What a host says when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The job.
    pub job: String,
    /// The group.
    pub group: String,
    /// The host's slot.
    pub slot: u32,
    /// The host's name.
    pub host: String,
    /// The group's domains found on this host (a checkpoint; empty for a restore).
    pub domains: Vec<String>,
}

/// A message of the protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub(super) enum Msg {
    Hello(Hello),
    Welcome {
        id: u64,
        clock_us: u64,
        assign: Vec<String>,
    },
    Refuse {
        why: String,
    },
    Arrive {
        phase: Phase,
        ok: bool,
        why: Option<String>,
        pause: Option<PauseWindow>,
        members: Vec<GroupMember>,
    },
    Pass {
        phase: Phase,
        ok: bool,
        why: Option<String>,
        instant_unix_ms: Option<u64>,
        skew_us: Option<u64>,
    },
}

pub(super) fn send(stream: &mut TcpStream, msg: &Msg) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Read one message, waiting until `deadline` (None: as long as it takes).
pub(super) fn recv(
    reader: &mut BufReader<TcpStream>,
    deadline: Option<Instant>,
) -> Result<Msg, String> {
    let mut buf = Vec::new();
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer before the deadline".into());
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
        }
        let limit = (MAX_LINE - buf.len()) as u64;
        match std::io::Read::take(&mut *reader, limit).read_until(b'\n', &mut buf) {
            Ok(0) if buf.len() >= MAX_LINE => return Err("a line over 1 MiB".into()),
            Ok(0) => return Err("the connection closed".into()),
            Ok(_) if buf.ends_with(b"\n") => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    serde_json::from_slice(&buf).map_err(|e| format!("a malformed message: {e}"))
}
