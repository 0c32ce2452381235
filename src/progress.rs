//! Progress of long work (a capture's rounds, a fold, a deep verify, a stream, an import),
//! reported as plain events to one observer per process.
//!
//! Library code calls [`emit`] at a few points; until an observer is installed with
//! [`set_observer`] nothing happens beyond one atomic load. The `xckpt` command installs one
//! that draws on a terminal or prints JSON lines. The observer is process-wide, like a logger:
//! a group checkpoint's members run on their own threads and name themselves in each event
//! (`subject`), so no handle has to be threaded through every signature.
//!
//! Events never carry a guessed total: `total` is `None` unless the count of work is known
//! before it starts, and [`Event::Finish`] gives the true count done.

use std::sync::OnceLock;
use std::time::Duration;

/// What a task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Guest pages (4 KiB) or pfns.
    Pages,
    /// Bytes.
    Bytes,
}

/// A unit of long work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "task", content = "n")]
pub enum Task {
    /// Live pre-copy round N of a capture (pages sent).
    Round(u32),
    /// A capture's write-behind: the pages held during the stop, written after the resume.
    WriteBehind,
    /// Folding layers into one file (merge, prune, compaction): pages written.
    Fold,
    /// Composing point N of a chain and checking every page digest (`verify --deep`): pfns.
    Verify(u64),
    /// Writing a save stream (restore, export): pfns walked.
    Stream,
    /// Reading a save file (import): bytes.
    Import,
}

impl Task {
    /// What the task counts.
    pub fn unit(self) -> Unit {
        match self {
            Task::Import => Unit::Bytes,
            _ => Unit::Pages,
        }
    }
}

/// One progress event. `subject` names the domain or chain (empty when the caller does not
/// know it: the one stream of a `restore` or `export`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// A task starts; `total` is its size when known in advance.
    Start {
        /// Domain or chain.
        subject: &'a str,
        /// The task.
        task: Task,
        /// Units to do, if known.
        total: Option<u64>,
    },
    /// `delta` more units of a task are done.
    Advance {
        /// Domain or chain.
        subject: &'a str,
        /// The task.
        task: Task,
        /// Units done since the last event.
        delta: u64,
    },
    /// A task ended; `done` is the true count.
    Finish {
        /// Domain or chain.
        subject: &'a str,
        /// The task.
        task: Task,
        /// Units done in all.
        done: u64,
    },
    /// A pre-copy round ended: `dirty` pages were found dirty behind it, at `rate` pages/s.
    Dirty {
        /// Domain.
        subject: &'a str,
        /// The round.
        round: u32,
        /// Pages dirty for the next round.
        dirty: u64,
        /// Dirty pages per second during the round.
        rate: f64,
    },
    /// The domain is stopped (the downtime begins).
    Paused {
        /// Domain.
        subject: &'a str,
    },
    /// The domain runs again after `downtime`.
    Resumed {
        /// Domain.
        subject: &'a str,
        /// Pause to resume, measured.
        downtime: Duration,
    },
}

/// Receives the events of the process.
pub trait Observer: Send + Sync {
    /// One event. Called from any thread, often (once per 64-page chunk): keep it cheap.
    fn event(&self, event: &Event<'_>);
}

/// The observer that ignores everything (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &Event<'_>) {}
}

static OBSERVER: OnceLock<Box<dyn Observer>> = OnceLock::new();

/// Install the process's observer. Only the first call counts; a later one returns the
/// observer back as the error.
pub fn set_observer(o: Box<dyn Observer>) -> Result<(), Box<dyn Observer>> {
    OBSERVER.set(o)
}

/// Report `event` to the installed observer, if any.
pub fn emit(event: Event<'_>) {
    if let Some(o) = OBSERVER.get() {
        o.event(&event);
    }
}

/// [`Event::Start`] of `task`.
pub fn start(subject: &str, task: Task, total: Option<u64>) {
    emit(Event::Start {
        subject,
        task,
        total,
    });
}

/// [`Event::Advance`] of `task` by `delta`.
pub fn advance(subject: &str, task: Task, delta: u64) {
    emit(Event::Advance {
        subject,
        task,
        delta,
    });
}

/// [`Event::Finish`] of `task`, `done` in all.
pub fn finish(subject: &str, task: Task, done: u64) {
    emit(Event::Finish {
        subject,
        task,
        done,
    });
}

/// A reader that reports the bytes read through it as [`Event::Advance`] of `task`.
pub struct Reader<'s, R> {
    inner: R,
    subject: &'s str,
    task: Task,
    done: u64,
}

impl<'s, R> Reader<'s, R> {
    /// Wrap `inner`, announcing `task` of `total` bytes (if known).
    pub fn new(inner: R, subject: &'s str, task: Task, total: Option<u64>) -> Self {
        emit(Event::Start {
            subject,
            task,
            total,
        });
        Reader {
            inner,
            subject,
            task,
            done: 0,
        }
    }

    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// End the task: [`Event::Finish`] with the bytes read.
    pub fn finish(&self) {
        emit(Event::Finish {
            subject: self.subject,
            task: self.task,
            done: self.done,
        });
    }
}

impl<R: std::io::Read> std::io::Read for Reader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        emit(Event::Advance {
            subject: self.subject,
            task: self.task,
            delta: n as u64,
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn units_and_silent_default() {
        assert_eq!(Task::Import.unit(), Unit::Bytes);
        assert_eq!(Task::Round(0).unit(), Unit::Pages);
        // No observer installed in this test binary's thread of use: emit is a no-op.
        emit(Event::Paused { subject: "g" });
        Silent.event(&Event::Paused { subject: "g" });
    }

    #[test]
    fn reader_counts_every_byte() {
        let data = vec![7u8; 10_000];
        let mut r = Reader::new(&data[..], "g", Task::Import, Some(10_000));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.done(), 10_000);
        assert_eq!(out, data);
        r.finish();
    }

    #[test]
    fn task_json_names() {
        let j = serde_json::to_value(Task::Round(2)).unwrap();
        assert_eq!(j, serde_json::json!({"task": "round", "n": 2}));
        let j = serde_json::to_value(Task::Stream).unwrap();
        assert_eq!(j, serde_json::json!({"task": "stream"}));
    }
}
