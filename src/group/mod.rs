//! Group checkpoints: several domains captured at one instant, with their disks.
//!
//! ```text
//! member threads (one capture engine each)        coordinating thread
//!   plan, arm log-dirty, pre-copy ... converged ->  all converged?     barrier(Converged)
//!                                                   pause all (in parallel), snapshot disks
//!                                   <- stopped      the instant        barrier(Stopped)
//!   fetch-and-clear, final pages into RAM, state -> all copied?        barrier(Copied)
//!                                   <- resumed      resume all (in parallel)
//!   write-behind, commit                         -> all committed?     barrier(Committed)
//!                                                   record the group point
//! ```
//!
//! Each member runs the same engine as a single-domain checkpoint
//! ([`crate::capture::checkpoint_with`]); only its stop control differs ([`barrier`]). Every
//! member is paused through a [`PauseGuard`] (so the signal handler and, on Xen, each
//! member's watchdog process cover it): if any member fails before its final pages are in
//! RAM, every member is resumed and no member commits. The pause skew is the time between the
//! first and the last member's pause.

pub mod across;
mod barrier;
pub mod coordinator;
pub mod copies;
pub mod manifest;
pub mod rendezvous;
pub mod slurm;
mod wire;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use barrier::{MemberStop, Shared, Stage};
pub use coordinator::{BarrierError, Coordinator, LocalCoordinator, PauseWindow, Phase};
pub use manifest::{GroupDir, GroupManifest, GroupMember, GroupPoint};

use crate::capture::{checkpoint_with, CaptureError, CaptureOptions, CaptureReport};
use crate::disk::{DiskPlan, DiskSnapshot};
use crate::hv::pause::PauseGuard;
use crate::hv::{Checkpointable, Domain, HvError};
use crate::layer::GroupTag;
use crate::store::{Chain, StoreError};

/// One member of a group.
pub struct Member<D> {
    /// The domain.
    pub dom: Arc<D>,
    /// Its chain.
    pub chain: Chain,
    /// Its disks and their back-ends (empty for memory only).
    pub disks: DiskPlan,
    /// Its page eviction (the guest agent is per domain); replaces the shared options' own.
    pub evict: crate::evict::EvictOptions,
}

/// One member's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberReport {
    /// The domain.
    pub domain: String,
    /// Its chain.
    pub chain: String,
    /// Its checkpoint.
    pub capture: CaptureReport,
}

/// The result of a group checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    /// The group's tag, as every member's layer records it.
    pub tag: GroupTag,
    /// First to last member paused (across every host of a group that spans hosts).
    pub skew: Duration,
    /// Per member of this host, in the order given.
    pub members: Vec<MemberReport>,
    /// The group point this host records: every host's members (`None` on a host whose
    /// group point another host records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<GroupPoint>,
}

/// Errors of a group checkpoint. None leaves a member paused.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A group needs members, each once.
    #[error("group {group}: {reason}")]
    Members {
        /// Group name.
        group: String,
        /// What is wrong.
        reason: String,
    },
    /// A member failed (or the group step named in `reason`); every member was resumed.
    #[error("group {group}: {reason}; every member is running and no group checkpoint was recorded{}", committed_note(.committed))]
    Failed {
        /// Group name.
        group: String,
        /// The first failure.
        reason: String,
        /// Members whose layer was committed anyway (write-behind of another failed).
        committed: Vec<String>,
    },
    /// Recording the group point failed (every member's layer is committed).
    #[error("group {group}: every member's layer is committed but the group manifest could not be written: {source}")]
    Record {
        /// Group name.
        group: String,
        /// The cause.
        source: StoreError,
    },
}

fn committed_note(c: &[String]) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!(
            " ({} committed a layer of their own, tagged with the group but not part of a group checkpoint)",
            c.join(", ")
        )
    }
}

