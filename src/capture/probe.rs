//! The pfns a base's first round reads: the populated ones, found without asking the type of
//! every pfn of a sparse space.
//!
//! A PVH or HVM guest's pfn space runs to its highest mapped frame, not to its memory: the test
//! bed's 256 MiB PVH guest has 1,044,480 pfns, of which about 65,500 are populated (its RAM from
//! pfn 0, a few special pages just below 4 GiB). Asking the type of each pfn
//! (`XEN_DOMCTL_getpageframeinfo3`, 1,024 a call) cost 1.1-2.3 CPU s of such a base under
//! emulation, a quarter of it, and `xl save` pays the same (libxc asks every pfn below
//! `max_gpfn + 1`).
//!
//! The hypervisor counts the pages a domain owns, and a pfn's type says populated only for a
//! page the domain owns and Xen counts (its own pages the guest maps, grant table frames and
//! shared info, read as unpopulated). So the probe asks from both ends of the space, a batch at
//! a time, the turn going to the end whose batches keep finding pages, and stops when the pages
//! found equal that count, read again at that moment: what was left unasked holds no page. Where
//! the count is never met exactly (pages Xen counts that the guest has not mapped, pages shared
//! or paged out, which the back-end then does not count, a balloon moving), every pfn is asked,
//! as before.
//!
//! The probe runs with log-dirty armed: a page populated after its pfn was asked, and written
//! before the stop, is read by a later round, as with the full scan (and libxc's).

use std::time::Instant;

use super::copy::MAP_BATCH;
use super::{CaptureError, Plan, Run};
use crate::hv::{Checkpointable, GuestType, PageType, Pfn, PfnBitmap};
use crate::layer::encode::Stage;
use crate::layer::pipeline::ChunkBuilder;

/// What the probe of a base's first round found (`checkpoint --json`'s `probe`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProbeReport {
    /// Pfns in the space.
    pub pfns: u64,
    /// Pfns whose type was asked.
    pub asked: u64,
    /// Of them, populated: what the round reads.
    pub populated: u64,
    /// Whether the probe stopped on the hypervisor's count, leaving `pfns - asked` unasked.
    pub counted: bool,
    /// Wall time, ms.
    pub ms: f64,
}

/// The populated pfns, and how they were found.
pub struct Probe {
    /// Bit `i` set when pfn `i` was found populated.
    pub populated: PfnBitmap,
    /// The figures.
    pub report: ProbeReport,
}

/// Whether a space of `pfn_count` pfns holding `populated` pages is worth probing: at least half
/// of it a hole. A dense space gains nothing from it, and keeps the plain walk.
pub fn worth_probing(pfn_count: u64, populated: u64) -> bool {
    pfn_count >= populated.max(MAP_BATCH as u64).saturating_mul(2)
}

/// Find the populated pfns of a space of `pfn_count`. `ask` gives the type of each pfn of a
/// batch; `count` the hypervisor's count of the pages `ask` reports populated, if the back-end
/// knows it exactly.
pub fn probe(
    pfn_count: u64,
    mut count: impl FnMut() -> Result<Option<u64>, CaptureError>,
    mut ask: impl FnMut(&[Pfn], &mut [PageType]) -> Result<(), CaptureError>,
) -> Result<Probe, CaptureError> {
    let t = Instant::now();
    let mut populated = PfnBitmap::repeat(false, pfn_count as usize);
    let mut target = count()?;
    // Asked so far: [0, lo) and [hi, pfn_count).
    let (mut lo, mut hi) = (0u64, pfn_count);
    // Batches in a row that found nothing, per end (bottom, top), and the end asked last.
    let mut idle = [0u32; 2];
    let mut last = 1;
    let mut found = 0u64;
    let mut counted = false;
    let mut batch: Vec<Pfn> = Vec::with_capacity(MAP_BATCH);
    let mut types = vec![PageType::Unpopulated; MAP_BATCH];
    while lo < hi {
        let end = match idle[0].cmp(&idle[1]) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Greater => 1,
            std::cmp::Ordering::Equal => 1 - last,
        };
        let range = if end == 0 {
            lo..(lo + MAP_BATCH as u64).min(hi)
        } else {
            hi.saturating_sub(MAP_BATCH as u64).max(lo)..hi
        };
        batch.clear();
        batch.extend(range.clone());
        let types = &mut types[..batch.len()];
        ask(&batch, types)?;
        let mut here = 0;
        for (&pfn, ty) in batch.iter().zip(types.iter()) {
            if matches!(ty, PageType::Normal | PageType::Other(_)) {
                populated.set(pfn as usize, true);
                here += 1;
            }
        }
        found += here;
        if end == 0 {
            lo = range.end;
        } else {
            hi = range.start;
        }
        idle[end] = if here > 0 {
            0
        } else {
            idle[end].saturating_add(1)
        };
        last = end;
        if target == Some(found) && lo < hi {
            // Read again: a balloon may have moved pages while the ends were asked.
            target = count()?;
            if target == Some(found) {
                counted = true;
                break;
            }
        }
    }
    let report = ProbeReport {
        pfns: pfn_count,
        asked: lo + (pfn_count - hi),
        populated: found,
        counted,
        ms: t.elapsed().as_secs_f64() * 1e3,
    };
    Ok(Probe { populated, report })
}

