//! The state blobs a stream is built from, picked out of an image and checked against what
//! libxc / libxl 4.17 accept on restore (so a bad checkpoint fails here, with a clear
//! message, instead of half-way through `xl restore`).

use super::error::StreamWriteError;
use super::format::{CPUID_LEAF_LEN, HVM_PARAM_STORE_PFN, MSR_ENTRY_LEN, TSC_INFO_LEN};
use super::pv::{collect_pv, PvStreamState};
use crate::hv::{state_kind, GuestType, StateBlob};

/// The blobs of one image that go into a stream, validated.
#[derive(Debug, Default)]
pub struct StreamState<'a> {
    /// X86_CPUID_POLICY body (omitted when absent or empty).
    pub cpuid: Option<&'a [u8]>,
    /// X86_MSR_POLICY body (omitted when absent or empty).
    pub msr: Option<&'a [u8]>,
    /// X86_TSC_INFO body (omitted when absent).
    pub tsc: Option<&'a [u8]>,
    /// HVM_PARAMS body.
    pub params: &'a [u8],
    /// HVM_CONTEXT body.
    pub context: &'a [u8],
    /// QEMU device state (HVM only).
    pub qemu: Option<&'a [u8]>,
    /// QEMU xenstore keys (HVM only; omitted when absent or empty).
    pub qemu_xenstore: Option<&'a [u8]>,
    /// The xenstore ring pfn named in the params (HVM / PVH).
    pub store_pfn: u64,
    /// PV guests: their records, p2m and page types (`params` and `context` are then empty).
    pub pv: Option<PvStreamState<'a>>,
}

/// The last blob of `kind` (later blobs supersede earlier ones).
fn find(blobs: &[StateBlob], kind: u32) -> Option<&[u8]> {
    blobs
        .iter()
        .rev()
        .find(|b| b.kind == kind)
        .map(|b| b.data.as_slice())
}

fn bad(what: &'static str, reason: impl Into<String>) -> StreamWriteError {
    StreamWriteError::BadState {
        what,
        reason: reason.into(),
    }
}

fn non_empty(b: Option<&[u8]>) -> Option<&[u8]> {
    b.filter(|d| !d.is_empty())
}

/// Pick and check the blobs for a `ty` guest.
pub fn collect(blobs: &[StateBlob], ty: GuestType) -> Result<StreamState<'_>, StreamWriteError> {
    let mut st = StreamState::default();
    if ty == GuestType::Pv {
        st.pv = Some(collect_pv(blobs)?);
    } else {
        st.context = non_empty(find(blobs, state_kind::HVM_CONTEXT))
            .ok_or(StreamWriteError::MissingState("HVM_CONTEXT"))?;
        st.params = find(blobs, state_kind::HVM_PARAMS)
            .ok_or(StreamWriteError::MissingState("HVM_PARAMS"))?;
        st.store_pfn = check_params(st.params)?;
    }
    let cpuid = non_empty(find(blobs, state_kind::CPUID_POLICY));
    if let Some(c) = cpuid {
        if c.len() % CPUID_LEAF_LEN != 0 {
            return Err(bad(
                "CPUID_POLICY",
                format!("{} bytes is not a multiple of 24", c.len()),
            ));
        }
    }
    let msr = non_empty(find(blobs, state_kind::MSR_POLICY));
    if let Some(m) = msr {
        if m.len() % MSR_ENTRY_LEN != 0 {
            return Err(bad(
                "MSR_POLICY",
                format!("{} bytes is not a multiple of 16", m.len()),
            ));
        }
    }
    let tsc = find(blobs, state_kind::TSC_INFO);
    if let Some(t) = tsc {
        if t.len() != TSC_INFO_LEN {
            return Err(bad("TSC_INFO", format!("{} bytes, expected 24", t.len())));
        }
    }
    let (qemu, qemu_xenstore) = if ty == GuestType::Hvm {
        let qemu = non_empty(find(blobs, state_kind::QEMU_STATE))
            .ok_or(StreamWriteError::MissingState("QEMU_STATE"))?;
        let xs = non_empty(find(blobs, state_kind::QEMU_XENSTORE));
        if let Some(x) = xs {
            check_xenstore(x)?;
        }
        (Some(qemu), xs)
    } else {
        (None, None)
    };
    Ok(StreamState {
        cpuid,
        msr,
        tsc,
        qemu,
        qemu_xenstore,
        ..st
    })
}

/// Check an HVM_PARAMS body (count, pad, count * (index, value)); return the store pfn.
pub fn check_params(p: &[u8]) -> Result<u64, StreamWriteError> {
    if p.len() < 8 {
        return Err(bad(
            "HVM_PARAMS",
            format!("{} bytes, shorter than its header", p.len()),
        ));
    }
    let count = u32::from_le_bytes(p[..4].try_into().expect("4 bytes")) as usize;
    if p.len() != 8 + count * 16 {
        return Err(bad(
            "HVM_PARAMS",
            format!("{} bytes for {count} params", p.len()),
        ));
    }
    p[8..]
        .chunks_exact(16)
        .find(|e| u64::from_le_bytes(e[..8].try_into().expect("8 bytes")) == HVM_PARAM_STORE_PFN)
        .map(|e| u64::from_le_bytes(e[8..].try_into().expect("8 bytes")))
        .filter(|&v| v != 0)
        .ok_or_else(|| {
            bad(
                "HVM_PARAMS",
                "no HVM_PARAM_STORE_PFN (the xenstore ring page)",
            )
        })
}

/// Check emulator xenstore data: NUL-terminated, non-empty, relative keys, each with a value.
fn check_xenstore(x: &[u8]) -> Result<(), StreamWriteError> {
    if x.last() != Some(&0) {
        return Err(bad("QEMU_XENSTORE", "not NUL-terminated"));
    }
    let strings: Vec<&[u8]> = x[..x.len() - 1].split(|&b| b == 0).collect();
    if strings.len() % 2 != 0 {
        return Err(bad("QEMU_XENSTORE", "a key has no value"));
    }
    for key in strings.iter().step_by(2) {
        if key.is_empty() || key[0] == b'/' {
            return Err(bad("QEMU_XENSTORE", "empty or absolute key"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: &[(u64, u64)]) -> Vec<u8> {
        let mut v = (entries.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 4]);
        for (i, x) in entries {
            v.extend_from_slice(&i.to_le_bytes());
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    #[test]
    fn params_need_store_pfn() {
        assert_eq!(
            check_params(&params(&[(5, 9), (1, 0xfeffc)])).unwrap(),
            0xfeffc
        );
        assert!(matches!(
            check_params(&params(&[(5, 9)])),
            Err(StreamWriteError::BadState { .. })
        ));
        let mut short = params(&[(1, 2)]);
        short.pop();
        assert!(check_params(&short).is_err());
    }

    #[test]
    fn xenstore_pairs() {
        assert!(check_xenstore(b"physmap/1/name\0vga.vram\0").is_ok());
        assert!(check_xenstore(b"physmap/1/name\0").is_err());
        assert!(check_xenstore(b"/abs\0v\0").is_err());
        assert!(check_xenstore(b"k\0v").is_err());
    }

    #[test]
    fn pv_needs_its_records() {
        assert!(matches!(
            collect(&[], GuestType::Pv),
            Err(StreamWriteError::MissingState("X86_PV_INFO"))
        ));
    }
}