/// Take a group checkpoint of `members` as group checkpoint `id` of `group`, with barriers
/// carried by `coord`. The caller holds the members' chain locks and the group's lock, and
/// records the result with [`GroupDir::record`] (see [`GroupReport::point`]).
pub fn checkpoint_group<D: Checkpointable + 'static>(
    group: &str,
    id: u64,
    members: &[Member<D>],
    opts: &CaptureOptions,
    coord: &mut dyn Coordinator,
) -> Result<GroupReport, GroupError> {
    let names: Vec<String> = members.iter().map(|m| m.dom.name()).collect();
    check_members(group, &names)?;
    let shared = Shared::new(names.clone());
    let (outcome, results) = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(index, m)| {
                let shared = &shared;
                s.spawn(move || {
                    let mut stop = MemberStop { shared, index };
                    let opts = CaptureOptions {
                        evict: m.evict.clone(),
                        ..opts.clone()
                    };
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        checkpoint_with(&m.dom, &m.chain, &opts, &mut stop)
                    }))
                    .unwrap_or_else(|_| {
                        let domain = shared.names[index].clone();
                        shared.fail(format!("domain {domain}: its capture thread panicked"));
                        Err(CaptureError::GroupAborted {
                            domain,
                            reason: "its capture thread panicked".into(),
                        })
                    });
                    // A member that gave up because of another one is not the cause.
                    match &r {
                        Err(CaptureError::GroupAborted { .. }) => shared.update(|_| ()),
                        Err(e) => shared.fail(e.to_string()),
                        Ok(_) => {}
                    }
                    r
                })
            })
            .collect();
        let outcome = drive(group, id, members, &shared, coord);
        if outcome.is_err() {
            shared.abort();
        }
        let results: Vec<Result<CaptureReport, CaptureError>> = handles
            .into_iter()
            .map(|h| h.join().expect("member thread result"))
            .collect();
        (outcome, results)
    });
    let committed: Vec<String> = results
        .iter()
        .zip(&names)
        .filter(|(r, _)| r.is_ok())
        .map(|(_, n)| n.clone())
        .collect();
    let all_ok = committed.len() == names.len();
    let failed = |reason: String| GroupError::Failed {
        group: group.to_string(),
        reason,
        committed: if all_ok {
            Vec::new()
        } else {
            committed.clone()
        },
    };
    let (tag, skew) = match outcome {
        Ok(t) => t,
        Err(reason) => return Err(failed(first_failure(&shared, reason))),
    };
    if !all_ok {
        let reason = first_failure(&shared, "a member failed".into());
        let _ = coord.barrier(Phase::Committed, false);
        return Err(failed(reason));
    }
    let layers_kept = |reason: String| GroupError::Failed {
        group: group.to_string(),
        reason,
        committed: names.clone(),
    };
    let members: Vec<MemberReport> = names
        .iter()
        .cloned()
        .zip(results)
        .zip(members)
        .map(|((domain, r), m)| MemberReport {
            domain,
            chain: m.chain.name().to_string(),
            capture: r.expect("all members committed"),
        })
        .collect();
    let mut report = GroupReport {
        tag,
        skew,
        members,
        record: None,
    };
    let local = report.point();
    coord.share(&local.members);
    match coord.barrier(Phase::Committed, true) {
        Ok(true) => {}
        Ok(false) => {
            return Err(layers_kept(coord.why_failed().unwrap_or_else(|| {
                "another host's member failed to commit".into()
            })))
        }
        Err(e) => return Err(layers_kept(e.to_string())),
    }
    report.record = coord
        .gather(local.members.clone())
        .map(|members| GroupPoint { members, ..local });
    Ok(report)
}

fn first_failure(shared: &Shared, fallback: String) -> String {
    shared
        .lock()
        .failure
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or(fallback)
}

fn check_members(group: &str, names: &[String]) -> Result<(), GroupError> {
    let bad = |reason: String| {
        Err(GroupError::Members {
            group: group.to_string(),
            reason,
        })
    };
    if names.is_empty() {
        return bad("no members given".into());
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return bad(format!("domain {n} is listed twice"));
        }
    }
    Ok(())
}

impl GroupReport {
    /// The group manifest's entry for this checkpoint.
    pub fn point(&self) -> GroupPoint {
        GroupPoint {
            id: self.tag.id,
            instant_unix_ms: self.tag.instant_unix_ms,
            skew_us: self.skew.as_micros() as u64,
            members: self
                .members
                .iter()
                .map(|m| GroupMember {
                    chain: m.chain.clone(),
                    layer: m.capture.layer.id,
                    downtime_us: m.capture.downtime.as_micros() as u64,
                    disks: m.capture.disks.len(),
                    slot: None,
                })
                .collect(),
        }
    }
}

