//! Xen's HVM save area as `xc_domain_hvm_getcontext` returns it (`xen/include/public/hvm/save.h`).
//!
//! ```text
//! record   u16 typecode | u16 instance | u32 length | length bytes
//! area     record ... record(typecode 0 = END)
//! CPU      typecode 2, one per vCPU (instance = vCPU id): struct hvm_hw_cpu
//!          fpu_regs[512] | rax..r15 (16 x u64) | rip | rflags | cr0 | cr2 | cr3 | ...
//! ```
//!
//! The stream writes the area (with its LAPIC records made portable); the introspection reads
//! a vCPU's `cr3` from it to find the guest kernel's page tables.

/// The descriptor before each record's data.
pub const DESC: usize = 8;
/// `HVM_SAVE_CODE(CPU)`.
pub const CPU: u16 = 2;
/// Offset of `cr3` in `struct hvm_hw_cpu`: after `fpu_regs[512]` and 20 u64 fields.
const CPU_CR3: usize = 512 + 20 * 8;

/// One record of the save area.
pub struct Record<'a> {
    /// `HVM_SAVE_CODE` of the record.
    pub typecode: u16,
    /// Its instance (the vCPU for per-vCPU records).
    pub instance: u16,
    /// The record's bytes.
    pub data: &'a [u8],
    /// Offset just past the data.
    pub end: usize,
}

/// The records up to and including the END record (typecode 0), or None if a descriptor or a
/// length runs past the body or there is no END record.
pub fn records(ctx: &[u8]) -> Option<Vec<Record<'_>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let desc = ctx.get(at..at.checked_add(DESC)?)?;
        let typecode = u16::from_le_bytes([desc[0], desc[1]]);
        let instance = u16::from_le_bytes([desc[2], desc[3]]);
        let len = u32::from_le_bytes([desc[4], desc[5], desc[6], desc[7]]) as usize;
        let start = at + DESC;
        let end = start.checked_add(len)?;
        let data = ctx.get(start..end)?;
        out.push(Record {
            typecode,
            instance,
            data,
            end,
        });
        if typecode == 0 {
            return Some(out);
        }
        at = end;
    }
}

/// Append one record (descriptor and data) to `out`.
pub fn put_record(out: &mut Vec<u8>, typecode: u16, instance: u16, data: &[u8]) {
    out.extend_from_slice(&typecode.to_le_bytes());
    out.extend_from_slice(&instance.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// vCPU `vcpu`'s `cr3` in the save area `ctx`, if the area has its CPU record.
pub fn cpu_cr3(ctx: &[u8], vcpu: u16) -> Option<u64> {
    let recs = records(ctx)?;
    let cpu = recs
        .iter()
        .find(|r| r.typecode == CPU && r.instance == vcpu)?;
    let b = cpu.data.get(CPU_CR3..CPU_CR3 + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: u16, inst: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_record(&mut v, ty, inst, data);
        v
    }

    #[test]
    fn cr3_is_read_from_the_vcpus_cpu_record() {
        let mut cpu1 = vec![0u8; 1024];
        cpu1[CPU_CR3..CPU_CR3 + 8].copy_from_slice(&0x1234_5000u64.to_le_bytes());
        let mut a = rec(1, 0, &[7; 24]);
        a.extend(rec(CPU, 0, &[0; 1024]));
        a.extend(rec(CPU, 1, &cpu1));
        a.extend(rec(0, 0, &[]));
        assert_eq!(cpu_cr3(&a, 1), Some(0x1234_5000));
        assert_eq!(cpu_cr3(&a, 0), Some(0));
        assert_eq!(cpu_cr3(&a, 2), None);
        // A truncated area or a short CPU record gives None, not a panic.
        assert_eq!(cpu_cr3(&a[..a.len() - 4], 1), None);
        let mut short = rec(CPU, 0, &[0; 100]);
        short.extend(rec(0, 0, &[]));
        assert_eq!(cpu_cr3(&short, 0), None);
    }
}
