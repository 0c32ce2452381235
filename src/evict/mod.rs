//! Page eviction: pages a checkpoint need not store, and by which policy.
//!
//! ```text
//! --evict zero,unpopulated,free,cache,balloon
//!   zero         all-zero pages become index bits, never data (capture/copy)
//!   unpopulated  frames Xen reports unpopulated are skipped by page type (always on)
//!   free         the guest agent reports the pages free in its allocator   -> Evicted(Free)
//!   cache        the agent drops clean page cache first; pages freed by it -> Evicted(Cache)
//!   balloon      the guest balloons down to used + margin for the capture  -> unpopulated
//! ```
//!
//! The rule that keeps `free`/`cache` correct: log-dirty is armed (the run's first
//! fetch-and-clear) *before* the agent is asked, and a page is evicted only if the report says
//! it is free **and** no fetch-and-clear since arming reported it dirty ([`FreeFilter`]). A page
//! the guest allocates and writes after the report is dirty, so a later round (at the latest
//! the paused one) stores its data over the eviction. Free pages restore as zeros.
//!
//! No agent, or no answer in time: the capture goes on with the other policies and says why
//! in the layer's notes.

pub mod agent;
pub mod balloon;
pub mod filter;
pub mod memo;
pub mod policy;
pub mod runs;
pub mod vmi;

pub use agent::{AgentError, AgentReply, AgentRequest, GuestAgent, GuestMemInfo};
pub use balloon::{BalloonError, BalloonGuard, BalloonTarget};
pub use filter::FreeFilter;
pub use policy::{EvictSet, ParseEvictError};

use crate::hv::{hvm_save, state_kind};

use std::sync::Arc;
use std::time::Duration;

/// How a checkpoint evicts pages.
#[derive(Clone)]
pub struct EvictOptions {
    /// The policies asked for.
    pub set: EvictSet,
    /// The guest agent (for `free` and `cache`), if the back-end has a way to reach one.
    pub agent: Option<Arc<dyn GuestAgent>>,
    /// How long to wait for the agent's answer.
    pub agent_timeout: Duration,
    /// The guest's balloon target (for `balloon`), if the back-end has one.
    pub balloon: Option<Arc<dyn BalloonTarget>>,
    /// How long the guest may take to come down to the balloon target.
    pub balloon_timeout: Duration,
    /// The guest kernel's profile (`--guest-profile`): `free` by introspection when no agent
    /// answers ([`vmi`]).
    pub guest_profile: Option<Arc<vmi::Profile>>,
    /// Bounds of the introspection.
    pub vmi_limits: vmi::Limits,
}

impl Default for EvictOptions {
    fn default() -> Self {
        EvictOptions {
            set: EvictSet::default(),
            agent: None,
            agent_timeout: Duration::from_secs(3),
            balloon: None,
            balloon_timeout: Duration::from_secs(20),
            guest_profile: None,
            vmi_limits: vmi::Limits::default(),
        }
    }
}

impl std::fmt::Debug for EvictOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictOptions")
            .field("set", &self.set)
            .field("agent", &self.agent.is_some())
            .field("agent_timeout", &self.agent_timeout)
            .field("balloon", &self.balloon.is_some())
            .field(
                "guest_profile",
                &self.guest_profile.as_ref().map(|p| &p.source),
            )
            .finish()
    }
}

/// Ask the guest agent for its free pages, right after log-dirty was armed. Returns the filter
/// the copy path consults (None: nothing to evict this way) and a note for the summary. Never
/// fails the capture: without an answer, the other policies still apply.
pub fn ask_agent(opts: &EvictOptions, pfn_count: u64) -> (Option<FreeFilter>, String) {
    let set = &opts.set;
    if !set.free && !set.cache {
        return (None, String::new());
    }
    match agent_report(opts, pfn_count) {
        Ok((filter, note)) => (Some(filter), note),
        Err(why) => (None, format!("{}: skipped, {why}", agent_policies(set))),
    }
}

