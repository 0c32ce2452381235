//! Conformance checks for the hypervisor traits, written once and generic over the traits.
//!
//! The sim's tests run them now; the Xen back-end runs them on a real domain in the test bed
//! (through a hidden CLI verb). Checks are split by what they need:
//!
//! * observe-only, safe on a running real guest: [`check_pause`], [`check_map`],
//!   [`check_logdirty`], [`check_precopy`];
//! * needing a writer the check controls ([`PageWriter`], the sim only):
//!   [`check_logdirty_exact`].
//!
//! Each returns a [`SuiteReport`] of what passed, or the first failure as text.

use crate::backend::sim::{page_digest, SimDomain, UNPOPULATED_DIGEST};
use crate::hv::{DirtyLog, Domain, GuestMemory, PageType, Pfn, PfnBitmap, PAGE_SIZE};

/// Pfns per page-types / map call.
const BATCH: usize = 512;

/// The digest given to a frame that is populated but cannot be read (broken, map error).
const UNREADABLE_DIGEST: u64 = 0x554e_5245_4144_4142;

/// What a check verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteReport {
    /// The check's name.
    pub name: String,
    /// One line per verified property.
    pub passed: Vec<String>,
    /// Observations that are not pass/fail (counts, back-end differences).
    pub notes: Vec<String>,
}

