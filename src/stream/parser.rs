//! Parsing an `xl` save file: the xl header and config, then the libxl record loop, which
//! hands over to the libxc parser at LIBXC_CONTEXT. Accepts what `xl restore` 4.17 accepts
//! for a plain (non-checkpointed) HVM, PVH or 64-bit PV stream, and rejects what it would reject.

use std::io::{BufReader, Read};

use super::error::StreamParseError;
use super::format::{
    libxl_rec, DHDR_TYPE_X86_PV, EMULATOR_HEADER_LEN, LIBXL_IDENT, LIBXL_OPT_BIG_ENDIAN,
    LIBXL_VERSION, XL_BYTEORDER, XL_FLAGS_KNOWN, XL_FLAG_JSON, XL_FLAG_STREAM_V2, XL_MAGIC,
};
use super::input::{Input, RecHeader};
use super::libxc_parse::{parse_libxc, LibxcSummary};
use super::sink::{ParsedHeader, StreamSink};
use crate::hv::{state_kind, GuestType, StateBlob};
use crate::libxl::config::{guest_type_of, strip_nul};

/// Largest optional-data area we accept (the config is a few KiB; xl itself has no limit).
pub const MAX_OPTIONAL_DATA: u32 = 64 << 20;

/// What the xl header said.
struct XlHeader {
    mandatory: u32,
    optional: u32,
    config: Option<Vec<u8>>,
}

/// Validate and walk an `xl save` file, delivering its content to `sink`.
///
/// Never panics and never allocates more than the bytes actually present (capped at
/// 128 MiB per record and 64 MiB of optional data), whatever the input. Reads through its
/// own 1 MiB buffer, so `input` need not be buffered; it may be read past the final END.
pub fn parse_save_file(
    input: &mut impl Read,
    sink: &mut impl StreamSink,
) -> Result<ParsedHeader, StreamParseError> {
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let mut inp = Input::new(&mut buffered);
    let xl = read_xl_header(&mut inp)?;
    let config_guest = xl.config.as_deref().and_then(guest_type_of);
    if let Some(c) = &xl.config {
        sink.config(strip_nul(c)).map_err(|e| inp.sink(e))?;
    }
    read_libxl_header(&mut inp)?;
    let walk = walk_libxl(&mut inp, sink, config_guest)?;
    let guest_type = match (config_guest, walk.emulator_id) {
        (Some(t), _) => t,
        (None, _) if walk.libxc.domain.domain_type == DHDR_TYPE_X86_PV => GuestType::Pv,
        (None, Some(_)) => GuestType::Hvm,
        (None, None) => GuestType::Pvh,
    };
    let summary = ParsedHeader {
        xl_mandatory_flags: xl.mandatory,
        xl_optional_flags: xl.optional,
        config_present: xl.config.is_some(),
        config_is_json: xl.mandatory & XL_FLAG_JSON != 0,
        domain: walk.libxc.domain.clone(),
        guest_type,
        emulator_id: walk.emulator_id,
        pfn_range: walk.libxc.pfn_range,
        data_pages: walk.libxc.data_pages,
        nodata_pfns: walk.libxc.nodata_pfns,
        verify_pages: walk.libxc.verify_pages,
        bytes: inp.offset(),
    };
    sink.end(&summary).map_err(|e| inp.sink(e))?;
    Ok(summary)
}

