//! Filling a restored domain's memory in place of sending it (HVM and PVH guests).
//!
//! Stock `xl restore` copies every page it reads from the stream into the new domain: the pages
//! cross the pipe once, and are copied three times on the way (into the pipe, out of it, into
//! the guest). When the consumer offers a [`GuestFill`], the stream names every populated pfn
//! as `XALLOC` instead (libxc populates it and writes nothing; a fill that
//! [`GuestFill::populates`] takes the whole 2 MiB regions out of the records and populates
//! each with one allocation, where libxc would make 512), then an empty
//! [`libxc_rec::XCKPT_FENCE`] record. Once `xl restore` has read the fence, every pfn is
//! populated, and the writer copies each page straight from the decoded frame into the domain
//! ([`fill_memory`]), zero pages included: no frame keeps what Xen's allocator left in it.
//! Only then come the records that finish the domain (HVM_PARAMS, which also clears the
//! xenstore and console pages, HVM_CONTEXT, the emulator's state), so the guest never runs
//! before its memory is whole, and a page that fails its check still cuts the stream before
//! `xl restore` makes a domain.

use std::error::Error as StdError;

use super::error::StreamWriteError;
use crate::compose::{PageRef, PageSource};
use crate::hv::{Pfn, PAGE_SIZE};

/// Pages written into the domain per call of [`GuestFill::write`]: one 2 MiB region, as a
/// PAGE_DATA record holds.
pub const FILL_BATCH: usize = 512;

/// The domain memory of a restore in progress, written by the stream's writer.
pub trait GuestFill {
    /// Return once the consumer has read everything written into the stream so far; an error
    /// if it went away first.
    fn drained(&mut self) -> std::io::Result<()>;

    /// Whether the fill populates memory itself, a whole 2 MiB region per allocation: the
    /// stream then leaves the regions all of whose pfns are populated out of its records
    /// (`xl restore` would populate them a pfn at a time) and [`Self::begin`] gets them.
    fn populates(&self) -> bool {
        false
    }

    /// Before the first [`Self::write`]: every pfn the fill will write, ascending, in the
    /// domain named `name` (the writes come in this order), so the memory can be mapped in
    /// large windows; and, if the fill [`Self::populates`], the first pfns of the regions it
    /// must populate first.
    fn begin(
        &mut self,
        name: &str,
        pfns: &[Pfn],
        regions: &[Pfn],
    ) -> Result<(), Box<dyn StdError + Send + Sync>> {
        let _ = (name, pfns, regions);
        Ok(())
    }

    /// Write the pages of `batch` (ascending pfns; `None` for a zero page) into the memory of
    /// the domain [`Self::begin`] named, which `xl restore` is building.
    fn write(
        &mut self,
        batch: &[(Pfn, Option<&[u8]>)],
    ) -> Result<(), Box<dyn StdError + Send + Sync>>;
}

/// What a fill wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filled {
    /// Pages written with data.
    pub data_pages: u64,
    /// Pages written with zeros.
    pub zero_pages: u64,
    /// Milliseconds spent in [`GuestFill::write`] (mapping and copying; the rest of the fill is
    /// waiting for the checked pages).
    pub write_ms: u64,
    /// Milliseconds spent in [`GuestFill::begin`] (finding the domain, populating the
    /// regions).
    pub begin_ms: u64,
}

/// Write the `populated` pfns (ascending, each with whether the image holds data for it) into
/// domain `name` through `fill`, after it populated the whole 2 MiB `regions` the records left
/// out: data pages as `pages` hands them out (in pfn order, each checked), the others as
/// zeros.
pub fn fill_memory(
    populated: &[(Pfn, bool)],
    regions: &[Pfn],
    pages: &mut dyn PageSource,
    name: &str,
    fill: &mut dyn GuestFill,
) -> Result<Filled, StreamWriteError> {
    let mut done = Filled::default();
    let t = std::time::Instant::now();
    let pfns: Vec<Pfn> = populated.iter().map(|&(pfn, _)| pfn).collect();
    fill.begin(name, &pfns, regions)
        .map_err(fill_error(name, pfns.first().copied().unwrap_or(0)))?;
    done.begin_ms = t.elapsed().as_millis() as u64;
    let mut batch: Vec<(Pfn, Option<PageRef>)> = Vec::with_capacity(FILL_BATCH);
    for &(pfn, data) in populated {
        let page = if data {
            let page = pages
                .page(pfn)
                .map_err(|source| StreamWriteError::ReadPage { pfn, source })?;
            done.data_pages += 1;
            Some(page)
        } else {
            done.zero_pages += 1;
            None
        };
        batch.push((pfn, page));
        if batch.len() == FILL_BATCH {
            write_batch(fill, name, &mut batch, &mut done)?;
        }
    }
    write_batch(fill, name, &mut batch, &mut done)?;
    Ok(done)
}

fn write_batch(
    fill: &mut dyn GuestFill,
    name: &str,
    batch: &mut Vec<(Pfn, Option<PageRef>)>,
    done: &mut Filled,
) -> Result<(), StreamWriteError> {
    if batch.is_empty() {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let view: Vec<(Pfn, Option<&[u8]>)> = batch
        .iter()
        .map(|(pfn, page)| (*pfn, page.as_ref().map(PageRef::bytes)))
        .collect();
    debug_assert!(view
        .iter()
        .all(|(_, p)| p.is_none_or(|p| p.len() == PAGE_SIZE)));
    fill.write(&view).map_err(fill_error(name, view[0].0))?;
    batch.clear();
    done.write_ms += t.elapsed().as_millis() as u64;
    Ok(())
}

/// The error of a fill of domain `name` that failed at the batch from `pfn`.
fn fill_error(
    name: &str,
    pfn: Pfn,
) -> impl FnOnce(Box<dyn StdError + Send + Sync>) -> StreamWriteError + '_ {
    move |source| StreamWriteError::Fill {
        name: name.to_string(),
        pfn,
        source,
    }
}
