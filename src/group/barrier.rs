//! The meeting point of a group's member threads and the thread that stops and resumes them.
//!
//! Each member runs the ordinary capture engine with a [`MemberStop`] as its stop control.
//! Its `stop` says "converged" and waits for the group to be stopped; its `resume` says "final
//! round copied" and waits for the group to be resumed. The coordinating thread
//! (`super::drive`) waits for those arrivals and does the stopping and resuming.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::capture::{CaptureError, StopControl, StopFigures};

/// Where the group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Members pre-copy.
    Precopy,
    /// Every member is stopped.
    Stopped,
    /// Every member runs again; `ok`: every member's final round succeeded.
    Resumed { ok: bool },
    /// The group gave up; every member runs.
    Aborted,
}

/// The state the threads share.
pub(crate) struct State {
    pub stage: Stage,
    /// Per member: converged, with the chain and layer id the stop is for.
    pub converged: Vec<Option<(String, u64)>>,
    /// Per member: the final round's outcome.
    pub copied: Vec<Option<bool>>,
    /// The first failure, naming the member or step.
    pub failure: Option<String>,
    /// Per member, set before `Resumed`.
    pub figures: Vec<StopFigures>,
}

/// State plus the condition variable every change is announced on.
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Member domain names.
    pub names: Vec<String>,
}

impl Shared {
    pub fn new(names: Vec<String>) -> Shared {
        let n = names.len();
        Shared {
            state: Mutex::new(State {
                stage: Stage::Precopy,
                converged: vec![None; n],
                copied: vec![None; n],
                failure: None,
                figures: vec![StopFigures::default(); n],
            }),
            changed: Condvar::new(),
            names,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the state and wake every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_all();
        r
    }

    /// Wait until `ready` holds, and return the state locked.
    pub fn wait(&self, mut ready: impl FnMut(&State) -> bool) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        while !ready(&s) {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s
    }

    /// Record the first failure (later ones are consequences).
    pub fn fail(&self, why: String) {
        self.update(|s| {
            s.failure.get_or_insert(why);
        });
    }

    /// Give up: every waiting member returns an error.
    pub fn abort(&self) {
        self.update(|s| s.stage = Stage::Aborted);
    }
}

/// A member's stop control.
pub(crate) struct MemberStop<'s> {
    pub shared: &'s Shared,
    pub index: usize,
}

impl MemberStop<'_> {
    fn aborted_error(&self, s: &State) -> CaptureError {
        CaptureError::GroupAborted {
            domain: self.shared.names[self.index].clone(),
            reason: s
                .failure
                .clone()
                .unwrap_or_else(|| "the group was stopped".into()),
        }
    }
}

impl StopControl for MemberStop<'_> {
    fn aborted(&self) -> bool {
        let s = self.shared.lock();
        s.stage == Stage::Aborted || (s.stage == Stage::Precopy && s.failure.is_some())
    }

    fn stop(&mut self, chain: &str, layer_id: u64) -> Result<(), CaptureError> {
        let i = self.index;
        self.shared
            .update(|s| s.converged[i] = Some((chain.to_string(), layer_id)));
        let s = self.shared.wait(|s| s.stage != Stage::Precopy);
        match s.stage {
            Stage::Stopped => Ok(()),
            _ => Err(self.aborted_error(&s)),
        }
    }

    fn resume(&mut self, copied: bool) -> Result<StopFigures, CaptureError> {
        let i = self.index;
        self.shared.update(|s| s.copied[i] = Some(copied));
        let s = self
            .shared
            .wait(|s| matches!(s.stage, Stage::Resumed { .. } | Stage::Aborted));
        match s.stage {
            Stage::Resumed { ok: true } => Ok(s.figures[i].clone()),
            _ => Err(self.aborted_error(&s)),
        }
    }

    fn abandon(&mut self) {
        let i = self.index;
        let disks = self
            .shared
            .update(|s| std::mem::take(&mut s.figures[i].disks));
        crate::disk::discard_all(disks);
    }
}