fn agent_policies(set: &EvictSet) -> &'static str {
    if set.cache {
        "free,cache"
    } else {
        "free"
    }
}

/// The agent's report as a filter and its note, or why there is none.
fn agent_report(opts: &EvictOptions, pfn_count: u64) -> Result<(FreeFilter, String), String> {
    let set = &opts.set;
    let what = agent_policies(set);
    let Some(agent) = &opts.agent else {
        return Err("this back-end has no guest agent".into());
    };
    let req = AgentRequest {
        drop_cache: set.cache,
    };
    let reply = agent
        .report(req, opts.agent_timeout)
        .map_err(|e| e.to_string())?;
    let filter = FreeFilter::new(pfn_count, &reply);
    let note = format!(
        "{what}: the guest agent reported {} free pages{} (guest used {} KiB of {} KiB{})",
        filter.count(crate::layer::EvictPolicy::Free),
        if set.cache {
            format!(
                " and {} freed by dropping clean page cache",
                filter.count(crate::layer::EvictPolicy::Cache)
            )
        } else {
            String::new()
        },
        reply.mem.used_kib(),
        reply.mem.total_kib,
        match reply.mem_after_drop {
            Some(m) => format!(", {} KiB after dropping cache", m.used_kib()),
            None => String::new(),
        }
    );
    Ok((filter, note))
}

/// What one capture's introspection may reuse and needs to cover.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanScope<'a> {
    /// Where the kernel found is kept between checkpoints ([`memo`]; the chain's directory),
    /// if anywhere.
    pub memo_dir: Option<&'a std::path::Path>,
    /// The pfns the capture can copy, if not all of them (an incremental's first dirty set:
    /// a page dirtied later is not evicted anyway, [`FreeFilter::note_dirty`]).
    pub only: Option<&'a crate::hv::PfnBitmap>,
}

/// The free pages for the copy path, right after log-dirty was armed: the agent's report if it
/// answers (first choice: the guest's own view, with its memory figures), otherwise, for
/// `free`, the introspection of the guest's memory ([`vmi`]), with the kernel's symbols from
/// `--guest-profile`, else the kernel an earlier checkpoint found (`scope.memo_dir`), else the
/// guest's own kallsyms. Never fails the capture.
pub fn free_pages(
    opts: &EvictOptions,
    info: &crate::hv::DomainInfo,
    mem: &dyn crate::hv::GuestMemory,
    state: &dyn crate::hv::MachineState,
    scope: ScanScope<'_>,
) -> (Option<FreeFilter>, String) {
    if !opts.set.free {
        return ask_agent(opts, info.pfn_count);
    }
    let why = match agent_report(opts, info.pfn_count) {
        Ok((filter, note)) => return (Some(filter), note),
        Err(why) => why,
    };
    let cache = if opts.set.cache {
        "; cache: skipped, dropping the guest's page cache needs xckpt-agent"
    } else {
        ""
    };
    let how = match opts.guest_profile.as_deref() {
        Some(p) => format!("introspection with {}", p.source),
        None => "introspection".to_string(),
    };
    let found = if info.guest_type == crate::hv::GuestType::Pv {
        Err("it reads PVH and HVM guests only".to_string())
    } else {
        introspect(opts, info, mem, state, scope)
    };
    match found {
        Ok(f) => {
            let reply = AgentReply {
                free: f.scan.runs.clone(),
                ..Default::default()
            };
            let skipped = match f.scan.skipped {
                0 => String::new(),
                n => format!(", {n} pfns outside the pages to copy not read"),
            };
            let note = format!(
                "free: by introspection of {} ({}): {} free pages in {} blocks ({} cut to their head, {} changing while read), {} guest pages read in {} ms{skipped} (agent: {why}){cache}",
                f.kernel,
                f.source,
                f.scan.pages,
                f.scan.blocks,
                f.scan.cut,
                f.scan.unsettled,
                f.pages_read,
                f.took.as_millis(),
            );
            (Some(FreeFilter::new(info.pfn_count, &reply)), note)
        }
        Err(e) => (
            None,
            format!("free: skipped, {why}; {how}: {e}; every page stored{cache}"),
        ),
    }
}

