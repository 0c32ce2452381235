//! Live capture: pre-copy on log-dirty, a brief pause, write-behind.
//!
//! ```text
//! plan (base | incremental | resync)
//!  -> arm log-dirty; round 0 = every pfn (resync), the populated ones (base: [`probe`]) or the
//!     dirty set since the parent
//!  -> live rounds: fetch-and-clear, send what was dirtied, until the policy says pause
//!  -> pause; fetch-and-clear; copy the last dirty pages into RAM; save vCPU/platform state
//!  -> resume (downtime = pause to resume, measured)
//!  -> write-behind: compress and write the held pages, finish the layer, commit it
//!  -> leave log-dirty on, so the next run's fetch-and-clear yields what changed since
//! ```
//!
//! Correctness rests on the log-dirty contract: after a fetch-and-clear at time `t`, every write
//! that a copy made after `t` may have missed is reported by a later fetch-and-clear. The last
//! one happens under pause, so the layer holds every page as it was at the pause instant.
//! Dirty bits fetched by a run that then fails are saved ([`pending`]) and OR-ed into the next.

mod commit;
pub mod copy;
mod holdback;
pub mod pending;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod spot;
pub mod stop;

use std::sync::Arc;
use std::time::Instant;

use crate::hv::pause;
use crate::hv::{Checkpointable, DomainInfo, HvError, PfnBitmap, StateBlob};
use crate::layer::encode::Stage;
use crate::layer::pipeline::{self, Baseline, Chunk, ChunkBuilder, Pipeline, WriterFigures};
use crate::layer::{CaptureStats, LayerIndex, LayerMeta, LayerWriteError};
use crate::progress::{self as report, emit, Event, Task};
use crate::store::{Chain, TrackingState};
use crate::usage::Usage;
use copy::{copy_pfns, round_set, CopyFigures, CopyRules, SkipSet};
use holdback::{HeldSink, Holdback};
pub use plan::Plan;
use policy::{Decision, Progress, StopReason};
pub use stop::{SoloStop, StopControl, StopFigures};

mod error;
mod options;
pub use error::CaptureError;
use options::UsageMarks;
pub use options::{CaptureOptions, CaptureReport, PhaseTimes, PhaseUsage, RoundReport};
pub use probe::ProbeReport;

/// Pages the paused round's buffers may lack before the backlog is written ahead of the stop to
/// lend its buffers (8 MiB: faulting in fewer costs less than the downtime the writing adds).
const DRAIN_SHORTFALL: u64 = 2048;

/// Take one checkpoint of `dom` into `chain` (memory only: no disk snapshots).
pub fn checkpoint<D: Checkpointable + 'static>(
    dom: &Arc<D>,
    chain: &Chain,
    opts: &CaptureOptions,
) -> Result<CaptureReport, CaptureError> {
    let mut stop = SoloStop::new(dom.clone(), crate::disk::DiskPlan::default());
    checkpoint_with(dom, chain, opts, &mut stop)
}

/// Take one checkpoint of `dom` into `chain`, stopping it through `stop` (a [`SoloStop`] for
/// one domain, a group member's control for a group).
pub fn checkpoint_with<D: Checkpointable + 'static>(
    dom: &Arc<D>,
    chain: &Chain,
    opts: &CaptureOptions,
    stop: &mut dyn StopControl,
) -> Result<CaptureReport, CaptureError> {
    let started = Instant::now();
    let at_start = Usage::now();
    let info = dom.info()?;
    let manifest = chain.manifest()?;
    let plan = plan::plan(dom.as_ref(), chain, &info, &manifest, opts)?;
    dom.prepare_capture()?;
    // The spot-check sample the parent's commit kept (capture::spot).
    let kept_spot = match manifest.tracking {
        Some(t) if Some(t.since_layer) == plan.parent() => t.spot,
        _ => Vec::new(),
    };
    let mut run = Run::new(dom.clone(), chain, info, plan, opts, kept_spot);
    run.phases.prepare_ms = ms_since(started);
    run.marks.start = at_start;
    run.execute(started, stop)
        .map_err(|e| run.keep_dirty_bits(e))
}

