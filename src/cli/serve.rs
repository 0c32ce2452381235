//! `xckpt serve`: the resident service that runs the xl-like verbs for `xckpt` clients
//! ([`super::service`]), so that each command does not pay again for a new process: its start,
//! its command line's parser, Xen's and libxl's libraries, and the fresh memory of its
//! buffers.
//!
//! One command runs at a time, in this process's main thread, exactly as it would in the
//! client: its fds 0-2 are the client's (received with `SCM_RIGHTS`), its working directory and
//! environment ([`super::service::FORWARDED`]) the client's, its figures counted from the
//! client's start. A client that connects meanwhile is told the service is busy and runs its
//! command itself. Freed memory stays with the process for the next command: glibc's malloc is
//! told not to give it back (`GLIBC_TUNABLES`, set by re-executing the service once), so the
//! service keeps about as much memory as its largest command used.
//!
//! The guarantees of a command run here are those of a command run by its client: every
//! pause has the same pause watchdog, a process of its own; a client that goes away (Ctrl-C)
//! interrupts its command as a SIGINT would ([`xckpt::hv::pause::interrupt`]); SIGTERM or SIGINT
//! interrupts the running command the same way and ends the service once it has returned. Only
//! the service's own user may connect (the socket is 0600 in a 0700 directory, and the peer's
//! uid is checked).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IoSliceMut, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use xckpt::hv::pause;

use super::service::{self, Reply, Request, FORWARDED};

/// A line of the service's own log (its stderr, the journal under systemd).
macro_rules! log {
    ($($arg:tt)*) => {
        say(format_args!("xckpt serve: {}", format_args!($($arg)*)))
    };
}

/// glibc's malloc keeps freed memory (up to 32 MiB a block from its heaps, and no trimming).
const TUNABLES: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1099511627776";

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `xckpt serve`.
#[derive(Debug, Args)]
pub struct ServeCmd {
    /// The socket to listen on (its directory is created 0700).
    #[arg(long, default_value = service::DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// A command received: the request, its connection, and the client's fds 0-2.
struct Job {
    conn: UnixStream,
    request: Request,
    fds: [OwnedFd; 3],
}

impl ServeCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        keep_freed_memory()?;
        let listener = listen(&self.socket)?;
        pause::install_handlers()?;
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())
                .context("cannot handle SIGTERM/SIGINT")?;
        }
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<Job>(0);
        {
            let (busy, stop) = (busy.clone(), stop.clone());
            std::thread::Builder::new()
                .name("xckpt-accept".into())
                .spawn(move || accept_loop(listener, tx, &busy, &stop))
                .context("cannot start the service's accepting thread")?;
        }
        log!(
            "listening on {} (pid {})",
            self.socket.display(),
            std::process::id()
        );
        while !stop.load(Ordering::SeqCst) {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => {
                    run_job(job);
                    busy.store(false, Ordering::SeqCst);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        log!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

/// Set (to the caller's `GLIBC_TUNABLES`, possibly empty) in the re-executed service.
const REEXECUTED: &str = "XCKPT_SERVE_GLIBC_TUNABLES";

/// Re-execute this process once with [`TUNABLES`] in `GLIBC_TUNABLES`, read by glibc as the
/// process starts; the re-executed process puts the caller's value back, so that the processes
/// its commands start (`xl restore` among them) run with the caller's malloc.
fn keep_freed_memory() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some(caller) = std::env::var_os(REEXECUTED) {
        // Still one thread: nothing reads the environment meanwhile.
        if caller.is_empty() {
            std::env::remove_var("GLIBC_TUNABLES");
        } else {
            std::env::set_var("GLIBC_TUNABLES", caller);
        }
        std::env::remove_var(REEXECUTED);
        return Ok(());
    }
    let caller = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let tunables = match caller.as_str() {
        "" => TUNABLES.to_string(),
        other => format!("{other}:{TUNABLES}"),
    };
    let exe = std::env::current_exe().context("xckpt serve: cannot find its own binary")?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = std::process::Command::new(&exe)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(REEXECUTED, caller)
        .exec();
    Err(err).with_context(|| format!("xckpt serve: cannot re-execute {}", exe.display()))
}

/// Bind `socket` (0600) in its directory (created 0700), replacing a socket no service
/// listens on any more.
fn listen(socket: &Path) -> anyhow::Result<UnixListener> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("xckpt serve: cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("xckpt serve: cannot make {} 0700", dir.display()))?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            bail!(
                "xckpt serve: another service listens on {}; stop it first (systemctl stop xckpt)",
                socket.display()
            );
        }
        std::fs::remove_file(socket).with_context(|| {
            format!("xckpt serve: cannot remove the stale {}", socket.display())
        })?;
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("xckpt serve: cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("xckpt serve: cannot make {} 0600", socket.display()))?;
    Ok(listener)
}

/// Take each connection's request and hand it to the main thread, or answer busy.
fn accept_loop(
    listener: UnixListener,
    tx: mpsc::SyncSender<Job>,
    busy: &AtomicBool,
    stop: &AtomicBool,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let job = match receive(conn) {
            Ok(job) => job,
            Err(e) => {
                log!("a request refused: {e:#}");
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) || busy.swap(true, Ordering::SeqCst) {
            let _ = answer(&job.conn, &Reply::Busy);
            continue;
        }
        if tx.send(job).is_err() {
            return;
        }
    }
}