/// The introspection: with the profile, else with the kernel kept from an earlier checkpoint
/// (if it is still there), else with the guest's own kallsyms; the kernel found is kept for
/// the next checkpoint.
fn introspect(
    opts: &EvictOptions,
    info: &crate::hv::DomainInfo,
    mem: &dyn crate::hv::GuestMemory,
    state: &dyn crate::hv::MachineState,
    scope: ScanScope<'_>,
) -> Result<vmi::FreeScan, String> {
    let phys = vmi::HvMem {
        dom: mem,
        frames: info.pfn_count,
    };
    let scan = |s: vmi::Symbols<'_>| {
        vmi::find_free(&phys, s, opts.vmi_limits, scope.only).map_err(|e| e.to_string())
    };
    if let Some(p) = opts.guest_profile.as_deref() {
        return scan(vmi::Symbols::Profile(p));
    }
    if let Some(dir) = scope.memo_dir {
        if let Some(k) = memo::load(dir) {
            match scan(vmi::Symbols::Known(&k)) {
                Ok(f) => return Ok(f),
                // Searched for again below; a kernel found there is kept instead.
                Err(_) => memo::forget(dir),
            }
        }
    }
    let f = scan(vmi::Symbols::Guest {
        cr3: vcpu0_cr3(state)?,
    })?;
    if let Some(dir) = scope.memo_dir {
        // Without the memo the next checkpoint only searches again.
        let _ = memo::save(dir, &f.known);
    }
    Ok(f)
}

/// Balloon the guest down for the capture (`balloon`): the guest's own used figure comes from
/// the agent. Returns the guard that gives the memory back, and a note. Never fails the
/// capture: without the agent, a target, or in time, the capture goes on without it.
pub fn balloon_for_capture<'a>(
    opts: &'a EvictOptions,
    populated_kib: &dyn Fn() -> Result<u64, String>,
) -> (Option<BalloonGuard<'a>>, String) {
    if !opts.set.balloon {
        return (None, String::new());
    }
    let Some(target) = opts.balloon.as_deref() else {
        return (
            None,
            "balloon: skipped, this back-end has no balloon".into(),
        );
    };
    let Some(agent) = &opts.agent else {
        return (
            None,
            "balloon: skipped, the guest's own memory figures need xckpt-agent".into(),
        );
    };
    let used = match agent.report(AgentRequest { drop_cache: false }, opts.agent_timeout) {
        Ok(r) => r.mem.used_kib(),
        Err(e) => return (None, format!("balloon: skipped, {e}")),
    };
    let t0 = std::time::Instant::now();
    match balloon::balloon_down(target, used, populated_kib, opts.balloon_timeout) {
        Ok(Some(g)) => {
            let note = format!(
                "balloon: guest used {used} KiB; target {} KiB reached ({} KiB populated) in {:.1} s, given back after the capture",
                g.new_kib,
                g.reached_kib,
                t0.elapsed().as_secs_f64()
            );
            (Some(g), note)
        }
        Ok(None) => (
            None,
            format!("balloon: skipped, the guest is already within used ({used} KiB) plus margin"),
        ),
        Err(e) => (None, format!("balloon: aborted, {e}")),
    }
}

/// vCPU 0's `cr3`, from the domain's HVM save area.
fn vcpu0_cr3(state: &dyn crate::hv::MachineState) -> Result<u64, String> {
    let blobs = state
        .cpu_state()
        .map_err(|e| format!("reading vCPU state: {e}"))?;
    blobs
        .iter()
        .find(|b| b.kind == state_kind::HVM_CONTEXT)
        .and_then(|b| hvm_save::cpu_cr3(&b.data, 0))
        .ok_or_else(|| "the domain's state has no vCPU 0 cr3 to find the kernel by".to_string())
}
