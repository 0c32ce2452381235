//! The order of a free buddy block, read from its head's `struct page` through /proc/kcore.
//!
//! /proc/kpageflags sets the buddy bit on the first page of a free block only, and does not
//! say how large the block is: the order is in the head's `struct page` (`private`). Reading
//! it needs the address of the struct page array (`vmemmap_base`, from /proc/kallsyms) and
//! its layout (x86-64, Linux 5.x-6.x): 64 bytes per page, `private` at 40, `page_type` at 48,
//! `_refcount` at 52. Each read is checked (buddy page type, refcount 0, order <= 10); a head
//! that fails the check counts as one page.

use std::fs::File;
use std::os::unix::fs::FileExt;

const STRUCT_PAGE: u64 = 64;
const PRIVATE_AT: u64 = 40;
/// vmemmap_base without KASLR (CONFIG_RANDOMIZE_MEMORY off).
const VMEMMAP_DEFAULT: u64 = 0xffff_ea00_0000_0000;
/// MAX_ORDER - 1 on x86-64.
pub const MAX_ORDER: u32 = 10;

/// An open /proc/kcore with its loadable segments.
pub struct Kcore {
    file: File,
    /// (vaddr, memsz, file offset) of each PT_LOAD segment.
    loads: Vec<(u64, u64, u64)>,
    vmemmap: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Kcore {
    /// Open /proc/kcore and find the struct page array.
    pub fn open() -> Result<Kcore, String> {
        let file =
            File::open("/proc/kcore").map_err(|e| format!("cannot open /proc/kcore: {e}"))?;
        let mut eh = [0u8; 64];
        file.read_exact_at(&mut eh, 0)
            .map_err(|e| format!("cannot read /proc/kcore: {e}"))?;
        if &eh[..4] != b"\x7fELF" || eh[4] != 2 {
            return Err("/proc/kcore is not a 64-bit ELF file".into());
        }
        let phoff = u64_at(&eh, 32);
        let phentsize = u16::from_le_bytes([eh[54], eh[55]]) as u64;
        let phnum = u16::from_le_bytes([eh[56], eh[57]]) as u64;
        let mut ph = vec![0u8; (phentsize * phnum) as usize];
        file.read_exact_at(&mut ph, phoff)
            .map_err(|e| format!("cannot read /proc/kcore headers: {e}"))?;
        let loads = ph
            .chunks_exact(phentsize as usize)
            .filter(|p| u32::from_le_bytes(p[..4].try_into().unwrap()) == 1)
            .map(|p| (u64_at(p, 16), u64_at(p, 40), u64_at(p, 8)))
            .collect();
        let mut k = Kcore {
            file,
            loads,
            vmemmap: VMEMMAP_DEFAULT,
        };
        if let Some(sym) = kallsyms("vmemmap_base") {
            let mut b = [0u8; 8];
            if k.read(sym, &mut b) {
                k.vmemmap = u64::from_le_bytes(b);
            }
        }
        Ok(k)
    }

    fn read(&self, vaddr: u64, buf: &mut [u8]) -> bool {
        let Some(&(start, _, off)) = self.loads.iter().find(|&&(s, len, _)| {
            vaddr >= s && vaddr - s <= len && buf.len() as u64 <= len - (vaddr - s)
        }) else {
            return false;
        };
        self.file.read_exact_at(buf, off + (vaddr - start)).is_ok()
    }

    /// The order of the free block headed by `pfn`, if its struct page says it is one.
    pub fn order(&self, pfn: u64) -> Option<u32> {
        let mut b = [0u8; 16];
        let at = pfn
            .checked_mul(STRUCT_PAGE)
            .and_then(|o| o.checked_add(self.vmemmap)?.checked_add(PRIVATE_AT))?;
        if !self.read(at, &mut b) {
            return None;
        }
        buddy_order(&b)
    }
}

/// The order a free block's head records, from its struct page's `private`, `page_type` and
/// `_refcount` (16 bytes from `private`); None unless it is a free buddy head.
fn buddy_order(b: &[u8; 16]) -> Option<u32> {
    let private = u64_at(b, 0);
    let page_type = u32::from_le_bytes(b[8..12].try_into().unwrap());
    let refcount = u32::from_le_bytes(b[12..16].try_into().unwrap());
    // Linux <= 6.9: a type is a cleared bit under 0xf0000000 (PG_buddy = 0x80);
    // Linux >= 6.10: the top byte is the type (PGTY_buddy = 0xf0).
    let buddy = (page_type & 0xf000_0080) == 0xf000_0000 || page_type >> 24 == 0xf0;
    (buddy && refcount == 0 && private <= MAX_ORDER as u64).then_some(private as u32)
}

/// The address of kernel symbol `name` (None if hidden by kptr_restrict or absent).
fn kallsyms(name: &str) -> Option<u64> {
    symbol(&std::fs::read_to_string("/proc/kallsyms").ok()?, name)
}

/// The address of `name` in kallsyms text.
fn symbol(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (addr, _, sym) = (w.next()?, w.next()?, w.next()?);
        let a = u64::from_str_radix(addr, 16).ok()?;
        (sym == name && a != 0).then_some(a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(private: u64, page_type: u32, refcount: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&private.to_le_bytes());
        b[8..12].copy_from_slice(&page_type.to_le_bytes());
        b[12..].copy_from_slice(&refcount.to_le_bytes());
        b
    }

    #[test]
    fn buddy_heads_give_their_order_and_nothing_else_does() {
        // Linux <= 6.9: PG_buddy is the cleared 0x80 bit under 0xf0000000.
        assert_eq!(buddy_order(&page(3, 0xffff_ff7f, 0)), Some(3));
        // Linux >= 6.10: the top byte is PGTY_buddy.
        assert_eq!(buddy_order(&page(10, 0xf000_0000, 0)), Some(10));
        // Not a buddy page (no type: 0xffffffff), a page in use, an order past MAX_ORDER.
        assert_eq!(buddy_order(&page(3, 0xffff_ffff, 0)), None);
        assert_eq!(buddy_order(&page(3, 0xf000_0000, 1)), None);
        assert_eq!(buddy_order(&page(11, 0xf000_0000, 0)), None);
        assert_eq!(buddy_order(&page(u64::MAX, 0xf000_0000, 0)), None);
    }

    #[test]
    fn symbols_are_found_by_exact_name_and_hidden_ones_are_none() {
        let text = "ffffffff81000000 T _text\n\
                    ffffffff82a1c0e8 D vmemmap_base_x\n\
                    ffffffff82a1c0f0 D vmemmap_base\n\
                    0000000000000000 D page_offset_base\n";
        assert_eq!(symbol(text, "vmemmap_base"), Some(0xffff_ffff_82a1_c0f0));
        assert_eq!(
            symbol(text, "page_offset_base"),
            None,
            "kptr_restrict zeroes"
        );
        assert_eq!(symbol(text, "absent"), None);
        assert_eq!(symbol("garbage line\n", "garbage"), None);
    }

    #[test]
    fn reads_stay_inside_one_segment_without_overflow() {
        let k = Kcore {
            file: File::open("/dev/null").unwrap(),
            loads: vec![(0x1000, 0x100, 0), (u64::MAX - 8, 8, 0)],
            vmemmap: u64::MAX - 100,
        };
        let mut b = [0u8; 16];
        assert!(!k.read(0x10f8, &mut b), "crosses the segment's end");
        assert!(!k.read(0xff0, &mut b), "starts before the segment");
        assert!(
            !k.read(u64::MAX - 4, &mut b),
            "past the end of the address space"
        );
        assert_eq!(
            k.order(u64::MAX),
            None,
            "pfn whose struct page address overflows"
        );
    }
}