/// Read one request from `conn`: the peer must be this process's user, the request one JSON
/// line arriving with three fds.
fn receive(conn: UnixStream) -> anyhow::Result<Job> {
    let peer = rustix::net::sockopt::socket_peercred(&conn).context("no peer credentials")?;
    let me = rustix::process::geteuid();
    if peer.uid != me {
        bail!(
            "uid {} is not the service's ({})",
            peer.uid.as_raw(),
            me.as_raw()
        );
    }
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut first = vec![0u8; 64 * 1024];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut first)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    first.truncate(got.bytes);
    if !first.ends_with(b"\n") {
        BufReader::new(&conn).read_until(b'\n', &mut first)?;
    }
    let request: Request = serde_json::from_slice(&first).context("not a request")?;
    let fds: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|v: Vec<OwnedFd>| anyhow::anyhow!("{} fds instead of 3", v.len()))?;
    if service::served_verb(&request.argv).is_none() {
        bail!("not a verb the service runs: {:?}", request.argv);
    }
    conn.set_read_timeout(None)?;
    Ok(Job { conn, request, fds })
}

fn answer(conn: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    (&*conn).write_all(&line)
}

/// Run one command as its client would have, and answer with its exit code.
fn run_job(job: Job) {
    let started = Instant::now();
    let verb = service::served_verb(&job.request.argv)
        .unwrap_or("?")
        .to_string();
    let code = match Redirected::to(&job) {
        Ok(redirected) => {
            let done = Arc::new(AtomicBool::new(false));
            let watcher = watch_client(&job.conn, done.clone());
            let code = run_command(&job.request);
            done.store(true, Ordering::SeqCst);
            drop(redirected);
            // Wakes the watcher's read at once (it returns 0, and `done` says it is no loss).
            let _ = job.conn.shutdown(std::net::Shutdown::Read);
            if let Some(w) = watcher {
                let _ = w.join();
            }
            code
        }
        Err(e) => {
            let line = format!(
                "xckpt: the xckpt service cannot take over the command's files or directory \
                 ({e}); run it without the service: XCKPT_SERVICE=off\n"
            );
            let _ = rustix::io::write(&job.fds[2], line.as_bytes());
            log!("{verb}: cannot take over the client's fds or directory: {e}");
            1
        }
    };
    log!(
        "{verb} exited {code} in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let _ = answer(&job.conn, &Reply::Exit(code));
}

/// Parse and run the request's command line; its error, as the binary prints it, on its
/// (the client's) stderr.
fn run_command(request: &Request) -> u8 {
    pause::reset_interrupted();
    super::cputime::begin_command(request.started_s);
    let args: Vec<OsString> = request.argv.iter().map(OsString::from).collect();
    let run = std::panic::catch_unwind(|| super::run_args(args));
    let code = match run {
        Ok(Ok(code)) => exit_code_number(code),
        Ok(Err(e)) => {
            say(format_args!("xckpt: {}", super::error_line(&e)));
            1
        }
        Err(_) => {
            say(format_args!(
                "xckpt: internal error (a panic in the xckpt service); see its log"
            ));
            101
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    code
}

/// A line on stderr that cannot panic: not `eprintln!`, which panics where stderr is gone (the
/// client's, or the service's own log).
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The number behind an [`ExitCode`] (it has no getter).
fn exit_code_number(code: ExitCode) -> u8 {
    (0..=255u8)
        .find(|&n| ExitCode::from(n) == code)
        .unwrap_or(1)
}

/// This process's fds 0-2, working directory and forwarded environment, the client's while
/// it lives; the service's own again when dropped.
struct Redirected {
    saved: [OwnedFd; 3],
    env: BTreeMap<&'static str, Option<OsString>>,
}

impl Redirected {
    fn to(job: &Job) -> std::io::Result<Self> {
        let saved = [
            rustix::io::dup(std::io::stdin())?,
            rustix::io::dup(std::io::stdout())?,
            rustix::io::dup(std::io::stderr())?,
        ];
        let env = FORWARDED
            .iter()
            .map(|&k| (k, std::env::var_os(k)))
            .collect();
        let r = Redirected { saved, env };
        let _ = std::io::stdout().flush();
        rustix::stdio::dup2_stdin(&job.fds[0])?;
        rustix::stdio::dup2_stdout(&job.fds[1])?;
        rustix::stdio::dup2_stderr(&job.fds[2])?;
        std::env::set_current_dir(&job.request.cwd)?;
        set_forwarded(|k| job.request.env.get(k).map(OsString::from));
        Ok(r)
    }
}

impl Drop for Redirected {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        let _ = rustix::stdio::dup2_stdin(&self.saved[0]);
        let _ = rustix::stdio::dup2_stdout(&self.saved[1]);
        let _ = rustix::stdio::dup2_stderr(&self.saved[2]);
        let _ = std::env::set_current_dir("/");
        set_forwarded(|k| self.env.get(k).cloned().flatten());
    }
}

/// Set each variable of [`FORWARDED`] to `value(name)`, or remove it. Only the main thread
/// runs commands, and none runs while the environment changes.
fn set_forwarded(value: impl Fn(&str) -> Option<OsString>) {
    for &k in FORWARDED {
        match value(k) {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}

/// A thread that interrupts the command when its client goes away before `done`.
fn watch_client(conn: &UnixStream, done: Arc<AtomicBool>) -> Option<std::thread::JoinHandle<()>> {
    let mut conn = conn.try_clone().ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(250)))
        .ok()?;
    std::thread::Builder::new()
        .name("xckpt-client".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            while !done.load(Ordering::SeqCst) {
                let gone = match conn.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                };
                if gone {
                    if !done.load(Ordering::SeqCst) {
                        pause::interrupt("the client of the xckpt service went away");
                    }
                    return;
                }
            }
        })
        .ok()
}
