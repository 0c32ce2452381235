//! Fault injection: every [`SimDomain`] has a [`SimFaults`] whose switches make its operations
//! fail, or act beside them, as a real hypervisor call can fail or race. Tests flip them; a
//! sim nobody touches behaves exactly as documented in [`super`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{lock, Hook};
use crate::hv::HvError;

/// The switches. All off by default.
#[derive(Default)]
pub struct SimFaults {
    /// Every pause fails.
    pub fail_pause: AtomicBool,
    /// Every state save fails.
    pub fail_save_state: AtomicBool,
    /// Every preparation for a stop ([`MachineState::ready_for_stop`]) fails.
    ///
    /// [`MachineState::ready_for_stop`]: crate::hv::MachineState::ready_for_stop
    pub fail_ready_for_stop: AtomicBool,
    /// Preparations for a stop not released yet ([`MachineState::stop_over`]): a Xen HVM
    /// domain's QEMU session, held in the sim by this count alone.
    ///
    /// [`MachineState::stop_over`]: crate::hv::MachineState::stop_over
    pub stop_sessions_open: AtomicU64,
    /// Every mapping fails while the domain is paused.
    pub fail_map_when_paused: AtomicBool,
    /// Log-dirty is turned off just before the N-th CLEAN (counting from 1; 0: never), as
    /// another tool's save ends.
    pub disable_logdirty_at_clean: AtomicU64,
    /// CLEANs so far (failed ones included).
    pub cleans: AtomicU64,
    after_clean: Mutex<Option<Hook>>,
    before_map: Mutex<Option<Hook>>,
}

impl SimFaults {
    /// Run `hook` after every successful CLEAN (e.g. to clear a persisted copy of the bitmap).
    pub fn after_clean(&self, hook: impl Fn() + Send + Sync + 'static) {
        *lock(&self.after_clean) = Some(Box::new(hook));
    }

    /// Run `hook` at the start of every batched mapping, after the caller read the page
    /// types (e.g. a balloon driver giving frames back in between).
    pub fn before_map(&self, hook: impl Fn() + Send + Sync + 'static) {
        *lock(&self.before_map) = Some(Box::new(hook));
    }

    pub(super) fn map_starts(&self) {
        if let Some(h) = &*lock(&self.before_map) {
            h();
        }
    }

    /// `Err` naming `domain` and `op` when `switch` is on.
    pub(super) fn check(
        switch: &AtomicBool,
        domain: String,
        op: &'static str,
    ) -> Result<(), HvError> {
        if switch.load(Ordering::SeqCst) {
            return Err(HvError::op(domain, op, "injected fault"));
        }
        Ok(())
    }

    /// Counts a CLEAN; true if log-dirty must be turned off before it.
    pub(super) fn clean_starts(&self) -> bool {
        let n = self.cleans.fetch_add(1, Ordering::SeqCst) + 1;
        n == self.disable_logdirty_at_clean.load(Ordering::SeqCst)
    }

    pub(super) fn clean_done(&self) {
        if let Some(h) = &*lock(&self.after_clean) {
            h();
        }
    }
}