impl<D: Checkpointable + 'static> Run<'_, D> {
    /// Before a base's first round, where its pfn space is sparse: find the populated pfns,
    /// which the round then reads (this module).
    pub(super) fn probe_base(
        &mut self,
        builder: &ChunkBuilder,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), CaptureError> {
        // A PV guest's space is its own p2m, dense, and its page types change as page tables
        // come and go: its first round asks every pfn.
        let (n, pages) = (self.info.pfn_count, self.info.populated_pages);
        let translated = self.info.guest_type != GuestType::Pv;
        if !matches!(self.plan, Plan::Base { .. }) || !translated || !worth_probing(n, pages) {
            return Ok(());
        }
        let (dom, name) = (&*self.dom, &self.info.identity.name);
        let found = probe(
            n,
            || Ok(dom.counted_pages()?),
            |pfns, out| {
                if stop() {
                    return Err(CaptureError::Interrupted {
                        domain: name.clone(),
                    });
                }
                let asked = builder
                    .clock()
                    .time(Stage::Types, || dom.page_types(pfns, out));
                Ok(asked?)
            },
        )?;
        self.probe = Some(found);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::ops::Range;

    /// A space whose populated pfns are `ranges`, counted as `count` says; returns the probe
    /// and the pfns asked.
    fn run(n: u64, ranges: &[Range<u64>], count: impl Fn(u64) -> Option<u64>) -> (Probe, u64) {
        let asked = Cell::new(0u64);
        let calls = Cell::new(0u64);
        let real: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        let p = probe(
            n,
            || {
                calls.set(calls.get() + 1);
                Ok(count(real))
            },
            |pfns, out| {
                asked.set(asked.get() + pfns.len() as u64);
                for (p, o) in pfns.iter().zip(out.iter_mut()) {
                    *o = if ranges.iter().any(|r| r.contains(p)) {
                        PageType::Normal
                    } else {
                        PageType::Unpopulated
                    };
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(p.report.asked, asked.get());
        (p, asked.get())
    }

    fn ones(p: &Probe) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for i in p.populated.iter_ones() {
            let i = i as u64;
            match out.last_mut() {
                Some(r) if r.end == i => r.end += 1,
                _ => out.push(i..i + 1),
            }
        }
        out
    }

    #[test]
    fn a_pvh_space_is_asked_at_its_ends_only() {
        // 256 MiB of RAM from pfn 0, special pages just below 4 GiB.
        let ranges = [0..65_536, 0xfeff0..0xfeff8, 0xfeffc..0xff000];
        let (p, asked) = run(0xff000, &ranges, Some);
        assert_eq!(ones(&p), ranges.to_vec());
        assert!(p.report.counted);
        // RAM plus a few batches at the top, not the 1,044,480 pfns of the space.
        assert!(asked <= 65_536 + 4 * 1024, "asked {asked}");
    }

    #[test]
    fn an_hvm_space_above_4_gib_finds_the_pages_between_its_holes() {
        // Low RAM with the VGA hole, special pages below the MMIO hole, high RAM above 4 GiB.
        let ranges = [0..0xa0, 0xc0..0xb0000, 0xfeff0..0xff000, 0x100000..0x150000];
        let (p, asked) = run(0x150000, &ranges, Some);
        assert_eq!(ones(&p), ranges.to_vec());
        assert!(p.report.counted);
        assert!(asked < 0x150000 - 0x20000, "asked {asked}");
    }

    #[test]
    fn every_pfn_is_asked_when_the_count_is_not_met() {
        let ranges = [0..1000, 500_000..500_010, 999_000..999_500];
        // Xen counts a page the guest has not mapped: never met.
        let (p, asked) = run(1_000_000, &ranges, |n| Some(n + 1));
        assert_eq!((asked, p.report.counted), (1_000_000, false));
        assert_eq!(ones(&p), ranges.to_vec());
        // More found than counted (a page shared away): never met either.
        let (p, asked) = run(1_000_000, &ranges, |n| Some(n - 1));
        assert_eq!((asked, p.report.counted), (1_000_000, false));
        assert_eq!(ones(&p), ranges.to_vec());
        // No count from the back-end.
        let (p, asked) = run(1_000_000, &ranges, |_| None);
        assert_eq!((asked, p.report.counted), (1_000_000, false));
        assert_eq!(ones(&p), ranges.to_vec());
    }

    #[test]
    fn a_count_that_moves_during_the_probe_is_not_trusted() {
        // The first reading matches what the ends hold; the second (a balloon gave a page to
        // the middle) does not: the probe goes on and finds it.
        let ranges = [0..4096, 600_000..600_001, 1_000_000 - 8..1_000_000];
        let reads = Cell::new(0);
        let (p, _) = run(1_000_000, &ranges, |n| {
            reads.set(reads.get() + 1);
            Some(if reads.get() == 1 { n - 1 } else { n })
        });
        assert_eq!(ones(&p), ranges.to_vec());
        assert!(p.report.counted);
    }

    #[test]
    fn sparse_spaces_only() {
        assert!(worth_probing(0xff000, 65_544));
        assert!(!worth_probing(70_000, 65_544));
        assert!(!worth_probing(1000, 10));
    }
}
