//! Writing the libxc part of the stream for an x86 HVM / PVH guest (PV: see `pv.rs`):
//!
//! ```text
//! image header, domain header (x86 HVM, page shift 12, Xen major.minor)
//! X86_CPUID_POLICY, X86_MSR_POLICY (if captured), STATIC_DATA_END
//! PAGE_DATA * n   (populated pfns in ascending order, one aligned 2 MiB region per record)
//! X86_TSC_INFO (if captured), HVM_PARAMS, HVM_CONTEXT, END
//! ```

use crate::progress;
use std::io::{IoSlice, Write};

use super::error::StreamWriteError;
use super::fill::{fill_memory, GuestFill};
use super::format::{
    libxc_rec, pfinfo, DHDR_TYPE_X86_HVM, DHDR_TYPE_X86_PV, IHDR_ID, IHDR_MARKER, IHDR_VERSION,
    PAGE_DATA_PFN_MASK, PAGE_SHIFT,
};
use super::pv::PvStreamState;
use super::records::{write_record, write_record_header};
use super::state::StreamState;
use super::StreamStats;
use crate::compose::{Image, PageRef, PageSource, PageState};
use crate::hv::{Pfn, PAGE_SIZE};
use crate::usage::PhaseClock;

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// The 24-byte image header (big-endian fields, little-endian stream).
pub fn image_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(&IHDR_MARKER.to_be_bytes());
    h[8..12].copy_from_slice(&IHDR_ID.to_be_bytes());
    h[12..16].copy_from_slice(&IHDR_VERSION.to_be_bytes());
    // options (u16, bit 0 = big-endian) and reserved stay zero.
    h
}

/// The 16-byte domain header of an x86 HVM (or PVH) domain.
pub fn domain_header(xen_major: u32, xen_minor: u32) -> [u8; 16] {
    typed_domain_header(DHDR_TYPE_X86_HVM, xen_major, xen_minor)
}

/// The 16-byte domain header of domain type `ty` (`DHDR_TYPE_X86_*`).
fn typed_domain_header(ty: u32, xen_major: u32, xen_minor: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&ty.to_le_bytes());
    h[4..6].copy_from_slice(&PAGE_SHIFT.to_le_bytes());
    h[8..12].copy_from_slice(&xen_major.to_le_bytes());
    h[12..16].copy_from_slice(&xen_minor.to_le_bytes());
    h
}

/// Write the whole libxc stream. With `fill` (the domain's name and its memory; not for a PV
/// guest), the pages are written into the domain rather than sent (see `fill.rs`).
pub fn write_libxc_stream(
    w: &mut impl Write,
    image: &dyn Image,
    pages: &mut dyn PageSource,
    st: &StreamState<'_>,
    xen_version: (u32, u32),
    fill: Option<(&str, &mut dyn GuestFill)>,
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    w.write_all(&image_header())?;
    let dtype = if st.pv.is_some() {
        DHDR_TYPE_X86_PV
    } else {
        DHDR_TYPE_X86_HVM
    };
    w.write_all(&typed_domain_header(dtype, xen_version.0, xen_version.1))?;
    if let Some(pv) = &st.pv {
        rec(w, libxc_rec::X86_PV_INFO, pv.info, stats)?;
    }
    if let Some(c) = st.cpuid {
        rec(w, libxc_rec::X86_CPUID_POLICY, c, stats)?;
    }
    if let Some(m) = st.msr {
        rec(w, libxc_rec::X86_MSR_POLICY, m, stats)?;
    }
    rec(w, libxc_rec::STATIC_DATA_END, &[], stats)?;
    if let Some(pv) = &st.pv {
        rec(w, libxc_rec::X86_PV_P2M_FRAMES, pv.p2m_frames, stats)?;
    }
    let fill = fill.filter(|_| st.pv.is_none());
    let clock = PhaseClock::start();
    let mut plan = fill.as_ref().map(|(_, f)| FillPlan {
        pfns: Vec::new(),
        regions: f.populates().then(Vec::new),
    });
    write_pages(w, image, pages, st.pv.as_ref(), plan.as_mut(), stats)?;
    (stats.timings.pages_ms, stats.timings.usage.pages) = clock.read();
    if let (Some((name, fill)), Some(plan)) = (fill, plan) {
        rec(w, libxc_rec::XCKPT_FENCE, &[], stats)?;
        w.flush()?;
        let clock = PhaseClock::start();
        fill.drained()?;
        (stats.timings.drain_ms, stats.timings.usage.drain) = clock.read();
        let clock = PhaseClock::start();
        let regions = plan.regions.as_deref().unwrap_or(&[]);
        let done = fill_memory(&plan.pfns, regions, pages, name, fill)?;
        (stats.timings.fill_ms, stats.timings.usage.fill) = clock.read();
        stats.timings.fill_write_ms = done.write_ms;
        stats.timings.fill_begin_ms = done.begin_ms;
        stats.filled_pages = done.data_pages + done.zero_pages;
    }
    // Reserved fields are written as zero, whatever the blob holds (the spec: "set to zero
    // on save"); libxc ignores them on restore.
    if let Some(t) = st.tsc {
        rec_parts(w, libxc_rec::X86_TSC_INFO, &[&t[..20], &[0; 4]], stats)?;
    }
    if let Some(pv) = &st.pv {
        rec(w, libxc_rec::SHARED_INFO, pv.shared_info, stats)?;
        for (ty, body) in &pv.vcpus {
            rec(w, *ty, body, stats)?;
        }
        return rec(w, libxc_rec::END, &[], stats);
    }
    let p = st.params;
    rec_parts(
        w,
        libxc_rec::HVM_PARAMS,
        &[&p[..4], &[0; 4], &p[8..]],
        stats,
    )?;
    // In the form every supported Xen loads (a chain taken on 4.20 restores on 4.17).
    let context = super::hvm_context::portable_context(st.context);
    rec(w, libxc_rec::HVM_CONTEXT, &context, stats)?;
    rec(w, libxc_rec::END, &[], stats)
}

