//! The `xl` commands a restore runs: `restore` (fed through a pipe sized for throughput),
//! `destroy` and `unpause`.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use super::memory::{pipe_drained, XenMemory};
use super::{RestoreError, WriteStream};
use crate::hv::Pfn;
use crate::stream::{GuestFill, StreamStats};
use crate::usage::PhaseClock;
use xen_sys::{ForeignMemory, XenCtrl};

/// What a restore needs of `xl`. [`Xl`] runs the real command; tests put a consumer that
/// parses the stream in its place.
pub trait XlTool: Sync {
    /// Run `xl restore` (with `-p` if `paused`) on the stream `write` produces. Ok once the
    /// domain exists; if `write` fails, `xl restore` gets a cut stream and makes no domain,
    /// and the write's error is returned.
    fn restore(
        &self,
        paused: bool,
        what: &str,
        write: &mut WriteStream<'_>,
    ) -> Result<StreamStats, RestoreError>;

    /// Destroy domain `name` (undo of a restore), best effort.
    fn destroy(&self, name: &str);

    /// Unpause the domains `names`, all at once.
    fn unpause(&self, names: &[String]) -> Result<(), RestoreError>;
}

/// The real `xl`.
#[derive(Debug, Clone)]
pub struct Xl {
    /// The command (`xl`, or a path).
    pub command: String,
}

/// The pipe into `xl restore`: large, so that decoding and `xl restore` run in bursts of a few
/// MiB rather than in 64 KiB steps (on a one-vCPU dom0, each step is a context switch).
const PIPE_BYTES: usize = 8 << 20;

impl Xl {
    /// `xl` as a command: from `PATH`, else the loaded Xen release's tools directory.
    fn command(&self) -> Command {
        Command::new(crate::libxl::xl::resolve(std::path::Path::new(
            &self.command,
        )))
    }
}

impl XlTool for Xl {
    fn restore(
        &self,
        paused: bool,
        what: &str,
        write: &mut WriteStream<'_>,
    ) -> Result<StreamStats, RestoreError> {
        use std::io::Write;
        let clock = PhaseClock::start();
        let mut cmd = self.command();
        cmd.arg("restore");
        if paused {
            cmd.arg("-p");
        }
        // /proc/self/fd/0 rather than /dev/stdin: minimal dom0s have no /dev/stdin link.
        cmd.arg("/proc/self/fd/0").stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| RestoreError::Spawn {
            xl: self.command.clone(),
            source,
        })?;
        let mut stdin = child.stdin.take().ok_or_else(|| RestoreError::Spawn {
            xl: self.command.clone(),
            source: std::io::Error::other("xl restore has no stdin"),
        })?;
        size_pipe(&stdin);
        // The fill needs the Xen foreign-memory device and a second handle on the pipe; without
        // either the pages go through the stream, as into a file.
        let fm = ForeignMemory::open().ok();
        let xc = XenCtrl::open().ok();
        let pipe = stdin.as_fd().try_clone_to_owned().ok();
        let spawn = clock.read();
        let written = match (fm.as_ref(), pipe) {
            (Some(fm), Some(pipe)) => {
                let mut fill = XlFill {
                    pipe,
                    child: &mut child,
                    memory: XenMemory::new(fm, xc.as_ref()),
                };
                write(&mut stdin, Some(&mut fill))
            }
            _ => write(&mut stdin, None),
        };
        let flushed = stdin.flush();
        // Closing the pipe ends the stream: cut short if writing failed, so xl restore fails.
        // (The fill's copy of the write end was closed with it, above.)
        drop(stdin);
        let clock = PhaseClock::start();
        let status = child.wait().map_err(|source| RestoreError::Wait {
            verb: "restore",
            what: what.to_string(),
            source,
        })?;
        let mut stats = written.map_err(|source| RestoreError::Stream {
            what: what.to_string(),
            source: Box::new(source),
        })?;
        flushed.map_err(|e| RestoreError::Stream {
            what: what.to_string(),
            source: Box::new(e.into()),
        })?;
        if !status.success() {
            return Err(RestoreError::XlFailed {
                what: what.to_string(),
                status: status.to_string(),
            });
        }
        (stats.timings.xl_finish_ms, stats.timings.usage.finish) = clock.read();
        (stats.timings.spawn_ms, stats.timings.usage.spawn) = spawn;
        Ok(stats)
    }

    fn destroy(&self, name: &str) {
        let _ = self.command().args(["destroy", name]).status();
    }

    fn unpause(&self, names: &[String]) -> Result<(), RestoreError> {
        let started: Vec<_> = names
            .iter()
            .map(|n| self.command().args(["unpause", n]).spawn())
            .collect();
        let mut first_err = None;
        for (name, c) in names.iter().zip(started) {
            let status = c.and_then(|mut c| c.wait());
            let failed = match status {
                Ok(s) if s.success() => None,
                Ok(s) => Some(s.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let (Some(status), None) = (failed, &first_err) {
                first_err = Some(RestoreError::Unpause {
                    name: name.clone(),
                    status,
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The memory of the domain a real `xl restore` builds: `pipe` is a copy of the stream's write
/// end (to see what is unread), `child` the `xl restore`.
struct XlFill<'a> {
    pipe: OwnedFd,
    child: &'a mut Child,
    memory: XenMemory<'a>,
}

impl GuestFill for XlFill<'_> {
    fn drained(&mut self) -> std::io::Result<()> {
        let XlFill { pipe, child, .. } = self;
        pipe_drained(pipe, || Ok(child.try_wait()?.is_some()))
    }

    fn populates(&self) -> bool {
        self.memory.populates()
    }

    fn begin(
        &mut self,
        name: &str,
        pfns: &[Pfn],
        regions: &[Pfn],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.memory.begin(name, pfns, regions)
    }

    fn write(
        &mut self,
        batch: &[(Pfn, Option<&[u8]>)],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.memory.write(batch)
    }
}

/// Grow the pipe to [`PIPE_BYTES`], or as far as the system allows (`pipe-max-size` for a
/// process without CAP_SYS_RESOURCE); a pipe that cannot grow keeps working as it is.
pub fn size_pipe(pipe: &impl std::os::fd::AsFd) {
    if rustix::pipe::fcntl_setpipe_size(pipe, PIPE_BYTES).is_ok() {
        return;
    }
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    if let Some(max) = max {
        let _ = rustix::pipe::fcntl_setpipe_size(pipe, max.min(PIPE_BYTES));
    }
}
