//! Parsing the libxc part of a stream (x86 HVM / PVH, and 64-bit PV), with the checks libxc
//! 4.17's restore makes (`xg_sr_restore.c`, `xg_sr_restore_x86_hvm.c`, `xg_sr_common_x86.c`).
//! A PV stream's own records (X86_PV_INFO, X86_PV_P2M_FRAMES, SHARED_INFO, the vCPU records)
//! are delivered as state blobs; its page tables arrive normalised (pfns), typed in PAGE_DATA.

use std::io::Read;

use super::error::StreamParseError;
use super::format::{
    libxc_rec, pfinfo, CPUID_LEAF_LEN, DHDR_TYPE_X86_HVM, DHDR_TYPE_X86_PV, IHDR_ID, IHDR_MARKER,
    IHDR_OPT_BIG_ENDIAN, MSR_ENTRY_LEN, PAGE_DATA_PFN_MASK, PAGE_SHIFT, TSC_INFO_LEN,
};
use super::input::{Input, RecHeader};
use super::sink::{DomainHeader, StreamSink};
use crate::hv::{state_kind, GuestType, PageType, Pfn, StateBlob, PAGE_SIZE};

/// What the libxc part contained.
#[derive(Debug, Clone)]
pub struct LibxcSummary {
    /// The headers.
    pub domain: DomainHeader,
    /// Lowest and highest pfn seen.
    pub pfn_range: Option<(Pfn, Pfn)>,
    /// Pages delivered with data.
    pub data_pages: u64,
    /// Pfns delivered without data.
    pub nodata_pfns: u64,
    /// Pages after VERIFY.
    pub verify_pages: u64,
}

/// Parse from the libxc image header to the libxc END record.
pub fn parse_libxc<R: Read>(
    inp: &mut Input<'_, R>,
    sink: &mut impl StreamSink,
    config_guest: Option<GuestType>,
) -> Result<LibxcSummary, StreamParseError> {
    let domain = read_headers(inp, config_guest)?;
    sink.domain(&domain).map_err(|e| inp.sink(e))?;
    let mut s = LibxcSummary {
        domain,
        pfn_range: None,
        data_pages: 0,
        nodata_pfns: 0,
        verify_pages: 0,
    };
    let mut static_end = false;
    let mut verify = false;
    loop {
        let rec = inp.rec_header()?;
        match rec.ty {
            libxc_rec::END => {
                inp.skip_body(&rec)?;
                return Ok(s);
            }
            libxc_rec::PAGE_DATA => {
                if !static_end && s.domain.libxc_version < 3 {
                    static_end = true; // v2 streams: STATIC_DATA_END is implied here.
                }
                if !static_end {
                    return Err(StreamParseError::malformed(
                        rec.at,
                        "PAGE_DATA before STATIC_DATA_END",
                    ));
                }
                page_data(inp, sink, &rec, verify, &mut s)?;
            }
            libxc_rec::STATIC_DATA_END => {
                if static_end {
                    return Err(StreamParseError::malformed(
                        rec.at,
                        "second STATIC_DATA_END",
                    ));
                }
                static_end = true;
                inp.skip_body(&rec)?;
            }
            libxc_rec::VERIFY => {
                verify = true;
                inp.skip_body(&rec)?;
            }
            libxc_rec::CHECKPOINT => {
                return Err(StreamParseError::unsupported(
                    rec.at,
                    "CHECKPOINT record: a checkpointed (Remus/COLO) stream",
                ));
            }
            ty if is_state_record(ty) => state_record(inp, sink, &rec)?,
            ty if s.domain.domain_type == DHDR_TYPE_X86_PV && pv_state_kind(ty).is_some() => {
                pv_record(inp, sink, &rec)?
            }
            ty if ty & libxc_rec::OPTIONAL != 0 => inp.skip_body(&rec)?,
            ty => {
                return Err(StreamParseError::malformed(
                    rec.at,
                    format!(
                        "mandatory libxc record {ty:#x} is not valid in a stream of domain type {}",
                        s.domain.domain_type
                    ),
                ));
            }
        }
    }
}