impl SuiteReport {
    fn new(name: &str) -> Self {
        SuiteReport {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn pass(&mut self, what: impl Into<String>) {
        self.passed.push(what.into());
    }

    fn ensure(&mut self, ok: bool, what: impl Into<String>) -> Result<(), String> {
        let what = what.into();
        if ok {
            self.passed.push(what);
            Ok(())
        } else {
            Err(format!("{}: FAILED: {what}", self.name))
        }
    }
}

/// A writer the check controls: write one page of guest memory and have it tracked like a guest
/// write (so a real guest, which cannot be written from outside, does not implement it).
pub trait PageWriter {
    /// Write `data` (4096 bytes) to populated `pfn`.
    fn write_page(&self, pfn: Pfn, data: &[u8]) -> Result<(), String>;
}

impl PageWriter for SimDomain {
    fn write_page(&self, pfn: Pfn, data: &[u8]) -> Result<(), String> {
        SimDomain::write_page(self, pfn, data).map_err(|e| e.to_string())
    }
}

fn hv<T>(what: &str, r: Result<T, crate::hv::HvError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Nested pause and unpause, seen through `info().paused`. Leaves the domain as it found it
/// (unpaused is expected).
pub fn check_pause<D: Domain + ?Sized>(d: &D) -> Result<SuiteReport, String> {
    let mut r = SuiteReport::new("pause");
    r.ensure(
        !hv("info", d.info())?.paused,
        "domain is running at the start",
    )?;
    hv("pause", d.pause())?;
    let once = hv("info", d.info())?.paused;
    let nested = hv("pause", d.pause()).and_then(|()| {
        let twice = hv("info", d.info())?.paused;
        hv("unpause", d.unpause())?;
        Ok((twice, hv("info", d.info())?.paused))
    });
    let last = hv("unpause", d.unpause());
    let (twice, after_one) = nested?;
    last?;
    r.ensure(once, "paused after one pause")?;
    r.ensure(twice, "paused after a nested pause")?;
    r.ensure(after_one, "still paused after one of two unpauses")?;
    r.ensure(
        !hv("info", d.info())?.paused,
        "running after the last unpause",
    )?;
    Ok(r)
}

/// Xen's own pages in a guest's physmap (shared info, grant-table frames) are typed XTAB
/// (`XEN_DOMCTL_getpageframeinfo3` answers so for every special page), yet a foreign map of
/// them succeeds. The capture skips them by type as libxc's save does; the guest sets them up
/// again when it resumes. A handful per guest: more than this many is a disagreement.
pub const MAPPABLE_SPECIAL_MAX: u64 = 128;

/// Page types cover the pfn space and agree with mapping: normal frames map and read,
/// unpopulated ones fail with an errno (except at most [`MAPPABLE_SPECIAL_MAX`] special pages).
pub fn check_map<D: GuestMemory + ?Sized>(d: &D) -> Result<SuiteReport, String> {
    let mut r = SuiteReport::new("map");
    let info = hv("info", d.info())?;
    let (mut normal, mut holes, mut other, mut special) = (0u64, 0u64, 0u64, Vec::new());
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut types = vec![PageType::Unpopulated; BATCH];
    let mut start = 0;
    while start < info.pfn_count {
        let pfns: Vec<Pfn> = (start..(start + BATCH as u64).min(info.pfn_count)).collect();
        let types = &mut types[..pfns.len()];
        hv("page types", d.page_types(&pfns, types))?;
        let batch = hv("map", d.map_batch(&pfns))?;
        if batch.len() != pfns.len() {
            return Err(format!(
                "map: batch of {} frames has length {}",
                pfns.len(),
                batch.len()
            ));
        }
        for (i, t) in types.iter().enumerate() {
            let page = batch.page(i);
            match t {
                PageType::Normal => {
                    normal += 1;
                    let p = page.map_err(|e| {
                        format!("map: normal pfn {:#x} failed with errno {e}", pfns[i])
                    })?;
                    p.copy_to(&mut buf);
                }
                PageType::Unpopulated => {
                    holes += 1;
                    if page.is_ok() {
                        special.push(pfns[i]);
                    }
                }
                _ => other += 1,
            }
        }
        start += pfns.len() as u64;
    }
    if special.len() as u64 > MAPPABLE_SPECIAL_MAX {
        return Err(format!(
            "map: {} frames typed unpopulated mapped (first {:#x}), more than the {} special \
             pages a guest has",
            special.len(),
            special[0],
            MAPPABLE_SPECIAL_MAX
        ));
    }
    r.pass(
        "every normal frame maps and reads; unpopulated frames do not map, but for special pages",
    );
    r.notes.push(format!(
        "{normal} normal, {holes} unpopulated, {other} other frames; {} typed unpopulated but \
         mapped (Xen's special pages): {:x?}",
        special.len(),
        &special[..special.len().min(8)]
    ));
    r.notes
        .push(format!("info().populated_pages = {}", info.populated_pages));
    Ok(r)
}

/// Log-dirty on a running guest: enable (twice), CLEAN shape, a CLEAN while paused, disable.
/// Leaves log-dirty off.
pub fn check_logdirty<D: DirtyLog + ?Sized>(d: &D) -> Result<SuiteReport, String> {
    let mut r = SuiteReport::new("logdirty");
    let pfn_count = hv("info", d.info())?.pfn_count;
    hv("enable", d.logdirty_enable())?;
    r.ensure(hv("enabled", d.logdirty_enabled())?, "enabled after enable")?;
    hv("enable again", d.logdirty_enable())?;
    r.pass("enabling when already enabled succeeds");
    let mut bits = PfnBitmap::new();
    let n = hv("CLEAN", d.logdirty_clean(&mut bits))?;
    r.ensure(
        bits.len() as u64 == pfn_count,
        "CLEAN bitmap has pfn_count bits",
    )?;
    r.ensure(
        bits.count_ones() as u64 == n,
        "CLEAN count equals the bits set",
    )?;
    hv("pause", d.pause())?;
    let first = hv("CLEAN", d.logdirty_clean(&mut bits));
    let second = hv("CLEAN", d.logdirty_clean(&mut bits));
    hv("unpause", d.unpause())?;
    let (first, second) = (first?, second?);
    r.notes.push(format!(
        "paused: first CLEAN {first} pages, second {second}"
    ));
    hv("disable", d.logdirty_disable())?;
    r.ensure(
        !hv("enabled", d.logdirty_enabled())?,
        "disabled after disable",
    )?;
    Ok(r)
}

/// The digest of every pfn in `pfns` as read now (holes and unreadable frames get markers).
fn digest_pfns<D: GuestMemory + ?Sized>(
    d: &D,
    pfns: &[Pfn],
    out: &mut [u64],
) -> Result<(), String> {
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut types = vec![PageType::Unpopulated; BATCH];
    let mut readable = Vec::with_capacity(BATCH);
    for chunk in pfns.chunks(BATCH) {
        let types = &mut types[..chunk.len()];
        hv("page types", d.page_types(chunk, types))?;
        // Only frames with a page are mapped: most of an HVM guest's pfn space is holes, and
        // mapping them (to be told they are not there) was most of the suite's time on Xen.
        readable.clear();
        for (&pfn, &t) in chunk.iter().zip(types.iter()) {
            match t {
                PageType::Unpopulated => out[pfn as usize] = UNPOPULATED_DIGEST,
                PageType::Broken => out[pfn as usize] = UNREADABLE_DIGEST,
                _ => readable.push(pfn),
            }
        }
        if readable.is_empty() {
            continue;
        }
        let batch = hv("map", d.map_batch(&readable))?;
        for (i, &pfn) in readable.iter().enumerate() {
            out[pfn as usize] = match batch.page(i) {
                Err(_) => UNREADABLE_DIGEST,
                Ok(p) => {
                    p.copy_to(&mut buf);
                    page_digest(&buf)
                }
            };
        }
    }
    Ok(())
}

/// The capture engine's core property on a live guest: enable log-dirty, copy every page, run
/// `rounds` of CLEAN + copy-the-dirty-pages while the guest runs, then pause, CLEAN, copy the
/// rest, and check (still paused) that the copy equals memory exactly. "Copies" are digests.
/// Leaves log-dirty off and the domain running.
pub fn check_precopy<D: DirtyLog + GuestMemory + ?Sized>(
    d: &D,
    rounds: u32,
) -> Result<SuiteReport, String> {
    let mut r = SuiteReport::new("precopy");
    let pfn_count = hv("info", d.info())?.pfn_count;
    let all: Vec<Pfn> = (0..pfn_count).collect();
    let mut copy = vec![0u64; pfn_count as usize];
    let mut bits = PfnBitmap::new();
    hv("enable", d.logdirty_enable())?;
    hv("CLEAN", d.logdirty_clean(&mut bits))?;
    digest_pfns(d, &all, &mut copy)?;
    let mut sent = Vec::new();
    for _ in 0..rounds {
        hv("CLEAN", d.logdirty_clean(&mut bits))?;
        let dirty: Vec<Pfn> = bits.iter_ones().map(|i| i as Pfn).collect();
        digest_pfns(d, &dirty, &mut copy)?;
        sent.push(dirty.len());
    }
    hv("pause", d.pause())?;
    let verdict = (|| {
        hv("CLEAN", d.logdirty_clean(&mut bits))?;
        let dirty: Vec<Pfn> = bits.iter_ones().map(|i| i as Pfn).collect();
        digest_pfns(d, &dirty, &mut copy)?;
        sent.push(dirty.len());
        let mut now = vec![0u64; pfn_count as usize];
        digest_pfns(d, &all, &mut now)?;
        Ok::<_, String>(now)
    })();
    let unpaused = hv("unpause", d.unpause());
    let disabled = hv("disable", d.logdirty_disable());
    let now = verdict?;
    unpaused?;
    disabled?;
    let lost: Vec<usize> = (0..now.len()).filter(|&i| now[i] != copy[i]).collect();
    r.notes.push(format!(
        "pages copied per round (last one paused): {sent:?}"
    ));
    r.ensure(
        lost.is_empty(),
        format!(
            "copy equals memory after the paused round ({} pfns differ, first {:?})",
            lost.len(),
            lost.first()
        ),
    )?;
    Ok(r)
}

/// Exact log-dirty semantics with a controlled writer and no other writer running: every page
/// written after enable is in exactly the next CLEAN, CLEAN clears, a page written twice counts
/// once, writes while off are not tracked, and enable starts from an empty bitmap.
pub fn check_logdirty_exact<D: DirtyLog + GuestMemory + PageWriter + ?Sized>(
    d: &D,
) -> Result<SuiteReport, String> {
    let mut r = SuiteReport::new("logdirty-exact");
    let pfn_count = hv("info", d.info())?.pfn_count;
    let pfns: Vec<Pfn> = (0..pfn_count).collect();
    let mut types = vec![PageType::Unpopulated; pfns.len()];
    hv("page types", d.page_types(&pfns, &mut types))?;
    let normal: Vec<Pfn> = pfns
        .iter()
        .copied()
        .filter(|&p| types[p as usize] == PageType::Normal)
        .collect();
    if normal.len() < 8 {
        return Err("logdirty-exact: needs at least 8 populated pages".into());
    }
    let picks: Vec<Pfn> = normal
        .iter()
        .copied()
        .step_by((normal.len() / 7).max(1))
        .take(7)
        .collect();
    let page = |tag: u8| vec![tag; PAGE_SIZE];
    let mut bits = PfnBitmap::new();

    hv("disable", d.logdirty_disable())?;
    d.write_page(picks[0], &page(1))?;
    hv("enable", d.logdirty_enable())?;
    let n = hv("CLEAN", d.logdirty_clean(&mut bits))?;
    r.ensure(
        n == 0 && bits.not_any(),
        "enable starts from an empty bitmap; writes while off are not tracked",
    )?;

    for (i, &p) in picks.iter().enumerate() {
        d.write_page(p, &page(10 + i as u8))?;
    }
    d.write_page(picks[0], &page(99))?;
    hv("enable again", d.logdirty_enable())?;
    let n = hv("CLEAN", d.logdirty_clean(&mut bits))?;
    let got: Vec<Pfn> = bits.iter_ones().map(|i| i as Pfn).collect();
    let mut want = picks.clone();
    want.sort_unstable();
    want.dedup();
    r.ensure(
        got == want && n == want.len() as u64,
        format!("CLEAN reports exactly the {} written pages", want.len()),
    )?;
    r.pass("enable while enabled keeps the bitmap");
    let n = hv("CLEAN", d.logdirty_clean(&mut bits))?;
    r.ensure(n == 0 && bits.not_any(), "CLEAN clears the bitmap")?;

    d.write_page(picks[1], &page(7))?;
    hv("disable", d.logdirty_disable())?;
    r.ensure(!hv("enabled", d.logdirty_enabled())?, "disabled")?;
    r.ensure(
        d.logdirty_clean(&mut bits).is_err(),
        "CLEAN fails while log-dirty is off",
    )?;
    hv("enable", d.logdirty_enable())?;
    let n = hv("CLEAN", d.logdirty_clean(&mut bits))?;
    r.ensure(n == 0, "disable drops pending dirty bits")?;
    hv("disable", d.logdirty_disable())?;
    Ok(r)
}

impl std::fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: ok", self.name)?;
        for p in &self.passed {
            writeln!(f, "  pass: {p}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// Every observe-only check, in order (pause, map, log-dirty, pre-copy with `rounds` rounds):
/// what the Xen back-end runs on a live domain. Stops at the first failure.
pub fn run_observe<D: DirtyLog + GuestMemory + ?Sized>(
    d: &D,
    rounds: u32,
) -> Result<Vec<SuiteReport>, String> {
    Ok(vec![
        check_pause(d)?,
        check_map(d)?,
        check_logdirty(d)?,
        check_precopy(d, rounds)?,
    ])
}

/// [`check_logdirty_exact`] (no other writer may run meanwhile), then [`run_observe`].
pub fn run_with_writer<D: DirtyLog + GuestMemory + PageWriter + ?Sized>(
    d: &D,
    rounds: u32,
) -> Result<Vec<SuiteReport>, String> {
    let mut reports = vec![check_logdirty_exact(d)?];
    reports.extend(run_observe(d, rounds)?);
    Ok(reports)
}