/// One small record, counted.
fn rec(
    w: &mut impl Write,
    ty: u32,
    body: &[u8],
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    rec_parts(w, ty, &[body], stats)
}

/// One small record made of `parts`, counted.
fn rec_parts(
    w: &mut impl Write,
    ty: u32,
    parts: &[&[u8]],
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    stats.records += 1;
    write_record(w, ty, parts)
}

/// What a filled restore writes after the stream's records: every populated pfn (with whether
/// the image holds data for it), and, when the fill populates memory itself, the first pfns of
/// the whole 2 MiB regions the records left out.
struct FillPlan {
    pfns: Vec<(Pfn, bool)>,
    regions: Option<Vec<Pfn>>,
}

/// Stream every populated pfn, in ascending order, as PAGE_DATA records that each cover the
/// populated pfns of one aligned 2 MiB region ([`SUPERPAGE_PFNS`] pfns): a fully populated
/// region goes as one record of 512 contiguous, aligned pfns, which Xen 4.21+ restores as a
/// superpage (older Xen takes any batch of up to
/// [`super::format::MAX_BATCH`]). Zero and evicted pages go as
/// real zero pages (see docs/stream.md). Data pages come from `pages` in pfn order.
/// With `fill`, every populated pfn goes as `XALLOC`, without data, and is listed there
/// (with whether the image holds data for it): `pages` is left for the fill, and the whole
/// regions a fill populates itself get no record at all ([`flush`]).
fn write_pages(
    w: &mut impl Write,
    image: &dyn Image,
    pages: &mut dyn PageSource,
    pv: Option<&PvStreamState<'_>>,
    mut fill: Option<&mut FillPlan>,
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    let filling = fill.is_some();
    let count = image.pfn_count();
    if count > PAGE_DATA_PFN_MASK + 1 {
        return Err(StreamWriteError::TooLarge(format!(
            "{count} pfns exceed the 2^52 pfns of a PAGE_DATA record"
        )));
    }
    let mut batch = Batch::default();
    let (task, mut walked) = (progress::Task::Stream, 0);
    progress::start("", task, Some(count));
    // The holes of a sparse pfn space (a PVH guest's spans 4 GiB for 256 MiB of RAM) are
    // skipped a bitmap word at a time where the image keeps one.
    let candidates: Box<dyn Iterator<Item = Pfn>> = match image.populated() {
        Some(bits) => Box::new(bits.iter_ones().map(|i| i as Pfn)),
        None => Box::new(0..count),
    };
    let mut visited = 0;
    for pfn in candidates {
        let state = image.page_state(pfn);
        if state == PageState::Unpopulated {
            continue;
        }
        visited += 1;
        if batch.pfns.first().is_some_and(|&(word, _)| {
            (word & PAGE_DATA_PFN_MASK) / SUPERPAGE_PFNS != pfn / SUPERPAGE_PFNS
        }) {
            flush(w, &mut batch, fill.as_deref_mut(), stats)?;
            progress::advance("", task, pfn - walked);
            walked = pfn;
        }
        let body = match state {
            PageState::Data(_) => {
                stats.data_pages += 1;
                if filling {
                    None
                } else {
                    let page = pages
                        .page(pfn)
                        .map_err(|source| StreamWriteError::ReadPage { pfn, source })?;
                    Some(normalised(pv, pfn, page)?)
                }
            }
            _ => {
                stats.zero_pages += 1;
                None
            }
        };
        if let Some(plan) = fill.as_deref_mut() {
            plan.pfns.push((pfn, matches!(state, PageState::Data(_))));
        }
        let ty = match pv {
            _ if filling => pfinfo::XALLOC,
            Some(p) => p.page_type(pfn),
            None => pfinfo::NOTAB,
        };
        batch.pfns.push((pfn | (u64::from(ty) << 32), body));
    }
    if !batch.pfns.is_empty() {
        flush(w, &mut batch, fill, stats)?;
    }
    stats.unpopulated_pfns = count - visited;
    progress::finish("", task, count);
    Ok(())
}