fn read_headers<R: Read>(
    inp: &mut Input<'_, R>,
    config_guest: Option<GuestType>,
) -> Result<DomainHeader, StreamParseError> {
    let at = inp.offset();
    let ih: [u8; 24] = inp.array()?;
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    let le32 = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    if u64::from_be_bytes(ih[..8].try_into().expect("8 bytes")) != IHDR_MARKER {
        return Err(StreamParseError::BadMagic {
            what: "libxc image marker",
            offset: at,
        });
    }
    if be32(&ih[8..12]) != IHDR_ID {
        return Err(StreamParseError::BadMagic {
            what: "libxc image id",
            offset: at + 8,
        });
    }
    let version = be32(&ih[12..16]);
    if !(2..=3).contains(&version) {
        return Err(StreamParseError::unsupported(
            at + 12,
            format!("libxc stream v{version}"),
        ));
    }
    if u16::from_be_bytes([ih[16], ih[17]]) & IHDR_OPT_BIG_ENDIAN != 0 {
        return Err(StreamParseError::unsupported(
            at + 16,
            "big-endian libxc stream",
        ));
    }
    let at = inp.offset();
    let dh: [u8; 16] = inp.array()?;
    let domain_type = le32(&dh[..4]);
    let page_shift = u16::from_le_bytes([dh[4], dh[5]]);
    let config_pv = config_guest.map(|t| t == GuestType::Pv);
    if domain_type == DHDR_TYPE_X86_PV && config_pv == Some(false)
        || domain_type == DHDR_TYPE_X86_HVM && config_pv == Some(true)
    {
        return Err(StreamParseError::malformed(
            at,
            format!("domain type {domain_type} but the config describes a {config_guest:?} guest"),
        ));
    }
    if domain_type != DHDR_TYPE_X86_HVM && domain_type != DHDR_TYPE_X86_PV {
        return Err(StreamParseError::unsupported(
            at,
            format!("domain type {domain_type}"),
        ));
    }
    if page_shift != PAGE_SHIFT {
        return Err(StreamParseError::malformed(
            at + 4,
            format!("page shift {page_shift}"),
        ));
    }
    Ok(DomainHeader {
        libxc_version: version,
        domain_type,
        config_guest_type: config_guest,
        xen_version: (le32(&dh[8..12]), le32(&dh[12..16])),
    })
}

fn is_state_record(ty: u32) -> bool {
    matches!(
        ty,
        libxc_rec::X86_TSC_INFO
            | libxc_rec::HVM_CONTEXT
            | libxc_rec::HVM_PARAMS
            | libxc_rec::X86_CPUID_POLICY
            | libxc_rec::X86_MSR_POLICY
    )
}

/// The state kind of a record only a PV stream carries.
fn pv_state_kind(ty: u32) -> Option<u32> {
    Some(match ty {
        libxc_rec::X86_PV_INFO => state_kind::X86_PV_INFO,
        libxc_rec::X86_PV_P2M_FRAMES => state_kind::X86_PV_P2M_FRAMES,
        libxc_rec::SHARED_INFO => state_kind::SHARED_INFO,
        libxc_rec::X86_PV_VCPU_BASIC => state_kind::X86_PV_VCPU_BASIC,
        libxc_rec::X86_PV_VCPU_EXTENDED => state_kind::X86_PV_VCPU_EXTENDED,
        libxc_rec::X86_PV_VCPU_XSAVE => state_kind::X86_PV_VCPU_XSAVE,
        libxc_rec::X86_PV_VCPU_MSRS => state_kind::X86_PV_VCPU_MSRS,
        _ => return None,
    })
}

/// A PV record, delivered as its blob (the vCPU records keep their vCPU header). Its content
/// is checked when a stream is written from it (`stream::pv::collect_pv`), as libxc checks it
/// on restore.
fn pv_record<R: Read>(
    inp: &mut Input<'_, R>,
    sink: &mut impl StreamSink,
    rec: &RecHeader,
) -> Result<(), StreamParseError> {
    let kind = pv_state_kind(rec.ty).expect("a PV record");
    let is_vcpu = rec.ty != libxc_rec::X86_PV_INFO
        && rec.ty != libxc_rec::X86_PV_P2M_FRAMES
        && rec.ty != libxc_rec::SHARED_INFO;
    if is_vcpu && rec.len < 8 {
        return Err(StreamParseError::malformed(
            rec.at,
            format!("PV vCPU record {:#x} shorter than its header", rec.ty),
        ));
    }
    let data = inp.body(rec)?;
    sink.state_blob(StateBlob { kind, data })
        .map_err(|e| inp.sink(e))
}

