//! The stop of a capture: how the domain is brought to (and out of) its checkpoint instant.
//!
//! The capture engine runs pre-copy, then calls [`StopControl::stop`], copies the final pages
//! into RAM and saves the machine state, then calls [`StopControl::resume`]. What happens in
//! between is up to the control:
//!
//! * [`SoloStop`]: one domain's own pause (a [`PauseGuard`]), plus its disk snapshots;
//! * the group engine's member control (`crate::group`): waits until every member converged,
//!   and the group coordinator stops all members at one instant and resumes them together.
//!
//! Either way the engine code of one checkpoint is the same.

use std::sync::Arc;
use std::time::Duration;

use super::CaptureError;
use crate::disk::{DiskPlan, DiskSnapshot};
use crate::hv::pause::PauseGuard;
use crate::hv::Domain;
use crate::layer::GroupTag;

/// What the stop contributes to the layer.
#[derive(Debug, Clone, Default)]
pub struct StopFigures {
    /// Pause to resume, measured.
    pub downtime: Duration,
    /// The disk snapshots taken while the domain was stopped.
    pub disks: Vec<DiskSnapshot>,
    /// The group checkpoint this layer belongs to.
    pub group: Option<GroupTag>,
}

/// Brings a domain to its checkpoint instant and back.
pub trait StopControl {
    /// Whether pre-copy should give up (e.g. another member of the group failed).
    fn aborted(&self) -> bool {
        false
    }
    /// Stop the domain (and whatever must stop with it) for layer `layer_id` of `chain`.
    /// Returns once the instant is fixed. On error nothing is left stopped.
    fn stop(&mut self, chain: &str, layer_id: u64) -> Result<(), CaptureError>;
    /// The final round is in RAM (`copied`) or failed: let the domain run again. Returns this
    /// domain's figures; an error if the domain (or, in a group, any member) could not be
    /// captured, in which case nothing of this stop must be committed.
    fn resume(&mut self, copied: bool) -> Result<StopFigures, CaptureError>;
    /// The capture failed after a successful [`StopControl::resume`]: drop what the stop made
    /// (disk snapshots) that no layer will refer to.
    fn abandon(&mut self);
}

/// One domain's own stop: a pause guard and its disk snapshots.
pub struct SoloStop {
    dom: Arc<dyn Domain>,
    disks: DiskPlan,
    guard: Option<PauseGuard>,
    taken: Vec<DiskSnapshot>,
}

impl SoloStop {
    /// Pause `dom` at the stop; snapshot the disks of `disks` while it is paused.
    pub fn new(dom: Arc<dyn Domain>, disks: DiskPlan) -> Self {
        SoloStop {
            dom,
            disks,
            guard: None,
            taken: Vec::new(),
        }
    }
}

impl StopControl for SoloStop {
    fn stop(&mut self, chain: &str, layer_id: u64) -> Result<(), CaptureError> {
        let guard = PauseGuard::pause(self.dom.clone())?;
        // On error the guard drops here and the domain runs again.
        self.taken = self.disks.snapshot_all(&self.dom.name(), chain, layer_id)?;
        self.guard = Some(guard);
        Ok(())
    }

    fn resume(&mut self, copied: bool) -> Result<StopFigures, CaptureError> {
        let guard = self.guard.take();
        let downtime = match guard {
            Some(g) => g.resume(),
            None => Ok(Duration::ZERO),
        };
        if !copied || downtime.is_err() {
            self.abandon();
        }
        let downtime = downtime?;
        Ok(StopFigures {
            downtime,
            disks: self.taken.clone(),
            group: None,
        })
    }

    fn abandon(&mut self) {
        crate::disk::discard_all(std::mem::take(&mut self.taken));
    }
}