/// Pfns of a 2 MiB superpage: the alignment and size of the runs PAGE_DATA records hold.
pub const SUPERPAGE_PFNS: u64 = 512;

/// The pfns of one PAGE_DATA record: pfn word and page (None: a zero page, or no data for a
/// type without).
#[derive(Default)]
struct Batch {
    pfns: Vec<(u64, Option<PageRef>)>,
    head: Vec<u8>,
}

/// A PV guest's page table normalised (a copy); any other page as it is.
fn normalised(
    pv: Option<&PvStreamState<'_>>,
    pfn: Pfn,
    page: PageRef,
) -> Result<PageRef, StreamWriteError> {
    let Some(p) = pv.filter(|p| p.is_pagetable(pfn)) else {
        return Ok(page);
    };
    let mut buf = page.bytes().to_vec();
    let mut scratch = vec![0u8; PAGE_SIZE];
    p.normalise(pfn, &mut buf, &mut scratch)?;
    Ok(PageRef::owned(buf))
}

/// Write `batch` (the pfns of one 2 MiB region) as a PAGE_DATA record, unless a fill that
/// populates memory itself takes the region: when every one of its pfns is populated, the
/// fill populates it with one allocation (Xen backs it with a 2 MiB frame), where `xl restore`
/// would populate 512 pfns one by one.
fn flush(
    w: &mut impl Write,
    batch: &mut Batch,
    fill: Option<&mut FillPlan>,
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    if let Some(regions) = fill.and_then(|f| f.regions.as_mut()) {
        if batch.pfns.len() as u64 == SUPERPAGE_PFNS {
            regions.push(batch.pfns[0].0 & PAGE_DATA_PFN_MASK);
            batch.pfns.clear();
            return Ok(());
        }
    }
    write_batch(w, batch, stats)
}

/// One PAGE_DATA record: header, count, reserved, pfn words (pfn | type << 32; NOTAB = 0 but
/// for a PV guest's page tables and XALLOC for a filled restore), then the pages of the types
/// that carry data, written from the decoded frames with one vectored write (no copy on the
/// way).
fn write_batch(
    w: &mut impl Write,
    batch: &mut Batch,
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    let n = batch.pfns.len();
    let carries = |word: u64| pfinfo::has_data((word >> 32) as u32);
    let with_data = batch.pfns.iter().filter(|(w, _)| carries(*w)).count();
    let head = &mut batch.head;
    head.clear();
    let len = 8 + n * 8 + with_data * PAGE_SIZE;
    write_record_header(head, libxc_rec::PAGE_DATA, len)?;
    head.extend_from_slice(&(n as u32).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    for (word, _) in &batch.pfns {
        head.extend_from_slice(&word.to_le_bytes());
    }
    let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(with_data + 1);
    parts.push(IoSlice::new(head));
    for (_, body) in batch.pfns.iter().filter(|(w, _)| carries(*w)) {
        parts.push(IoSlice::new(
            body.as_ref().map_or(&ZERO_PAGE[..], PageRef::bytes),
        ));
    }
    write_all_vectored(w, &mut parts)?;
    // The body is a multiple of 8 bytes: no padding.
    stats.records += 1;
    stats.page_records += 1;
    batch.pfns.clear();
    Ok(())
}

/// `Write::write_all` over several buffers, with vectored writes.
fn write_all_vectored(w: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
