//! The end of a run: committing the layer and its tracking state, and, after a failure,
//! keeping the run's dirty bits (or disarming tracking) so the next run misses nothing.

use std::time::Instant;

use super::*;

impl<'c, D: Checkpointable + 'static> Run<'c, D> {
    pub(super) fn commit(
        &mut self,
        out: pipeline::WriterOut,
        state: Vec<StateBlob>,
        config: Vec<u8>,
        figures: StopFigures,
        stop: StopReason,
        started: Instant,
    ) -> Result<CaptureReport, CaptureError> {
        let downtime = figures.downtime;
        let precopy_ms = self
            .rounds
            .iter()
            .filter(|r| !r.paused)
            .map(|r| r.ms)
            .sum::<f64>();
        let mut stats = CaptureStats {
            rounds: self.rounds.iter().filter(|r| !r.paused).count() as u32,
            downtime_us: downtime.as_micros() as u64,
            precopy_ms: precopy_ms as u64,
            total_ms: started.elapsed().as_millis() as u64,
            sent_pages: self.rounds.iter().map(|r| r.pages).sum(),
            notes: self
                .plan
                .notes()
                .into_iter()
                .chain(self.evict_notes.clone())
                .collect(),
            encoding: Some(out.encoding.clone()),
            ..Default::default()
        };
        stats.count_pages(
            &out.index,
            self.plan.kind() == crate::layer::LayerKind::Base,
        );
        let meta = LayerMeta {
            id: self.plan.next_id(),
            parent: self.plan.parent(),
            kind: self.plan.kind(),
            domain: self.info.identity.clone(),
            guest_type: self.info.guest_type,
            pfn_count: self.info.pfn_count,
            vcpus: self.info.vcpus,
            created_unix_ms: crate::store::unix_ms(),
            frame_pages: self.opts.frame_pages,
            compress_level: self.opts.encoding().level(),
            stats,
            group: figures.group,
            disks: figures.disks.clone(),
        };
        let WriterFigures {
            raw_bytes,
            stored_bytes,
            ..
        } = out.figures;
        // The layer and the tracking state after it (armed since this layer, nothing in
        // flight, the next run's spot-check sample) go into one manifest write.
        let tracking = (!self.untracked).then(|| TrackingState {
            armed: true,
            identity: self.info.identity.clone(),
            since_layer: meta.id,
            in_flight: false,
            spot: match self.chain.key() {
                None => spot::draw(&out.index, |slot| out.writer.digest(slot)),
                // Page digests in the plaintext manifest would tell of an encrypted guest.
                Some(_) => Vec::new(),
            },
        });
        let content = crate::store::LayerContent {
            index: &out.index,
            state: &state,
            config: &config,
        };
        let layer = self
            .chain
            .commit_layer_tracked(out.writer, &meta, content, Some(tracking))?;
        // The layer covers every fetched bit now: the pending bits are consumed (left over
        // after a crash here, the next run only sends them again).
        let _ = pending::clear(self.chain.dir());
        self.phases.precopy_ms = precopy_ms;
        Ok(CaptureReport {
            layer,
            resync_reason: self.plan.resync_reason(),
            stop,
            rounds: self.rounds.clone(),
            downtime,
            raw_bytes,
            stored_bytes,
            disks: figures.disks,
            stages: out.stages,
            superseded_pages: self.hold.dropped,
            phases: self.phases.clone(),
            phase_usage: PhaseUsage::default(),
            probe: self.probe.as_ref().map(|p| p.report.clone()),
        })
    }

    /// Set or clear `in_flight` on the chain's tracking state (if tracking is armed). A
    /// marker left by a killed run is never cleared by a later failed run: only a committed
    /// layer (which re-arms tracking) clears it.
    pub(super) fn mark_in_flight(&mut self, on: bool) -> Result<(), CaptureError> {
        if let Some(mut t) = self.chain.manifest()?.tracking {
            if on && t.in_flight {
                self.inherited_in_flight = true;
            }
            if on && self.inherited_in_flight {
                return Ok(());
            }
            if t.armed && t.in_flight != on && !self.inherited_in_flight {
                t.in_flight = on;
                self.chain.set_tracking(Some(t))?;
            }
        }
        Ok(())
    }

    /// After a failure: keep every dirty bit this run fetched, so the next run stores them.
    pub(super) fn keep_dirty_bits(&mut self, e: CaptureError) -> CaptureError {
        if matches!(e, CaptureError::Hv(HvError::TrackingLost { .. })) {
            // The bits are incomplete: keeping them would not help. Disarm, so the next run
            // resyncs.
            return match self.chain.set_tracking(None) {
                Ok(()) => e,
                Err(second) => CaptureError::Unrecoverable {
                    domain: self.info.identity.name.clone(),
                    first: Box::new(e),
                    second: second.to_string(),
                },
            };
        }
        let mut bits = self.fetched.clone();
        if let Plan::Incremental {
            pending: Some(p), ..
        } = &self.plan
        {
            bits |= p;
        }
        if bits.not_any() {
            let _ = self.mark_in_flight(false);
            return e;
        }
        match pending::save(self.chain.dir(), &bits) {
            Ok(()) => match self.mark_in_flight(false) {
                Ok(()) => e,
                Err(second) => CaptureError::Unrecoverable {
                    domain: self.info.identity.name.clone(),
                    first: Box::new(e),
                    second: second.to_string(),
                },
            },
            Err(io) => {
                // Without the bits, an incremental would miss pages: make the next run resync.
                let _ = self.chain.set_tracking(None);
                CaptureError::Unrecoverable {
                    domain: self.info.identity.name.clone(),
                    first: Box::new(e),
                    second: io.to_string(),
                }
            }
        }
    }
}
