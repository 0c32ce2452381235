//! Writing the libxc part of the stream for an x86 HVM / PVH guest (PV: see `pv.rs`):
//!
//! ```text
//! image header, domain header (x86 HVM, page shift 12, Xen major.minor)
//! X86_CPUID_POLICY, X86_MSR_POLICY (if captured), STATIC_DATA_END
//! PAGE_DATA * n   (populated pfns in ascending order, <= 1024 per record)
//! X86_TSC_INFO (if captured), HVM_PARAMS, HVM_CONTEXT, END
//! ```

use crate::progress;
use std::io::Write;

use super::error::StreamWriteError;
use super::format::{
    libxc_rec, DHDR_TYPE_X86_HVM, DHDR_TYPE_X86_PV, IHDR_ID, IHDR_MARKER, IHDR_VERSION, MAX_BATCH,
    PAGE_DATA_PFN_MASK, PAGE_SHIFT,
};
use super::pv::PvStreamState;
use super::records::{write_record, write_record_header};
use super::state::StreamState;
use super::StreamStats;
use crate::compose::{Image, PageState};
use crate::hv::{Pfn, PAGE_SIZE};

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

/// Write the whole libxc stream.
pub fn write_libxc_stream(
    w: &mut impl Write,
    image: &dyn Image,
    st: &StreamState<'_>,
    xen_version: (u32, u32),
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
    write_pages(w, image, st.pv.as_ref(), stats)?;
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
    rec(w, libxc_rec::HVM_CONTEXT, st.context, stats)?;
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

/// Stream every populated pfn, in ascending order, as PAGE_DATA records of at most
/// [`MAX_BATCH`] pfns. Zero and evicted pages go as real zero pages (see docs/stream.md).
fn write_pages(
    w: &mut impl Write,
    image: &dyn Image,
    pv: Option<&PvStreamState<'_>>,
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    let count = image.pfn_count();
    if count > PAGE_DATA_PFN_MASK + 1 {
        return Err(StreamWriteError::TooLarge(format!(
            "{count} pfns exceed the 2^52 pfns of a PAGE_DATA record"
        )));
    }
    let mut batch: Vec<(Pfn, PageState)> = Vec::with_capacity(MAX_BATCH);
    let mut buf = vec![0u8; PAGE_SIZE];
    let (task, mut walked) = (progress::Task::Stream, 0);
    progress::start("", task, Some(count));
    for pfn in 0..count {
        let state = image.page_state(pfn);
        if state == PageState::Unpopulated {
            stats.unpopulated_pfns += 1;
            continue;
        }
        batch.push((pfn, state));
        if batch.len() == MAX_BATCH {
            write_batch(w, image, &batch, pv, &mut buf, stats)?;
            batch.clear();
            progress::advance("", task, pfn + 1 - walked);
            walked = pfn + 1;
        }
    }
    if !batch.is_empty() {
        write_batch(w, image, &batch, pv, &mut buf, stats)?;
    }
    progress::finish("", task, count);
    Ok(())
}

/// One PAGE_DATA record: count, reserved, pfn words (pfn | type << 32; NOTAB = 0 but for a PV
/// guest's page tables), then the pages (PV page tables normalised).
fn write_batch(
    w: &mut impl Write,
    image: &dyn Image,
    batch: &[(Pfn, PageState)],
    pv: Option<&PvStreamState<'_>>,
    buf: &mut [u8],
    stats: &mut StreamStats,
) -> Result<(), StreamWriteError> {
    let n = batch.len();
    write_record_header(w, libxc_rec::PAGE_DATA, 8 + n * 8 + n * PAGE_SIZE)?;
    w.write_all(&(n as u32).to_le_bytes())?;
    w.write_all(&[0; 4])?;
    let mut words = Vec::with_capacity(n * 8);
    for (pfn, _) in batch {
        let ty = pv.map_or(0, |p| p.page_type(*pfn));
        words.extend_from_slice(&(pfn | (u64::from(ty) << 32)).to_le_bytes());
    }
    w.write_all(&words)?;
    let mut scratch = pv.map(|_| vec![0u8; PAGE_SIZE]);
    for &(pfn, state) in batch {
        if let PageState::Data(_) = state {
            image
                .read_page(pfn, buf)
                .map_err(|source| StreamWriteError::ReadPage { pfn, source })?;
            if let (Some(p), Some(s)) = (pv, scratch.as_mut()) {
                p.normalise(pfn, buf, s)?;
            }
            w.write_all(buf)?;
            stats.data_pages += 1;
        } else {
            w.write_all(&ZERO_PAGE)?;
            stats.zero_pages += 1;
        }
    }
    // The body is a multiple of 8 bytes: no padding.
    stats.records += 1;
    stats.page_records += 1;
    Ok(())
}
