//! The hypervisor traits for [`SimDomain`].

use std::sync::atomic::Ordering;

use super::{lock, Inner, SimCpuState, SimDomain, SimFaults};
use crate::guestmem::GuestPage;
use crate::hv::{
    state_kind, DirtyLog, Domain, DomainInfo, GuestMemory, HvError, MachineState, MappedBatch,
    PageType, Pfn, PfnBitmap, StateBlob,
};

impl Domain for SimDomain {
    fn info(&self) -> Result<DomainInfo, HvError> {
        let cfg = lock(&self.cfg);
        Ok(DomainInfo {
            identity: self.identity(),
            guest_type: cfg.guest_type,
            pfn_count: cfg.pfn_count,
            vcpus: cfg.vcpus,
            populated_pages: self.inner.populated.count(),
            paused: *lock(&self.inner.pauses) > 0,
        })
    }

    /// Returns once no write is in progress. The first (outermost) pause records a ground-truth
    /// snapshot when auto-truth is on.
    fn pause(&self) -> Result<(), HvError> {
        SimFaults::check(&self.faults.fail_pause, self.name(), "pause")?;
        let inner = &self.inner;
        let mut count = lock(&inner.pauses);
        inner.gate.hold();
        *count += 1;
        if *count == 1 {
            if let Some(mode) = *lock(&inner.auto_truth) {
                let t = std::time::Instant::now();
                let n = lock(&inner.truths).len();
                inner.record(format!("pause#{n}"), mode);
                let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                inner.auto_truth_ns.fetch_add(ns, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn unpause(&self) -> Result<(), HvError> {
        let mut count = lock(&self.inner.pauses);
        if *count == 0 {
            return Err(HvError::op(
                self.name(),
                "unpause",
                "EINVAL: the domain is not paused",
            ));
        }
        *count -= 1;
        self.inner.gate.release();
        Ok(())
    }

    fn name(&self) -> String {
        self.inner.name.clone()
    }
}

impl DirtyLog for SimDomain {
    /// A no-op when already on (the bitmap is kept). Otherwise, like Xen, the writers are held
    /// off while the mode switches and tracking starts from an empty bitmap.
    fn logdirty_enable(&self) -> Result<(), HvError> {
        let inner = &self.inner;
        let _switch = lock(&inner.logdirty_switch);
        if self.logdirty_on() {
            return Ok(());
        }
        inner.gate.hold();
        inner.dirty.clear_all();
        inner.logdirty.store(true, Ordering::SeqCst);
        inner.gate.release();
        Ok(())
    }

    /// Turns tracking off and drops the bitmap. Off when already off is not an error.
    fn logdirty_disable(&self) -> Result<(), HvError> {
        let inner = &self.inner;
        let _switch = lock(&inner.logdirty_switch);
        inner.gate.hold();
        inner.logdirty.store(false, Ordering::SeqCst);
        inner.dirty.clear_all();
        inner.gate.release();
        Ok(())
    }

    fn logdirty_enabled(&self) -> Result<bool, HvError> {
        Ok(self.logdirty_on())
    }

    /// Fails with [`HvError::TrackingLost`] while log-dirty is off.
    fn logdirty_clean(&self, into: &mut PfnBitmap) -> Result<u64, HvError> {
        if self.faults.clean_starts() {
            self.logdirty_disable()?;
        }
        let n = self.clean(into)?;
        self.faults.clean_done();
        Ok(n)
    }
}

impl SimDomain {
    fn clean(&self, into: &mut PfnBitmap) -> Result<u64, HvError> {
        let _switch = lock(&self.inner.logdirty_switch);
        if !self.logdirty_on() {
            return Err(HvError::TrackingLost {
                domain: self.name(),
                reason: "log-dirty mode is off".into(),
            });
        }
        Ok(self.inner.dirty.take_into(into))
    }
}

/// A mapped batch of a [`SimDomain`]'s frames: views straight into its memory.
pub struct SimBatch<'a> {
    inner: &'a Inner,
    frames: Vec<Result<Pfn, i32>>,
}

impl MappedBatch for SimBatch<'_> {
    fn len(&self) -> usize {
        self.frames.len()
    }

    fn page(&self, i: usize) -> Result<GuestPage<'_>, i32> {
        self.frames[i].map(|pfn| self.inner.mem.page(pfn))
    }
}

impl GuestMemory for SimDomain {
    fn page_types(&self, pfns: &[Pfn], out: &mut [PageType]) -> Result<(), HvError> {
        if pfns.len() != out.len() {
            return Err(HvError::op(
                self.name(),
                "page types",
                "EINVAL: output length differs from input",
            ));
        }
        let inner = &self.inner;
        for (&pfn, t) in pfns.iter().zip(out.iter_mut()) {
            if pfn >= inner.pfn_count {
                return Err(HvError::op(
                    self.name(),
                    "page types",
                    format!("EINVAL: pfn {pfn:#x} beyond pfn_count"),
                ));
            }
            *t = if inner.populated.get(pfn) {
                PageType::Normal
            } else {
                PageType::Unpopulated
            };
        }
        Ok(())
    }