/// State of one checkpoint run.
struct Run<'c, D: Checkpointable + 'static> {
    dom: Arc<D>,
    chain: &'c Chain,
    info: DomainInfo,
    plan: Plan,
    opts: &'c CaptureOptions,
    /// Every dirty bit fetched (and so cleared in the hypervisor) by this run.
    fetched: PfnBitmap,
    /// Bits fetched in the middle of a live round, owed to the next round.
    skip: SkipSet,
    /// A killed run's `in_flight` marker was found: leave it for a committed layer to clear.
    inherited_in_flight: bool,
    rounds: Vec<RoundReport>,
    /// The agent's free pages, less those dirtied since arming (`free`, `cache`).
    free: Option<crate::evict::FreeFilter>,
    /// Remarks of the eviction policies for the summary.
    evict_notes: Vec<String>,
    /// A `--no-live` run on a hypervisor without log-dirty for this guest: no dirty log at
    /// all; the paused round reads every pfn and the chain stays untracked.
    untracked: bool,
    /// Copies not yet encoded; superseded ones are dropped.
    hold: Holdback,
    /// Where the run's time went.
    phases: PhaseTimes,
    /// The process's usage at the phases' ends ([`PhaseUsage`]).
    marks: UsageMarks,
    /// The spot-check sample kept with the tracking state, if it belongs to the parent.
    kept_spot: Vec<crate::store::SpotPage>,
    /// A base's populated pfns, found before its first round ([`probe`]).
    probe: Option<probe::Probe>,
}

