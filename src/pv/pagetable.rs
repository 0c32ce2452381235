//! Page tables and vCPU context of a 64-bit PV guest: mfn → pfn rewriting, as libxc's save
//! does it (`normalise_pagetable`, `write_one_vcpu_basic` in xg_sr_save_x86_pv.c).

use std::collections::BTreeMap;

use xen_sys::abi::{
    FIRST_RESERVED_GDT_ENTRY, HYPERVISOR_VIRT_END_X86_64, HYPERVISOR_VIRT_START_X86_64,
    VCPU_CTX_X64_CTRLREG, VCPU_CTX_X64_GDT_ENTS, VCPU_CTX_X64_GDT_FRAMES, VCPU_CTX_X64_RDX,
    VCPU_CTX_X64_SIZE, XEN_DOMCTL_PFINFO_L1TAB, XEN_DOMCTL_PFINFO_L4TAB,
    XEN_DOMCTL_PFINFO_LTABTYPE_MASK,
};

use super::{le64, M2p, PvError, WORD};
use crate::hv::{Pfn, PAGE_SIZE};

/// The frame bits of a page-table entry.
pub const PTE_FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE_PRESENT: u64 = 1;
const PAGE_PSE: u64 = 1 << 7;
const L4_SHIFT: u32 = 39;

/// The page-table level (1..=4) of a raw `XEN_DOMCTL_PFINFO_*` type, if it is one.
pub fn table_level(ty: u32) -> Option<u32> {
    let t = ty & XEN_DOMCTL_PFINFO_LTABTYPE_MASK;
    (XEN_DOMCTL_PFINFO_L1TAB..=XEN_DOMCTL_PFINFO_L4TAB)
        .contains(&t)
        .then_some(t >> 28)
}

/// Rewrite one page-table page `src` of level-type `ty` into `dst`: every present entry's
/// mfn becomes its pfn, and in an L4 the slots of Xen's own mappings are cleared (Xen
/// rebuilds them on restore). Fails on an mfn outside the p2m or a superpage, naming `pfn`.
pub fn normalise_pagetable(
    pfn: Pfn,
    ty: u32,
    src: &[u8],
    dst: &mut [u8],
    m2p: &M2p,
) -> Result<(), PvError> {
    assert!(src.len() == PAGE_SIZE && dst.len() == PAGE_SIZE, "one page");
    let level = table_level(ty).expect("normalise_pagetable needs a page-table type");
    let xen = (level == 4).then_some(
        ((HYPERVISOR_VIRT_START_X86_64 >> L4_SHIFT) & 511) as usize
            ..=((HYPERVISOR_VIRT_END_X86_64 >> L4_SHIFT) & 511) as usize,
    );
    for i in 0..PAGE_SIZE / WORD {
        let mut pte = if xen.as_ref().is_some_and(|r| r.contains(&i)) {
            0
        } else {
            le64(src, i)
        };
        if pte & PAGE_PRESENT != 0 {
            let what = || format!("L{level} table pfn {pfn:#x} entry {i}");
            if level > 1 && pte & PAGE_PSE != 0 {
                return Err(PvError::Superpage { what: what(), pte });
            }
            let mfn = (pte & PTE_FRAME_MASK) >> 12;
            let to = m2p.pfn(mfn, what)?;
            pte = (pte & !PTE_FRAME_MASK) | (to << 12);
        }
        dst[i * WORD..(i + 1) * WORD].copy_from_slice(&pte.to_le_bytes());
    }
    Ok(())
}

fn get(ctx: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(ctx[off..off + 8].try_into().expect("8 bytes"))
}

