//! The client side of `xckpt serve`: a command handed to the resident service.
//!
//! A new `xckpt` process pays, before any work, for its start, for parsing its command line,
//! for opening Xen and libxl, and for every buffer it touches for the first time: in a PV dom0
//! each fresh page is a trip through the hypervisor. `xckpt serve` pays for them once. When its
//! socket is there, the xl-like verbs ([`SERVED`]) are sent to it with this process's standard
//! input, output and error (`SCM_RIGHTS`), its working directory and the environment the
//! commands read ([`FORWARDED`]); the service runs the command as this process would have and
//! answers with its exit code. Nothing is parsed here: usage errors come back from the service.
//!
//! The command runs here instead, as before, when no service listens, when it is busy with
//! another command, with `XCKPT_SERVICE=off`, for `--help`, `--version` and `--slurm`, and when
//! the environment sets a crash point of the tests ([`RUN_HERE`]). If this process ends while the service runs its command (Ctrl-C),
//! the service interrupts the command as a SIGINT would interrupt it here: a paused domain is
//! unpaused at once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use serde::{Deserialize, Serialize};

/// Where the service listens unless `XCKPT_SERVICE` names another socket.
pub const DEFAULT_SOCKET: &str = "/run/xckpt/service.sock";

/// The verbs the service runs.
pub const SERVED: &[&str] = &[
    "checkpoint",
    "restore",
    "export",
    "import",
    "untrack",
    "list",
    "inspect",
    "verify",
    "merge",
    "prune",
];

/// The environment variables a command reads, handed to the service with it.
pub const FORWARDED: &[&str] = &[
    "XCKPT_STORE",
    "XCKPT_CONFIG",
    "XCKPT_XL",
    "XCKPT_SERVICE",
    "PATH",
    "XENSTORED_PATH",
    "TERM",
    "NO_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "COLUMNS",
];

/// The environment variables that keep a command in its own process: the crash points of the
/// tests, which end the process they fire in.
const RUN_HERE: &[&str] = &[xckpt::failpoint::ENV, xckpt::failpoint::LOG_ENV];

/// Options of the whole command line that take a value (before the verb).
const GLOBAL_WITH_VALUE: &[&str] = &["--config", "--progress"];

/// One command for the service: a JSON line, sent with the client's fds 0, 1 and 2.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The command line, the program's name first.
    pub argv: Vec<String>,
    /// The client's working directory.
    pub cwd: PathBuf,
    /// The client's values of [`FORWARDED`] (those it has).
    pub env: BTreeMap<String, String>,
    /// When the client started, in seconds of `CLOCK_BOOTTIME` (the command's figures count
    /// from there).
    pub started_s: f64,
}

/// The service's answer: one JSON line.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The service runs another command: run this one in the client.
    Busy,
    /// The command ran; the client exits with this code.
    Exit(u8),
}

/// The socket `XCKPT_SERVICE` names (default [`DEFAULT_SOCKET`]), or `None` for `off`.
fn socket() -> Option<PathBuf> {
    match std::env::var_os("XCKPT_SERVICE") {
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
        Some(v) if v.is_empty() || ["off", "0", "no"].contains(&&*v.to_string_lossy()) => None,
        Some(v) => Some(PathBuf::from(v)),
    }
}

/// The verb of `args` (the program's name first) if the service runs it: a verb of
/// [`SERVED`], and no `--help`, `--version` or `--slurm` anywhere.
pub fn served_verb(args: &[String]) -> Option<&str> {
    let mut it = args.iter().skip(1);
    let verb = loop {
        let a = it.next()?;
        if GLOBAL_WITH_VALUE.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            break a.as_str();
        }
    };
    let refused = ["-h", "--help", "-V", "--version", "--slurm", "help"];
    let plain = !args.iter().skip(1).any(|a| refused.contains(&a.as_str()));
    (SERVED.contains(&verb) && plain).then_some(verb)
}

/// The request for this process's command, if the service may run it.
fn request() -> Option<Request> {
    let argv: Vec<String> = std::env::args_os()
        .map(OsString::into_string)
        .collect::<Result<_, _>>()
        .ok()?;
    served_verb(&argv)?;
    let mut env = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let (k, v) = (k.into_string().ok()?, v.into_string().ok());
        if FORWARDED.contains(&k.as_str()) {
            env.insert(k, v?);
        } else if RUN_HERE.contains(&k.as_str()) {
            return None;
        }
    }
    Some(Request {
        argv,
        cwd: std::env::current_dir().ok()?,
        env,
        started_s: super::cputime::process_start_s()?,
    })
}

/// Hand this process's command to the service and return its exit code; `None` to run it in
/// this process (no service, busy, or a command it does not take).
pub fn delegate() -> Option<ExitCode> {
    let socket = socket()?;
    let request = request()?;
    let conn = UnixStream::connect(&socket).ok()?;
    send(&conn, &request).ok()?;
    let mut line = String::new();
    let got = BufReader::new(&conn).read_line(&mut line);
    match got
        .ok()
        .and_then(|_| serde_json::from_str::<Reply>(&line).ok())
    {
        Some(Reply::Busy) => None,
        Some(Reply::Exit(code)) => Some(ExitCode::from(code)),
        None => {
            eprintln!(
                "xckpt: the xckpt service at {} ended before the command did: see its log \
                 (journalctl -u xckpt), then run the command again (XCKPT_SERVICE=off runs it \
                 without the service)",
                socket.display()
            );
            Some(ExitCode::from(1))
        }
    }
}

/// Send `request` as one JSON line with fds 0, 1 and 2.
fn send(conn: &UnixStream, request: &Request) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let fds = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        conn,
        &[IoSlice::new(&line)],
        &mut control,
        SendFlags::empty(),
    )?;
    (&*conn).write_all(&line[sent..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_plain_xl_like_verbs_are_served() {
        assert_eq!(
            served_verb(&v(&["xckpt", "checkpoint", "g"])),
            Some("checkpoint")
        );
        assert_eq!(
            served_verb(&v(&["xckpt", "--config", "/x", "-q", "restore", "g@2"])),
            Some("restore")
        );
        assert_eq!(
            served_verb(&v(&["xckpt", "--progress", "json", "list"])),
            Some("list")
        );
        for refused in [
            &["xckpt", "bench", "--sim"][..],
            &["xckpt", "serve"],
            &["xckpt", "__watchdog", "3"],
            &["xckpt", "checkpoint", "--help"],
            &["xckpt", "--version"],
            &["xckpt", "checkpoint", "--group", "j", "--slurm", "a"],
            &["xckpt", "help", "checkpoint"],
            &["xckpt"],
        ] {
            assert_eq!(served_verb(&v(refused)), None, "{refused:?}");
        }
    }

    #[test]
    fn replies_are_one_json_line() {
        assert_eq!(
            serde_json::to_string(&Reply::Exit(3)).unwrap(),
            r#"{"exit":3}"#
        );
        assert_eq!(serde_json::to_string(&Reply::Busy).unwrap(), r#""busy""#);
        assert_eq!(
            serde_json::from_str::<Reply>(r#"{"exit":0}"#).unwrap(),
            Reply::Exit(0)
        );
    }
}