/// A state record: check it as libxc does, and deliver it unless it is an empty record that
/// libxc tolerates and ignores.
fn state_record<R: Read>(
    inp: &mut Input<'_, R>,
    sink: &mut impl StreamSink,
    rec: &RecHeader,
) -> Result<(), StreamParseError> {
    let len = rec.len as usize;
    let bad = |what: String| Err(StreamParseError::malformed(rec.at, what));
    let kind = match rec.ty {
        libxc_rec::X86_TSC_INFO if len != TSC_INFO_LEN => {
            return bad(format!("X86_TSC_INFO of {len} bytes"))
        }
        libxc_rec::X86_CPUID_POLICY if len == 0 || len % CPUID_LEAF_LEN != 0 => {
            return bad(format!("X86_CPUID_POLICY of {len} bytes"))
        }
        libxc_rec::X86_MSR_POLICY if len == 0 || len % MSR_ENTRY_LEN != 0 => {
            return bad(format!("X86_MSR_POLICY of {len} bytes"))
        }
        libxc_rec::X86_TSC_INFO => state_kind::TSC_INFO,
        libxc_rec::X86_CPUID_POLICY => state_kind::CPUID_POLICY,
        libxc_rec::X86_MSR_POLICY => state_kind::MSR_POLICY,
        libxc_rec::HVM_CONTEXT => state_kind::HVM_CONTEXT,
        _ => state_kind::HVM_PARAMS,
    };
    let body = inp.body(rec)?;
    if kind == state_kind::HVM_PARAMS {
        if body.is_empty() {
            return Ok(()); // Spec erratum 1 (Xen 4.6 - 4.8); libxc 4.17 is stricter here.
        }
        let count = body
            .get(..4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")));
        match count {
            Some(0) if body.len() == 8 => return Ok(()),
            Some(c) if body.len() as u64 == 8 + u64::from(c) * 16 => {}
            _ => {
                return bad(format!(
                    "HVM_PARAMS of {len} bytes does not match its count"
                ))
            }
        }
    }
    if kind == state_kind::HVM_CONTEXT && body.is_empty() {
        return Ok(());
    }
    sink.state_blob(StateBlob { kind, data: body })
        .map_err(|e| inp.sink(e))
}

/// The crate's page type for a PFINFO type.
fn page_type(ty: u32) -> PageType {
    match ty {
        pfinfo::NOTAB => PageType::Normal,
        pfinfo::XTAB => PageType::Unpopulated,
        pfinfo::BROKEN => PageType::Broken,
        other => PageType::Other(other),
    }
}

/// A PAGE_DATA record, streamed page by page after its size has been checked.
fn page_data<R: Read>(
    inp: &mut Input<'_, R>,
    sink: &mut impl StreamSink,
    rec: &RecHeader,
    verify: bool,
    s: &mut LibxcSummary,
) -> Result<(), StreamParseError> {
    let len = u64::from(rec.len);
    if len < 8 {
        return Err(StreamParseError::malformed(
            rec.at,
            "PAGE_DATA shorter than its header",
        ));
    }
    let count = u64::from(inp.u32_le()?);
    inp.skip(4)?;
    if count == 0 || 8 + count * 8 > len {
        return Err(StreamParseError::malformed(
            rec.at,
            format!("PAGE_DATA of {len} bytes cannot hold {count} pfns"),
        ));
    }
    let words = inp.bytes(count * 8)?;
    let mut entries = Vec::with_capacity(count as usize);
    let mut with_data = 0u64;
    for w in words.chunks_exact(8) {
        let word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let pfn = word & PAGE_DATA_PFN_MASK;
        let ty = (word >> 32) as u32 & 0xf000_0000;
        if !pfinfo::is_known(ty) {
            return Err(StreamParseError::malformed(
                rec.at,
                format!("unknown page type {ty:#x} for pfn {pfn:#x}"),
            ));
        }
        with_data += u64::from(pfinfo::has_data(ty));
        entries.push((pfn, ty));
    }
    if len != 8 + count * 8 + with_data * PAGE_SIZE as u64 {
        return Err(StreamParseError::malformed(
            rec.at,
            format!("PAGE_DATA of {len} bytes for {count} pfns with {with_data} pages of data"),
        ));
    }
    let mut buf = vec![0u8; PAGE_SIZE];
    for (pfn, ty) in entries {
        let data = if pfinfo::has_data(ty) {
            inp.exact(&mut buf)?;
            Some(buf.as_slice())
        } else {
            None
        };
        if verify {
            s.verify_pages += 1;
            continue;
        }
        s.pfn_range = Some(match s.pfn_range {
            None => (pfn, pfn),
            Some((lo, hi)) => (lo.min(pfn), hi.max(pfn)),
        });
        if data.is_some() {
            s.data_pages += 1;
        } else {
            s.nodata_pfns += 1;
        }
        sink.page(pfn, page_type(ty), data)
            .map_err(|e| inp.sink(e))?;
    }
    Ok(())
}