fn read_xl_header<R: Read>(inp: &mut Input<'_, R>) -> Result<XlHeader, StreamParseError> {
    let magic: [u8; 32] = inp.array()?;
    if &magic != XL_MAGIC {
        return Err(StreamParseError::BadMagic {
            what: "xl savefile magic",
            offset: 0,
        });
    }
    let at = inp.offset();
    if inp.u32_le()? != XL_BYTEORDER {
        return Err(StreamParseError::unsupported(
            at,
            "byte order is not little-endian",
        ));
    }
    let at = inp.offset();
    let mandatory = inp.u32_le()?;
    if mandatory & !XL_FLAGS_KNOWN != 0 {
        return Err(StreamParseError::unsupported(
            at,
            format!("unknown mandatory flags {:#x}", mandatory & !XL_FLAGS_KNOWN),
        ));
    }
    if mandatory & XL_FLAG_STREAM_V2 == 0 {
        return Err(StreamParseError::unsupported(
            at,
            "legacy (pre-Xen 4.6) stream; convert it with a Xen 4.x `xl restore` first",
        ));
    }
    let optional = inp.u32_le()?;
    let at = inp.offset();
    let opt_len = inp.u32_le()?;
    if opt_len > MAX_OPTIONAL_DATA {
        return Err(StreamParseError::malformed(
            at,
            format!("{opt_len} bytes of optional data"),
        ));
    }
    let at = inp.offset();
    let opt = inp.bytes(u64::from(opt_len))?;
    let config = if opt.is_empty() {
        None
    } else {
        let len_bytes: [u8; 4] = opt
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| StreamParseError::malformed(at, "optional data shorter than 4 bytes"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let body = opt.get(4..).and_then(|r| r.get(..len)).ok_or_else(|| {
            StreamParseError::malformed(at, format!("config of {len} bytes overruns optional data"))
        })?;
        // `xl save` without a config writes a zero length (and no JSON flag).
        (!body.is_empty()).then(|| body.to_vec())
    };
    Ok(XlHeader {
        mandatory,
        optional,
        config,
    })
}

fn read_libxl_header<R: Read>(inp: &mut Input<'_, R>) -> Result<(), StreamParseError> {
    let at = inp.offset();
    let h: [u8; 16] = inp.array()?;
    let ident = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    let version = u32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
    let options = u32::from_be_bytes(h[12..].try_into().expect("4 bytes"));
    if ident != LIBXL_IDENT {
        return Err(StreamParseError::BadMagic {
            what: "libxl stream ident",
            offset: at,
        });
    }
    if version != LIBXL_VERSION {
        return Err(StreamParseError::unsupported(
            at,
            format!("libxl stream version {version}"),
        ));
    }
    if options & LIBXL_OPT_BIG_ENDIAN != 0 {
        return Err(StreamParseError::unsupported(at, "big-endian libxl stream"));
    }
    Ok(())
}

struct LibxlWalk {
    libxc: LibxcSummary,
    emulator_id: Option<u32>,
}

fn walk_libxl<R: Read>(
    inp: &mut Input<'_, R>,
    sink: &mut impl StreamSink,
    config_guest: Option<GuestType>,
) -> Result<LibxlWalk, StreamParseError> {
    let mut libxc: Option<LibxcSummary> = None;
    let mut emulator_id = None;
    loop {
        let rec = inp.rec_header()?;
        match rec.ty {
            libxl_rec::END => {
                inp.skip_body(&rec)?;
                let libxc = libxc.ok_or_else(|| {
                    StreamParseError::malformed(rec.at, "END before any LIBXC_CONTEXT record")
                })?;
                return Ok(LibxlWalk { libxc, emulator_id });
            }
            libxl_rec::LIBXC_CONTEXT => {
                inp.skip_body(&rec)?;
                if libxc.is_some() {
                    return Err(StreamParseError::malformed(rec.at, "second LIBXC_CONTEXT"));
                }
                libxc = Some(parse_libxc(inp, sink, config_guest)?);
            }
            libxl_rec::EMULATOR_XENSTORE_DATA | libxl_rec::EMULATOR_CONTEXT => {
                let kind = if rec.ty == libxl_rec::EMULATOR_CONTEXT {
                    state_kind::QEMU_STATE
                } else {
                    state_kind::QEMU_XENSTORE
                };
                let id = emulator_record(inp, sink, &rec, config_guest, kind)?;
                emulator_id = Some(id);
            }
            libxl_rec::CHECKPOINT_END | libxl_rec::CHECKPOINT_STATE => {
                return Err(StreamParseError::unsupported(
                    rec.at,
                    "checkpointed (Remus/COLO) stream; `xl restore` of a file rejects it too",
                ));
            }
            other => {
                return Err(StreamParseError::malformed(
                    rec.at,
                    format!("unknown libxl record type {other:#x}"),
                ));
            }
        }
    }
}

/// An emulator record: check the sub-header, deliver the rest as a blob, return the id.
fn emulator_record<R: Read>(
    inp: &mut Input<'_, R>,
    sink: &mut impl StreamSink,
    rec: &RecHeader,
    config_guest: Option<GuestType>,
    kind: u32,
) -> Result<u32, StreamParseError> {
    if matches!(config_guest, Some(GuestType::Pvh | GuestType::Pv)) {
        return Err(StreamParseError::malformed(
            rec.at,
            "emulator record in the stream of a guest without a device model",
        ));
    }
    if (rec.len as usize) < EMULATOR_HEADER_LEN {
        return Err(StreamParseError::malformed(
            rec.at,
            "emulator record shorter than its header",
        ));
    }
    let mut body = inp.body(rec)?;
    let id = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
    body.drain(..EMULATOR_HEADER_LEN);
    sink.state_blob(StateBlob { kind, data: body })
        .map_err(|e| inp.sink(e))?;
    Ok(id)
}
