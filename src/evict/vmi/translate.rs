//! Kernel virtual addresses to guest-physical ones.
//!
//! ```text
//! kernel image   phys = addr - __START_KERNEL_map + delta      (addr from the profile)
//!                delta = phys_base plus the virtual KASLR slide: found by trying each 2 MiB
//!                step (CONFIG_PHYSICAL_ALIGN) until linux_banner reads "Linux version " and
//!                __start_BTF holds the BTF magic; more than one match is refused.
//! other          a walk of the kernel's own page tables (init_top_pgt, 4 levels; 1 GiB and
//!                2 MiB pages), each table read through the bounded reader and cached.
//! ```

use std::collections::HashMap;

use crate::hv::PAGE_SIZE;

use super::reader::Reader;
use super::VmiError;

/// `__START_KERNEL_map` on x86-64.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// The kernel's physical alignment (CONFIG_PHYSICAL_ALIGN's x86-64 minimum).
pub const IMAGE_ALIGN: i64 = 2 << 20;
/// The image is searched for in the first 4 GiB of guest memory only.
const IMAGE_SEARCH_LIMIT: u64 = 4 << 30;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Physical address of kernel-image address `addr` for `delta`.
pub fn image_phys(addr: u64, delta: i64) -> Option<u64> {
    let off = addr.checked_sub(START_KERNEL_MAP)?;
    u64::try_from((off as i64).checked_add(delta)?).ok()
}

/// Find the one delta (a 2 MiB step) at which `prefix` is at kernel-image address `anchor` and
/// `check(reader, delta)` holds. The candidates' pages are read in batches; more than one
/// match is refused.
pub fn find_image_delta(
    r: &mut Reader<'_>,
    anchor: u64,
    prefix: &[u8],
    check: &mut dyn FnMut(&mut Reader<'_>, i64) -> Result<bool, VmiError>,
) -> Result<i64, VmiError> {
    let off = anchor
        .checked_sub(START_KERNEL_MAP)
        .filter(|&o| o < 1 << 31)
        .ok_or_else(|| {
            VmiError::Inconsistent(format!(
                "linux_banner {anchor:#x} is not a kernel-image address"
            ))
        })?;
    let page = PAGE_SIZE as u64;
    let in_page = (off % page) as usize;
    if in_page + prefix.len() > PAGE_SIZE {
        return Err(VmiError::Unsupported(
            "linux_banner straddles a page".into(),
        ));
    }
    let limit = r.frames().saturating_mul(page).min(IMAGE_SEARCH_LIMIT);
    // Deltas that put the anchor inside guest memory.
    let lo = -((off as i64) / IMAGE_ALIGN);
    let hi = (limit as i64 - off as i64) / IMAGE_ALIGN;
    let deltas: Vec<i64> = (lo..=hi).map(|k| k * IMAGE_ALIGN).collect();
    let mut found = Vec::new();
    let mut buf = vec![0u8; 256 * PAGE_SIZE];
    for batch in deltas.chunks(256) {
        let pfns: Vec<u64> = batch
            .iter()
            .map(|&d| image_phys(anchor, d).map_or(u64::MAX, |p| p / page))
            .collect();
        let ok = r.frames_into(&pfns, &mut buf[..pfns.len() * PAGE_SIZE], None)?;
        for (i, &d) in batch.iter().enumerate() {
            let at = i * PAGE_SIZE + in_page;
            if ok[i] && buf[at..at + prefix.len()] == *prefix && check(r, d)? {
                found.push(d);
            }
        }
    }
    match found[..] {
        [d] => Ok(d),
        [] => Err(VmiError::NoImage),
        [a, b, ..] => Err(VmiError::Inconsistent(format!(
            "the kernel image matches at two places (deltas {a:#x} and {b:#x})"
        ))),
    }
}

/// The kernel's page tables, walked from `root` (physical address of init_top_pgt).
pub struct PageTables {
    root: u64,
    cache: HashMap<u64, Box<[u8]>>,
}

/// Tables kept in the cache at most (then it is emptied).
const CACHE_MAX: usize = 4096;

impl PageTables {
    /// Tables rooted at physical `root`.
    pub fn new(root: u64) -> Self {
        PageTables {
            root,
            cache: HashMap::new(),
        }
    }

    fn entry(&mut self, r: &mut Reader<'_>, table: u64, idx: u64) -> Result<Option<u64>, VmiError> {
        let pfn = table / PAGE_SIZE as u64;
        if !self.cache.contains_key(&pfn) {
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
            let Some(page) = r.bytes(pfn * PAGE_SIZE as u64, PAGE_SIZE)? else {
                return Ok(None);
            };
            self.cache.insert(pfn, page.into_boxed_slice());
        }
        let page = &self.cache[&pfn];
        let i = (idx as usize) * 8;
        Ok(Some(u64::from_le_bytes(
            page[i..i + 8].try_into().expect("8 bytes"),
        )))
    }

    /// The physical address of virtual `va`, None if it is not mapped (or its tables are
    /// outside the guest).
    pub fn translate(&mut self, r: &mut Reader<'_>, va: u64) -> Result<Option<u64>, VmiError> {
        Ok(self.walk(r, va)?.map(|m| m.phys))
    }

    /// The mapping of virtual `va` with its access rights, None if it is not mapped.
    pub fn walk(&mut self, r: &mut Reader<'_>, va: u64) -> Result<Option<Mapping>, VmiError> {
        let mut table = self.root;
        let (mut writable, mut no_exec) = (true, false);
        // (shift, whether a large page can end the walk here)
        for (shift, large) in [(39u32, false), (30, true), (21, true), (12, false)] {
            let idx = (va >> shift) & 511;
            let Some(e) = self.entry(r, table, idx)? else {
                return Ok(None);
            };
            if e & 1 == 0 {
                return Ok(None);
            }
            // Rights are the most restrictive of every level's.
            writable &= e & 2 != 0;
            no_exec |= e >> 63 != 0;
            if shift == 12 || (large && e & 0x80 != 0) {
                let size = 1u64 << shift;
                let base = e & ADDR_MASK & !(size - 1);
                return Ok(Some(Mapping {
                    phys: base | (va & (size - 1)),
                    writable,
                    no_exec,
                }));
            }
            table = e & ADDR_MASK;
        }
        Ok(None)
    }
}

/// Where a virtual address is mapped, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The physical address.
    pub phys: u64,
    /// Writable (every level's RW bit set).
    pub writable: bool,
    /// Not executable (an NX bit at some level).
    pub no_exec: bool,
}
