//! The HVM_CONTEXT body in the form every supported Xen loads.
//!
//! The body is Xen's HVM save area as `xc_domain_hvm_getcontext` returns it: records of an
//! 8-byte descriptor (`u16 typecode, u16 instance, u32 length`) and `length` bytes, ending with
//! typecode 0 (`xen/include/public/hvm/save.h`). One record differs between the releases xckpt
//! supports: the LAPIC record (typecode 5) is 24 bytes up to Debian's 4.17 and 32 bytes where
//! `pending_esr` was added (Debian's 4.20.4; upstream 4.21). Xen loads LAPIC records
//! zero-extended, so a shorter record loads everywhere while a longer one is refused by an
//! older Xen ("HVM restore mismatch: expected zeroextended type 5 length 24, saw ... 32"): a
//! 32-byte record whose added bytes are zero (no APIC error pending, the usual case) is
//! written as the 24 bytes both releases read the same way. A record with an error pending
//! keeps its 32 bytes (dropping it would lose guest state).

use std::borrow::Cow;

use crate::hv::hvm_save::{put_record, records, Record};

/// `HVM_SAVE_CODE(LAPIC)`.
const LAPIC: u16 = 5;
/// `sizeof(struct hvm_hw_lapic)` before `pending_esr`.
const LAPIC_SHORT: usize = 24;

/// `ctx` with every LAPIC record that can be shortened without loss written in its short
/// form; `ctx` itself if there is none (or if it is not a well-formed save area: Xen's own
/// check of it then speaks, as before).
pub fn portable_context(ctx: &[u8]) -> Cow<'_, [u8]> {
    let Some(records) = records(ctx) else {
        return Cow::Borrowed(ctx);
    };
    let short = |r: &Record<'_>| {
        r.typecode == LAPIC
            && r.data.len() > LAPIC_SHORT
            && r.data[LAPIC_SHORT..].iter().all(|&b| b == 0)
    };
    if !records.iter().any(short) {
        return Cow::Borrowed(ctx);
    }
    let mut out = Vec::with_capacity(ctx.len());
    for r in &records {
        let data = if short(r) {
            &r.data[..LAPIC_SHORT]
        } else {
            r.data
        };
        put_record(&mut out, r.typecode, r.instance, data);
    }
    // Whatever follows the END record, as it was.
    out.extend_from_slice(&ctx[records.last().map_or(0, |r| r.end)..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: u16, inst: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_record(&mut v, ty, inst, data);
        v
    }

    fn area(lapic: &[u8]) -> Vec<u8> {
        let mut v = rec(1, 0, &[7; 24]); // HEADER
        v.extend(rec(2, 0, &[9; 1024])); // CPU
        v.extend(rec(LAPIC, 0, lapic));
        v.extend(rec(LAPIC, 1, lapic));
        v.extend(rec(6, 0, &[3; 1024])); // LAPIC_REGS
        v.extend(rec(0, 0, &[]));
        v
    }

    #[test]
    fn a_long_lapic_record_with_nothing_pending_is_written_short() {
        let mut long = vec![5u8; 24];
        long.extend([0; 8]);
        let a = area(&long);
        let out = portable_context(&a);
        assert_eq!(&*out, &area(&[5; 24])[..]);
    }

    #[test]
    fn a_pending_error_or_a_short_record_is_kept_as_it_is() {
        let mut pending = vec![5u8; 24];
        pending.extend([1, 0, 0, 0, 0, 0, 0, 0]);
        let a = area(&pending);
        assert!(matches!(portable_context(&a), Cow::Borrowed(_)));
        let b = area(&[5; 24]);
        assert!(matches!(portable_context(&b), Cow::Borrowed(_)));
    }

    #[test]
    fn a_malformed_area_is_passed_on_untouched() {
        let mut a = area(&[0; 32]);
        a.truncate(a.len() - 9); // cut inside the last record
        assert!(matches!(portable_context(&a), Cow::Borrowed(_)));
        let mut b = rec(LAPIC, 0, &[0; 32]);
        b[4] = 0xff; // a length past the end
        assert!(matches!(portable_context(&b), Cow::Borrowed(_)));
        assert!(matches!(portable_context(&[]), Cow::Borrowed(_)));
    }
}