fn set(ctx: &mut [u8], off: usize, v: u64) {
    ctx[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Normalise a 64-bit `vcpu_guest_context` for an X86_PV_VCPU_BASIC record: vCPU 0's rdx
/// (the start-info mfn of the suspend hypercall), the GDT frames, CR3 and a non-zero CR1
/// become pfns.
pub fn normalise_vcpu_basic(ctx: &mut [u8], vcpu: u32, m2p: &M2p) -> Result<(), PvError> {
    if ctx.len() != VCPU_CTX_X64_SIZE {
        return Err(PvError::BadBlob {
            what: "vCPU context",
            reason: format!("{} bytes, expected {VCPU_CTX_X64_SIZE}", ctx.len()),
        });
    }
    let pfn_of = |mfn: u64, what: &str| m2p.pfn(mfn, || format!("vCPU {vcpu}'s {what}"));
    if vcpu == 0 {
        let pfn = pfn_of(get(ctx, VCPU_CTX_X64_RDX), "suspend record (rdx)")?;
        set(ctx, VCPU_CTX_X64_RDX, pfn);
    }
    let ents = get(ctx, VCPU_CTX_X64_GDT_ENTS);
    if ents > u64::from(FIRST_RESERVED_GDT_ENTRY) {
        return Err(PvError::BadBlob {
            what: "vCPU context",
            reason: format!("vCPU {vcpu} has {ents} GDT entries (max {FIRST_RESERVED_GDT_ENTRY})"),
        });
    }
    for i in 0..ents.div_ceil(512) as usize {
        let off = VCPU_CTX_X64_GDT_FRAMES + i * WORD;
        let pfn = pfn_of(get(ctx, off), &format!("GDT frame {i}"))?;
        set(ctx, off, pfn);
    }
    let cr3 = VCPU_CTX_X64_CTRLREG + 3 * WORD;
    let pfn = pfn_of(get(ctx, cr3) >> 12, "cr3")?;
    set(ctx, cr3, pfn << 12);
    let cr1 = VCPU_CTX_X64_CTRLREG + WORD;
    let v = get(ctx, cr1);
    if v != 0 {
        let pfn = pfn_of(v >> 12, "cr1 (user page tables)")?;
        set(ctx, cr1, 1 | (pfn << 12));
    }
    Ok(())
}

/// The page-table pages of a guest at one instant: pfn → raw `XEN_DOMCTL_PFINFO_*` type
/// (level and pinned bit). Every other populated pfn is an ordinary page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageTypes {
    /// Page-table pfns and their types.
    pub tables: BTreeMap<Pfn, u32>,
}

impl PageTypes {
    /// Record `types[i]` of `pfns[i]` where it is a page-table type.
    pub fn add(&mut self, pfns: &[Pfn], types: &[u32]) {
        for (&p, &t) in pfns.iter().zip(types) {
            if table_level(t).is_some() {
                self.tables.insert(p, t);
            }
        }
    }

    /// The type of `pfn`, if it is a page table.
    pub fn get(&self, pfn: Pfn) -> Option<u32> {
        self.tables.get(&pfn).copied()
    }

    /// The `PV_PAGE_TYPES` blob: (pfn u64, type u32) little-endian pairs in pfn order.
    pub fn to_blob(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.tables.len() * 12);
        for (p, t) in &self.tables {
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&t.to_le_bytes());
        }
        v
    }

    /// Parse a `PV_PAGE_TYPES` blob.
    pub fn from_blob(b: &[u8]) -> Result<Self, PvError> {
        if b.len() % 12 != 0 {
            return Err(PvError::BadBlob {
                what: "PV_PAGE_TYPES",
                reason: format!("{} bytes is not a multiple of 12", b.len()),
            });
        }
        let mut tables = BTreeMap::new();
        for e in b.chunks_exact(12) {
            let p = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            let t = u32::from_le_bytes(e[8..].try_into().expect("4 bytes"));
            if table_level(t).is_none() {
                return Err(PvError::BadBlob {
                    what: "PV_PAGE_TYPES",
                    reason: format!("pfn {p:#x} has type {t:#x}, not a page table"),
                });
            }
            tables.insert(p, t);
        }
        Ok(PageTypes { tables })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_sys::abi::{XEN_DOMCTL_PFINFO_L2TAB, XEN_DOMCTL_PFINFO_LPINTAB};

    fn page(entries: &[(usize, u64)]) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        for &(i, v) in entries {
            p[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        p
    }

    fn m2p() -> M2p {
        // pfn i -> mfn 0x5000 + i for 16 pfns.
        M2p::new(&(0..16).map(|i| 0x5000 + i).collect::<Vec<u64>>())
    }

    #[test]
    fn levels() {
        assert_eq!(table_level(XEN_DOMCTL_PFINFO_L1TAB), Some(1));
        assert_eq!(
            table_level(XEN_DOMCTL_PFINFO_L4TAB | XEN_DOMCTL_PFINFO_LPINTAB),
            Some(4)
        );
        assert_eq!(table_level(0), None);
        assert_eq!(table_level(0xf << 28), None);
    }

    #[test]
    fn present_entries_become_pfns_flags_kept() {
        // NX + accessed/dirty/rw/present flags, mfn 0x5003 -> pfn 3; a not-present entry with
        // garbage frame bits stays as it is.
        let pte = (1u64 << 63) | (0x5003 << 12) | 0x67;
        let src = page(&[(0, pte), (1, 0xdead_b000), (511, (0x500f << 12) | 1)]);
        let mut dst = vec![0u8; PAGE_SIZE];
        normalise_pagetable(9, XEN_DOMCTL_PFINFO_L1TAB, &src, &mut dst, &m2p()).unwrap();
        assert_eq!(
            dst,
            page(&[
                (0, (1u64 << 63) | (3 << 12) | 0x67),
                (1, 0xdead_b000),
                (511, (15 << 12) | 1)
            ])
        );
    }

    #[test]
    fn l4_xen_slots_are_cleared() {
        let src = page(&[
            (255, (0x5001 << 12) | 3),
            (256, 0xffff_f003),
            (272, 0x1234_5003),
            (273, (0x5002 << 12) | 3),
        ]);
        let mut dst = vec![0u8; PAGE_SIZE];
        let ty = XEN_DOMCTL_PFINFO_L4TAB | XEN_DOMCTL_PFINFO_LPINTAB;
        normalise_pagetable(1, ty, &src, &mut dst, &m2p()).unwrap();
        assert_eq!(dst, page(&[(255, (1 << 12) | 3), (273, (2 << 12) | 3)]));
    }

    #[test]
    fn foreign_frames_and_superpages_fail_naming_the_entry() {
        let mut dst = vec![0u8; PAGE_SIZE];
        let src = page(&[(4, (0x9999 << 12) | 1)]);
        let e =
            normalise_pagetable(0x22, XEN_DOMCTL_PFINFO_L1TAB, &src, &mut dst, &m2p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "L1 table pfn 0x22 entry 4 holds mfn 0x9999, which is not in the guest's p2m"
        );
        let src = page(&[(2, (0x5001 << 12) | PAGE_PSE | 1)]);
        let e =
            normalise_pagetable(0x23, XEN_DOMCTL_PFINFO_L2TAB, &src, &mut dst, &m2p()).unwrap_err();
        assert!(matches!(e, PvError::Superpage { .. }), "{e}");
    }

    #[test]
    fn vcpu_context_frames() {
        let mut ctx = vec![0u8; VCPU_CTX_X64_SIZE];
        set(&mut ctx, VCPU_CTX_X64_RDX, 0x5004);
        set(&mut ctx, VCPU_CTX_X64_GDT_ENTS, 513);
        set(&mut ctx, VCPU_CTX_X64_GDT_FRAMES, 0x5005);
        set(&mut ctx, VCPU_CTX_X64_GDT_FRAMES + 8, 0x5006);
        set(&mut ctx, VCPU_CTX_X64_GDT_FRAMES + 16, 0x7777); // beyond gdt_ents: untouched
        set(&mut ctx, VCPU_CTX_X64_CTRLREG + 24, 0x5007 << 12);
        set(&mut ctx, VCPU_CTX_X64_CTRLREG + 8, (0x5008 << 12) | 1);
        let orig = ctx.clone();
        let mut c1 = ctx.clone();
        normalise_vcpu_basic(&mut ctx, 0, &m2p()).unwrap();
        assert_eq!(get(&ctx, VCPU_CTX_X64_RDX), 4);
        assert_eq!(get(&ctx, VCPU_CTX_X64_GDT_FRAMES), 5);
        assert_eq!(get(&ctx, VCPU_CTX_X64_GDT_FRAMES + 8), 6);
        assert_eq!(get(&ctx, VCPU_CTX_X64_GDT_FRAMES + 16), 0x7777);
        assert_eq!(get(&ctx, VCPU_CTX_X64_CTRLREG + 24), 7 << 12);
        assert_eq!(get(&ctx, VCPU_CTX_X64_CTRLREG + 8), (8 << 12) | 1);
        // Only vCPU 0 carries the suspend record.
        set(&mut c1, VCPU_CTX_X64_RDX, 0x4242);
        normalise_vcpu_basic(&mut c1, 1, &m2p()).unwrap();
        assert_eq!(get(&c1, VCPU_CTX_X64_RDX), 0x4242);
        let mut c2 = orig;
        set(&mut c2, VCPU_CTX_X64_CTRLREG + 24, 0x1 << 12);
        let e = normalise_vcpu_basic(&mut c2, 1, &m2p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vCPU 1's cr3 holds mfn 0x1, which is not in the guest's p2m"
        );
        assert!(normalise_vcpu_basic(&mut [0u8; 16], 0, &m2p()).is_err());
    }

    #[test]
    fn page_types_blob() {
        let mut t = PageTypes::default();
        t.add(
            &[1, 2, 3, 4],
            &[
                0,
                XEN_DOMCTL_PFINFO_L1TAB,
                0xf << 28,
                XEN_DOMCTL_PFINFO_L4TAB | XEN_DOMCTL_PFINFO_LPINTAB,
            ],
        );
        assert_eq!(t.tables.len(), 2);
        assert_eq!(t.get(2), Some(XEN_DOMCTL_PFINFO_L1TAB));
        assert_eq!(t.get(1), None);
        let b = t.to_blob();
        assert_eq!(b.len(), 24);
        assert_eq!(PageTypes::from_blob(&b).unwrap(), t);
        assert!(PageTypes::from_blob(&b[..23]).is_err());
        let mut bad = b.clone();
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(PageTypes::from_blob(&bad).is_err());
    }
}
