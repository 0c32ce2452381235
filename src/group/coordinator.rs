//! The coordinator of a group checkpoint: the barriers between the group's phases.
//!
//! ```text
//! prepare   every member pre-copies until converged  -> barrier(Converged)
//! pause     every member is stopped, disks snapshot  -> barrier(Stopped)   <- the instant
//! copy      final pages into RAM, state saved        -> barrier(Copied)
//! resume    every member runs again; write-behind    -> barrier(Committed)
//! ```
//!
//! On one host the barriers are in-process ([`LocalCoordinator`]). Across hosts each host's
//! xckpt calls the same barriers, and a multi-host coordinator (one xckpt per node started by
//! a Slurm job step, meeting through `srun`/PMI or a TCP rendezvous) returns only when every
//! host arrived; see docs/design-group.md. No member may resume before every member of every
//! host is stopped (barrier `Stopped`), or a message sent after the instant by a resumed
//! member could reach a member not yet stopped.

use std::time::Duration;

use super::manifest::GroupMember;

/// A phase boundary of the group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Every member's pre-copy converged: stop them.
    Converged,
    /// Every member is stopped and its disks are snapshotted: the group instant.
    Stopped,
    /// Every member's final pages and state are in RAM: resume them.
    Copied,
    /// Every member's layer is committed: record the group checkpoint.
    Committed,
    /// A restore across hosts: every host serves the disk snapshots it holds for members
    /// restored on other hosts (`disk::nbd`); fetch them.
    Served,
    /// A restore: every member exists, paused; unpause them.
    Restored,
    /// A restore across hosts: every disk fetched from another host is local; the hosts that
    /// serve them may stop (once no copy reads them).
    DisksLocal,
}

/// When a host's members were paused: its first and last pause, µs since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PauseWindow {
    /// The first member paused.
    pub first_unix_us: u64,
    /// The last member paused.
    pub last_unix_us: u64,
}

/// Why a barrier failed.
#[derive(Debug, thiserror::Error)]
#[error("group barrier {phase:?}: {reason}")]
pub struct BarrierError {
    /// The barrier.
    pub phase: Phase,
    /// What went wrong (a peer failed, a timeout, the rendezvous broke).
    pub reason: String,
}

/// Carries the barriers of a group checkpoint.
pub trait Coordinator: Send {
    /// This host's members reached `phase` (`ok`: all of them succeeded). Returns once every
    /// participant arrived: `Ok(true)` if all of them succeeded and the group goes on,
    /// `Ok(false)` if one failed (abort). Called with the local members stopped at
    /// [`Phase::Stopped`], so it must not wait long.
    fn barrier(&mut self, phase: Phase, ok: bool) -> Result<bool, BarrierError>;

    /// This host's pause window, told before [`Phase::Stopped`] (carried with it).
    fn paused(&mut self, _window: PauseWindow) {}

    /// Once [`Phase::Stopped`] passed across hosts: the group instant (ms since the Unix
    /// epoch, one clock for every host) and the pause skew over every host. `None`: one
    /// host, whose own figures stand.
    fn instant(&self) -> Option<(u64, Duration)> {
        None
    }

    /// This host's committed members, told before [`Phase::Committed`] (carried with it).
    fn share(&mut self, _local: &[GroupMember]) {}

    /// After [`Phase::Committed`] passed: every host's members, on the one host that records
    /// the group point (`None` on the others).
    fn gather(&mut self, local: Vec<GroupMember>) -> Option<Vec<GroupMember>> {
        Some(local)
    }

    /// Why the group failed, if another host said so.
    fn why_failed(&self) -> Option<String> {
        None
    }

    /// This host failed before `phase` (`why`) and its members run again: fail the barrier
    /// at once, so that no other host stays stopped waiting for this one.
    fn abandon(&mut self, phase: Phase, why: &str) {
        let _ = why;
        let _ = self.barrier(phase, false);
    }
}

/// One host: every member is in this process, so each barrier is passed when it is called.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalCoordinator;

impl Coordinator for LocalCoordinator {
    fn barrier(&mut self, _phase: Phase, ok: bool) -> Result<bool, BarrierError> {
        Ok(ok)
    }
}