    /// The populated pfns, exactly.
    fn counted_pages(&self) -> Result<Option<u64>, HvError> {
        Ok(Some(self.inner.populated.count()))
    }

    /// Unpopulated pfns fail with `ENOENT`, pfns beyond `pfn_count` with `EINVAL`, per frame.
    fn map_batch<'a>(&'a self, pfns: &[Pfn]) -> Result<Box<dyn MappedBatch + 'a>, HvError> {
        self.faults.map_starts();
        if *lock(&self.inner.pauses) > 0 {
            SimFaults::check(&self.faults.fail_map_when_paused, self.name(), "map")?;
        }
        let inner = &*self.inner;
        let frames = pfns
            .iter()
            .map(|&pfn| {
                if pfn >= inner.pfn_count {
                    Err(libc::EINVAL)
                } else if inner.populated.get(pfn) {
                    Ok(pfn)
                } else {
                    Err(libc::ENOENT)
                }
            })
            .collect();
        Ok(Box::new(SimBatch { inner, frames }))
    }
}

impl MachineState for SimDomain {
    fn ready_for_stop(&self) -> Result<(), HvError> {
        SimFaults::check(
            &self.faults.fail_ready_for_stop,
            self.name(),
            "ready for stop",
        )?;
        self.faults
            .stop_sessions_open
            .fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn stop_over(&self) {
        let open = &self.faults.stop_sessions_open;
        let _ = open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// A [`state_kind::SIM_CPU`] blob ([`SimCpuState`] as JSON), then stand-ins for the two
    /// records a Xen stream of a PVH guest cannot do without (a zeroed HVM_CONTEXT, and
    /// HVM_PARAMS naming pfn 1 as the xenstore ring), so that a sim point streams into a
    /// (fake) `xl restore` like a Xen one.
    fn save_state(&self) -> Result<Vec<StateBlob>, HvError> {
        SimFaults::check(&self.faults.fail_save_state, self.name(), "save state")?;
        let vcpus = lock(&self.cfg).vcpus;
        let state = SimCpuState::capture(self.generation(), self.writer_progress(), vcpus);
        // HVM_PARAMS: count 1, reserved, (HVM_PARAM_STORE_PFN = 1, pfn 1).
        let mut params = 1u32.to_le_bytes().to_vec();
        params.extend_from_slice(&[0; 4]);
        params.extend_from_slice(&1u64.to_le_bytes());
        params.extend_from_slice(&1u64.to_le_bytes());
        Ok(vec![
            StateBlob {
                kind: state_kind::SIM_CPU,
                data: state.encode(),
            },
            StateBlob {
                kind: state_kind::HVM_CONTEXT,
                data: vec![0; 8],
            },
            StateBlob {
                kind: state_kind::HVM_PARAMS,
                data: params,
            },
        ])
    }

    /// The [`super::SimConfig`] as JSON, with `populated` as it is now.
    fn config(&self) -> Result<Vec<u8>, HvError> {
        serde_json::to_vec(&self.sim_config()).map_err(|e| HvError::op(self.name(), "config", e))
    }
}