impl<'c, D: Checkpointable + 'static> Run<'c, D> {
    fn new(
        dom: Arc<D>,
        chain: &'c Chain,
        info: DomainInfo,
        plan: Plan,
        opts: &'c CaptureOptions,
        kept_spot: Vec<crate::store::SpotPage>,
    ) -> Self {
        let fetched = PfnBitmap::repeat(false, info.pfn_count as usize);
        let skip = SkipSet::new(info.pfn_count);
        let hold = Holdback::new(info.populated_pages, opts.frame_pages);
        Run {
            dom,
            chain,
            info,
            plan,
            opts,
            fetched,
            skip,
            inherited_in_flight: false,
            rounds: Vec::new(),
            free: None,
            evict_notes: Vec::new(),
            untracked: false,
            hold,
            phases: PhaseTimes::default(),
            marks: UsageMarks::default(),
            kept_spot,
            probe: None,
        }
    }

    fn clean(&mut self, into: &mut PfnBitmap) -> Result<u64, CaptureError> {
        if self.untracked {
            into.clear();
            into.resize(self.info.pfn_count as usize, false);
            return Ok(0);
        }
        let n = self.dom.logdirty_clean(into)?;
        self.fetched |= &*into;
        self.note_dirtied(into);
        Ok(n)
    }

    /// Bits fetched after arming: pages the agent's report no longer covers.
    fn note_dirtied(&mut self, bits: &PfnBitmap) {
        if let Some(f) = &mut self.free {
            f.note_dirty(bits);
        }
    }

    fn execute(
        &mut self,
        started: Instant,
        stop: &mut dyn StopControl,
    ) -> Result<CaptureReport, CaptureError> {
        let n = self.info.pfn_count as usize;
        let mut dirty = PfnBitmap::repeat(false, n);
        // `balloon`: the guest gives memory back before the copy, and gets it back once the
        // layer is written (the guard lives to the end of this function).
        let dom = self.dom.clone();
        let populated = move || {
            dom.info()
                .map(|i| i.populated_pages * 4)
                .map_err(|e| e.to_string())
        };
        let (balloon, note) = crate::evict::balloon_for_capture(&self.opts.evict, &populated);
        self.evict_notes.extend((!note.is_empty()).then_some(note));
        // From the first fetch-and-clear until the bits are stored (or kept as pending), a kill
        // would lose them: say so in the manifest, so the next run resyncs.
        self.mark_in_flight(true)?;
        // Arm tracking. For an incremental, the first fetch-and-clear is round 0's set; the
        // spot-check sample is read just before it.
        if let Err(e) = self.dom.logdirty_enable() {
            match e {
                HvError::LogDirtyUnsupported { reason, .. } if !self.opts.live => {
                    self.go_untracked(reason)
                }
                e => return Err(e.into()),
            }
        }
        let t = Instant::now();
        let sample = match &self.plan {
            Plan::Incremental { parent, .. } => {
                spot::differing(&*self.dom, self.chain, *parent, &self.kept_spot)?
            }
            _ => Vec::new(),
        };
        self.phases.spot_ms = ms_since(t);
        self.clean(&mut dirty)?;
        // Pages a failed run kept are round 0 too: they explain a sampled difference.
        if let Plan::Incremental {
            pending: Some(bits),
            ..
        } = &self.plan
        {
            dirty |= bits;
        }
        let lost = spot::unexplained(&sample, &dirty);
        if let (false, Plan::Incremental { id, parent, .. }) = (lost.is_empty(), &self.plan) {
            let reason = format!(
                "spot check: {} sampled pages differ from layer {parent} but were not reported \
                 dirty (first pfn {:#x}); the dirty log lost writes",
                lost.len(),
                lost[0]
            );
            self.plan = Plan::Resync {
                id: *id,
                parent: *parent,
                reason,
            };
        }
        // The layer's file (and the chain's directory, for a first layer); a plain layer on an
        // encrypted chain is refused here, before anything is kept in the directory.
        let writer = self.chain.begin_layer()?;
        // Tracking is armed: only now may the guest agent be asked (crate::evict). An
        // incremental copies at most round 0's set and what is dirtied later (never evicted):
        // the introspection need not look further.
        let t = Instant::now();
        let before_free = Usage::now();
        let scope = crate::evict::ScanScope {
            memo_dir: self.chain.key().is_none().then(|| self.chain.dir()),
            only: matches!(self.plan, Plan::Incremental { .. }).then_some(&dirty),
        };
        let (free, note) =
            crate::evict::free_pages(&self.opts.evict, &self.info, &*self.dom, &*self.dom, scope);
        self.phases.free_ms = ms_since(t);
        self.marks.free = Usage::now().since(before_free);
        self.free = free;
        self.evict_notes.extend((!note.is_empty()).then_some(note));
        let baseline = self.plan.baseline(self.chain)?;
        let index = LayerIndex::new(self.info.pfn_count);
        let opts = self.opts;
        self.phases.arm_ms = ms_since(started) - self.phases.free_ms;
        self.marks.armed = Usage::now();
        std::thread::scope(|s| {
            // The domain's config (`xl list -l` on Xen, slow there) is only needed at commit:
            // fetch it while round 0 runs.
            let dom = self.dom.clone();
            if balloon.is_some() {
                dom.config_changed();
            }
            let config_job = s.spawn(move || dom.config());
            let (mut pipe, mut builder) = Pipeline::start(
                s,
                writer,
                index,
                opts.frame_pages,
                opts.encoding(),
                opts.threads,
            );
            builder.keep_zero_pages(!opts.evict.set.zero);
            let held = self.precopy_and_stop(
                &mut pipe,
                &mut builder,
                &mut dirty,
                baseline.as_deref(),
                stop,
            )?;
            let (chunks, state, figures, why) = held;
            let t = Instant::now();
            let written = self.write_behind(pipe, builder, chunks).and_then(|out| {
                self.phases.write_behind_ms = ms_since(t);
                self.marks.written = Usage::now();
                let t = Instant::now();
                let config = config_job.join().unwrap_or_else(|_| {
                    Err(HvError::op(
                        self.chain.name(),
                        "domain config",
                        "thread died",
                    ))
                })?;
                // Fetched while ballooned down: libxl reported the capture's target.
                let config = match &balloon {
                    Some(g) => g.unballooned_config(config),
                    None => config,
                };
                let mut report = self.commit(out, state, config, figures, why, started)?;
                report.phases.commit_ms = ms_since(t);
                report.phase_usage = self.marks.phases(Usage::now());
                Ok(report)
            });
            if written.is_err() {
                stop.abandon();
            }
            written
        })
    }

    /// No log-dirty for this guest (`--no-live` only: a live run fails instead). Never
    /// silently: the layer becomes a resync (every page read under the pause, those equal to
    /// the chain dropped) and its notes say why.
    fn go_untracked(&mut self, reason: String) {
        self.untracked = true;
        if let Plan::Incremental { id, parent, .. } | Plan::Resync { id, parent, .. } = self.plan {
            self.plan = Plan::Resync {
                id,
                parent,
                reason: format!(
                    "paused checkpoint without log-dirty ({reason}): every page compared with the chain"
                ),
            };
        }
    }

    /// Send the backlog, then the chunks held in RAM during the stop, and finish the layer's
    /// frames.
    fn write_behind(
        &mut self,
        mut pipe: Pipeline<'_>,
        builder: ChunkBuilder,
        held: Vec<Chunk>,
    ) -> Result<pipeline::WriterOut, CaptureError> {
        self.hold
            .drain(&mut pipe)
            .map_err(|e| self.write_error(e))?;
        let (subject, task) = (self.info.identity.name.as_str(), Task::WriteBehind);
        let total: u64 = held.iter().map(Chunk::pages_covered).sum();
        report::start(subject, task, Some(total));
        for c in held {
            report::advance(subject, task, c.pages_covered());
            pipe.send(c).map_err(|e| self.write_error(e))?;
        }
        let out = pipe.finish(builder).map_err(|e| self.write_error(e));
        report::finish(subject, task, total);
        out
    }

    /// Live rounds, then the final round under stop. Returns the held final chunks, the
    /// state, the stop's figures and why pre-copy stopped.
    fn precopy_and_stop(
        &mut self,
        pipe: &mut Pipeline<'_>,
        builder: &mut ChunkBuilder,
        dirty: &mut PfnBitmap,
        baseline: Option<&dyn Baseline>,
        control: &mut dyn StopControl,
    ) -> Result<(Vec<Chunk>, Vec<StateBlob>, StopFigures, StopReason), CaptureError> {
        let (first, stop) = self.precopy(pipe, builder, dirty, baseline, &*control)?;
        let since_precopy = Instant::now();
        self.marks.precopied = Usage::now();
        // Buffers for the paused copy are faulted in while the guest still runs; the margin
        // covers what is dirtied between the last live fetch and the pause.
        let expect = if first && self.plan.full_scan() {
            // Only populated pages are copied: a PVH guest's space is mostly hole.
            self.info.populated_pages.min(self.info.pfn_count)
        } else {
            dirty.count_ones() as u64
        };
        let want = expect + expect / 4 + 256;
        // When the pool is far short of that, the backlog is written first, so that its
        // buffers are back in the pool for the paused copy: the fresh memory a run faults in (in
        // a PV dom0, each page through the hypervisor) is then the larger of the two, not their
        // sum. Only then: what the guest dirties while the backlog is written adds to the
        // paused round, i.e. to the downtime (a base's paused round needs thousands of pages
        // more than the pool has; an incremental's, a few hundred).
        if !self.hold.is_empty() && want.saturating_sub(builder.pooled_pages()) >= DRAIN_SHORTFALL {
            self.hold.drain(pipe).map_err(|e| self.write_error(e))?;
            pipe.wait_written().map_err(|e| self.write_error(e))?;
        }
        builder.reserve(want);
        // The paused fetch's bitmap too: its pages faulted in now, not under pause.
        let mut last = PfnBitmap::repeat(false, dirty.len());
        crate::guestmem::prefault(last.as_raw_mut_slice());
        // What saving the state needs is opened while the guest runs (an HVM guest's QEMU
        // session), and released once the stop is over, whatever its outcome.
        self.dom.ready_for_stop()?;
        // The stop: from here to resume is the guest's downtime.
        if let Err(e) = control.stop(self.chain.name(), self.plan.next_id()) {
            self.dom.stop_over();
            return Err(e);
        }
        let subject = self.info.identity.name.clone();
        emit(Event::Paused { subject: &subject });
        crate::failpoint::failpoint("capture.paused");
        let t = Instant::now();
        let last = self.final_round(builder, dirty, last, baseline, first);
        let figures = control.resume(last.is_ok());
        self.dom.stop_over();
        if let Ok(f) = &figures {
            emit(Event::Resumed {
                subject: &subject,
                downtime: f.downtime,
            });
        }
        self.phases.stopped_ms = ms_since(since_precopy);
        self.marks.resumed = Usage::now();
        let (held, state, pages, fetched) = last?;
        let figures = figures?;
        // Running again: the backlog's copies of what the paused round re-read are dead.
        self.hold.superseded(&fetched);
        self.round_done(true, pages, t);
        Ok((held, state, figures, stop))
    }

    /// Under stop: fetch-and-clear into `last` (empty, as long as `dirty`), copy the last
    /// dirty pages into RAM, save the state.
    fn final_round(
        &mut self,
        builder: &mut ChunkBuilder,
        dirty: &mut PfnBitmap,
        mut last: PfnBitmap,
        baseline: Option<&dyn Baseline>,
        first: bool,
    ) -> Result<(Vec<Chunk>, Vec<StateBlob>, u64, PfnBitmap), CaptureError> {
        let dom = self.dom.clone();
        let never = || false;
        if first {
            self.probe_base(builder, &never)?;
        }
        self.clean(&mut last)?;
        *dirty |= &last;
        let mut held = Vec::new();
        let mut hold = |c: Chunk| -> Result<(), CaptureError> {
            held.push(c);
            Ok(())
        };
        let rules = CopyRules {
            evict: self.free.as_ref(),
            ..self.rules(first, baseline)
        };
        let mut pfigs = CopyFigures::default();
        let all = first && self.plan.full_scan();
        let found = self.probe.as_ref().map(|p| &p.populated);
        let set = round_set(all, found, self.info.pfn_count, dirty);
        copy_pfns(
            &*dom, set, builder, rules, &mut pfigs, &mut hold, &never, None,
        )?;
        let state = dom.save_state()?;
        Ok((held, state, pfigs.pages, last))
    }

    /// Live rounds until the policy says stop. Returns whether no round ran (the final round
    /// is then the first) and why pre-copy stopped.
    fn precopy(
        &mut self,
        pipe: &mut Pipeline<'_>,
        builder: &mut ChunkBuilder,
        dirty: &mut PfnBitmap,
        baseline: Option<&dyn Baseline>,
        control: &dyn StopControl,
    ) -> Result<(bool, StopReason), CaptureError> {
        let dom = self.dom.clone();
        let mut figs = CopyFigures::default();
        let mut progress = Progress::default();
        let interrupted = || pause::interrupted() || control.aborted();
        let full_scan = self.plan.full_scan();
        let mut stop = StopReason::NotLive;
        let mut first = true;
        if self.opts.live && self.opts.policy.max_rounds > 0 {
            self.probe_base(builder, &interrupted)?;
            loop {
                let t = Instant::now();
                let before = figs.pages;
                let rules = CopyRules {
                    evict: self.free.as_ref(),
                    ..self.rules(first, baseline)
                };
                let name = self.info.identity.name.clone();
                let round = progress.rounds;
                let task = Task::Round(round);
                let total = Some(if first && full_scan {
                    let probed = self.probe.as_ref().map(|p| p.report.populated);
                    probed.unwrap_or(self.info.pfn_count)
                } else {
                    dirty.count_ones() as u64
                });
                report::start(&name, task, total);
                let mut sink = HeldSink {
                    hold: &mut self.hold,
                    pipe,
                    domain: &self.info.identity.name,
                    task,
                };
                let skip = Some(&mut self.skip);
                let all = first && full_scan;
                let found = self.probe.as_ref().map(|p| &p.populated);
                let set = round_set(all, found, self.info.pfn_count, dirty);
                let copied = copy_pfns(
                    &*dom,
                    set,
                    builder,
                    rules,
                    &mut figs,
                    &mut sink,
                    &interrupted,
                    skip,
                );
                // Bits fetched mid-round are owed to the next round, failure or not.
                self.fetched |= &self.skip.bits;
                if let Some(f) = &mut self.free {
                    f.note_dirty(&self.skip.bits);
                }
                copied?;
                first = false;
                progress.rounds += 1;
                self.round_done(false, figs.pages - before, t);
                report::finish(&name, task, figs.pages - before);
                builder.clock().time(Stage::Log, || {
                    self.clean(dirty)?;
                    self.hold.superseded(dirty);
                    *dirty |= &self.skip.bits;
                    self.skip.bits.fill(false);
                    Ok::<_, CaptureError>(())
                })?;
                let n = dirty.count_ones() as u64;
                let rate = n as f64 / t.elapsed().as_secs_f64().max(1e-6);
                emit(Event::Dirty {
                    subject: &name,
                    round,
                    dirty: n,
                    rate,
                });
                if let Decision::Stop(why) = self.opts.policy.decide(&mut progress, n, figs.rate())
                {
                    stop = why;
                    break;
                }
            }
        }
        Ok((first, stop))
    }

    /// How a round treats what it copies. Only the first round of a base skips recording
    /// unpopulated pfns (uncovered means unpopulated there). Only the first, full round of a
    /// resync drops pages equal to the chain: a later round re-sends pages this layer may
    /// already hold an older copy of, so each must be stored even if it equals the chain.
    fn rules<'b>(&self, first: bool, baseline: Option<&'b dyn Baseline>) -> CopyRules<'b> {
        CopyRules {
            record_unpopulated: !(first && matches!(self.plan, Plan::Base { .. })),
            baseline: if first { baseline } else { None },
            evict: None,
            probed: first && self.probe.is_some(),
        }
    }

    fn round_done(&mut self, paused: bool, pages: u64, t: Instant) {
        let round = self.rounds.len() as u32;
        self.rounds.push(RoundReport {
            round,
            paused,
            pages,
            ms: t.elapsed().as_secs_f64() * 1e3,
        });
    }

    fn write_error(&self, source: LayerWriteError) -> CaptureError {
        CaptureError::Write {
            domain: self.info.identity.name.clone(),
            source,
        }
    }
}

/// Milliseconds since `t`.
fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