/// The coordinating thread: stop every member once all converged, resume them once all
/// copied. Returns the tag and the pause skew, or why the group gave up (every member then
/// runs, and `shared` is aborted by the caller).
fn drive<D: Checkpointable + 'static>(
    group: &str,
    id: u64,
    members: &[Member<D>],
    shared: &Shared,
    coord: &mut dyn Coordinator,
) -> Result<(GroupTag, Duration), String> {
    let s = shared.wait(|s| s.failure.is_some() || s.converged.iter().all(Option::is_some));
    let local_ok = s.failure.is_none();
    let stops: Vec<(String, u64)> = s.converged.iter().flatten().cloned().collect();
    drop(s);
    pass(coord, Phase::Converged, local_ok)?;
    // A local failure from here on resumes the local members first, then fails the barrier
    // at once: the other hosts are stopped, waiting for this one.
    let guards = match pause_all(members) {
        Ok(g) => g,
        Err(e) => return Err(abandon(coord, Phase::Stopped, e)),
    };
    let (skew, window) = skew(&guards);
    let disks = match snapshot_all(members, &stops) {
        Ok(d) => d,
        Err(e) => {
            drop(guards);
            return Err(abandon(coord, Phase::Stopped, e));
        }
    };
    crate::failpoint::failpoint("group.paused");
    let local_instant = crate::store::unix_ms();
    coord.paused(window);
    if let Err(e) = pass(coord, Phase::Stopped, true) {
        crate::disk::discard_all(disks.into_iter().flatten().collect());
        return Err(e);
    }
    // Across hosts, the hub's clock fixes the instant and the skew covers every host.
    let (instant_unix_ms, skew) = coord.instant().unwrap_or((local_instant, skew));
    let tag = GroupTag {
        name: group.to_string(),
        id,
        instant_unix_ms,
    };
    shared.update(|s| s.stage = Stage::Stopped);
    let s = shared.wait(|s| s.failure.is_some() || s.copied.iter().all(Option::is_some));
    let copied = s.failure.is_none() && s.copied.iter().all(|c| *c == Some(true));
    drop(s);
    let go = pass(coord, Phase::Copied, copied);
    let downtimes = resume_all(guards);
    let ok = go.is_ok() && downtimes.iter().all(Result::is_ok);
    if !ok {
        crate::disk::discard_all(disks.into_iter().flatten().collect());
        // A member whose final round failed reports its own error when its thread ends.
        let why = downtimes
            .iter()
            .find_map(|d| d.as_ref().err().map(|e| e.to_string()))
            .or(go.err().filter(|_| copied));
        shared.update(|s| {
            if let Some(w) = &why {
                s.failure.get_or_insert(w.clone());
            }
            s.stage = Stage::Resumed { ok: false };
        });
        return Err(why.unwrap_or_else(|| "a member's final round failed".into()));
    }
    shared.update(|s| {
        for (i, (d, disks)) in downtimes.into_iter().zip(disks).enumerate() {
            s.figures[i].downtime = d.unwrap_or_default();
            s.figures[i].disks = disks;
            s.figures[i].group = Some(tag.clone());
        }
        s.stage = Stage::Resumed { ok: true };
    });
    Ok((tag, skew))
}

/// Fail barrier `phase` for `why` (this host's members run again); returns `why`.
fn abandon(coord: &mut dyn Coordinator, phase: Phase, why: String) -> String {
    coord.abandon(phase, &why);
    why
}

/// Pass barrier `phase`; `Err` (with why) unless every participant succeeded.
fn pass(coord: &mut dyn Coordinator, phase: Phase, ok: bool) -> Result<(), String> {
    match coord.barrier(phase, ok) {
        Ok(true) => Ok(()),
        Ok(false) if ok => Err(coord
            .why_failed()
            .unwrap_or_else(|| format!("a member on another host failed before {phase:?}"))),
        Ok(false) => Err(format!("a member failed before {phase:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Pause every member at once ([`PauseGuard::pause_all`]). If any pause fails, the others
/// are resumed (their guards drop).
fn pause_all<D: Checkpointable + 'static>(
    members: &[Member<D>],
) -> Result<Vec<PauseGuard>, String> {
    let doms: Vec<Arc<dyn Domain>> = members
        .iter()
        .map(|m| m.dom.clone() as Arc<dyn Domain>)
        .collect();
    let mut guards = Vec::new();
    let mut first_err = None;
    for r in PauseGuard::pause_all(doms) {
        match r {
            Ok(g) => guards.push(g),
            Err(e) => {
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    match first_err {
        None => Ok(guards),
        Some(e) => Err(e), // `guards` drop here: every paused member runs again.
    }
}

/// First to last pause, and the same window in µs since the Unix epoch.
fn skew(guards: &[PauseGuard]) -> (Duration, PauseWindow) {
    let at = guards.iter().map(PauseGuard::paused_at);
    let now = std::time::Instant::now();
    let now_us = crate::store::unix_us();
    let unix_us =
        |t: std::time::Instant| now_us.saturating_sub(now.duration_since(t).as_micros() as u64);
    match (at.clone().min(), at.max()) {
        (Some(a), Some(b)) => (
            b.duration_since(a),
            PauseWindow {
                first_unix_us: unix_us(a),
                last_unix_us: unix_us(b),
            },
        ),
        _ => (
            Duration::ZERO,
            PauseWindow {
                first_unix_us: now_us,
                last_unix_us: now_us,
            },
        ),
    }
}

/// Snapshot every member's disks (all members stopped), one thread per member. On failure,
/// every snapshot taken is removed.
fn snapshot_all<D: Checkpointable + 'static>(
    members: &[Member<D>],
    stops: &[(String, u64)],
) -> Result<Vec<Vec<DiskSnapshot>>, String> {
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = members
            .iter()
            .zip(stops)
            .map(|(m, (chain, layer))| {
                s.spawn(move || {
                    m.disks
                        .snapshot_all(&m.dom.name(), chain, *layer)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a disk snapshot thread panicked".into()))
            })
            .collect()
    });
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
        crate::disk::discard_all(
            results
                .into_iter()
                .flat_map(Result::unwrap_or_default)
                .collect(),
        );
        return Err(e);
    }
    Ok(results.into_iter().map(Result::unwrap_or_default).collect())
}

/// Resume every member at once; each member's downtime (pause to its resume).
fn resume_all(guards: Vec<PauseGuard>) -> Vec<Result<Duration, HvError>> {
    PauseGuard::resume_all(guards)
}
