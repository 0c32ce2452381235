//! No profile: the guest kernel's own symbols, read from its memory.
//!
//! ```text
//! vCPU 0's cr3 (HVM save area)     the page tables the vCPU runs on; with page-table isolation
//!   |                              the kernel's half of an 8 KiB pair is the even page
//!   v
//! PML4[511] / PUD[510]             the kernel image's 1 GiB (__START_KERNEL_map, KASLR or not):
//!   |                              from its first to its last mapped 2 MiB step: [_text, _end)
//!   v
//! the image, read once             physically contiguous: one delta maps it (checked per page)
//!   |
//!   v
//! kallsyms (the guest's tables)    run-time addresses of the symbols a profile would give
//! .BTF (its header, if kallsyms    where kallsyms lacks __start_BTF / __stop_BTF
//!       lacks the section bounds)
//! ```
//!
//! The result is a [`Profile`] of run-time addresses and the image's delta, so the scan goes on
//! exactly as with an operator's profile (and every check it makes still applies).

use crate::hv::PAGE_SIZE;

use super::kallsyms;
use super::reader::Reader;
use super::symbols::Profile;
use super::translate::{PageTables, START_KERNEL_MAP};
use super::VmiError;

/// The symbols the scan uses (see [`super::find_free`]).
pub const NEEDED: &[&str] = &[
    "linux_banner",
    "__start_BTF",
    "__stop_BTF",
    "init_top_pgt",
    "vmemmap_base",
    "page_offset_base",
    "max_pfn",
    "__pgtable_l5_enabled",
];
/// The kernel image's virtual span (KERNEL_IMAGE_SIZE with KASLR).
const IMAGE_SPAN: u64 = 1 << 30;
/// The largest image read (Debian's 6.1 and 6.12 images are about 50 MiB with their bss).
const MAX_IMAGE_BYTES: u64 = 192 << 20;
const STEP: u64 = 2 << 20;
/// `.BTF` header: magic 0xeb9f, version 1, flags 0, hdr_len 24.
const BTF_HEADER: [u8; 8] = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];

/// The guest's own profile.
#[derive(Debug)]
pub struct Found {
    /// Run-time addresses from the guest's kallsyms (and `.BTF` bounds).
    pub profile: Profile,
    /// `phys = addr - __START_KERNEL_map + delta` for the image.
    pub delta: i64,
    /// The page-table root the image was found through (physical).
    pub root: u64,
    /// Symbols in the guest's kallsyms.
    pub symbols: usize,
    /// Bytes the image spans.
    pub image_bytes: u64,
    /// Bytes of it read (its read-only data, or all of it).
    pub read_bytes: u64,
    /// The pages of the image read for the search, kept so that the `.BTF` section inside them
    /// is not read from the guest a second time.
    pub image: ImageCopy,
}

/// The image as read by the search: its bytes from `vaddr` on, and which pages were read
/// (the others are zero in `bytes`).
pub struct ImageCopy {
    vaddr: u64,
    bytes: Vec<u8>,
    read: Vec<bool>,
}

impl ImageCopy {
    /// The bytes of the virtual range `[start, stop)`, if every page of it was read.
    pub fn range(&self, start: u64, stop: u64) -> Option<&[u8]> {
        let a = usize::try_from(start.checked_sub(self.vaddr)?).ok()?;
        let b = usize::try_from(stop.checked_sub(self.vaddr)?).ok()?;
        let bytes = self.bytes.get(a..b)?;
        let pages = a / PAGE_SIZE..b.div_ceil(PAGE_SIZE);
        self.read.get(pages)?.iter().all(|&r| r).then_some(bytes)
    }
}

impl std::fmt::Debug for ImageCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let read = self.read.iter().filter(|&&r| r).count();
        write!(
            f,
            "ImageCopy({:#x}, {read} of {} pages)",
            self.vaddr,
            self.read.len()
        )
    }
}

/// Read the guest kernel's symbols from its memory, starting from a vCPU's `cr3`.
pub fn from_guest(r: &mut Reader<'_>, cr3: u64) -> Result<Found, VmiError> {
    let base = cr3 & 0x000f_ffff_ffff_f000;
    // With page-table isolation the kernel's tables are the even page of the pair (its user
    // half maps little of the image); without it, the page itself.
    let roots = if base & 0x1000 != 0 {
        vec![base & !0x1fff, base]
    } else {
        vec![base]
    };
    let mut why = None;
    for root in roots {
        match image_at(r, root) {
            Ok(f) => return Ok(f),
            Err(e @ VmiError::Budget(_)) => return Err(e),
            Err(e) => why = Some(e),
        }
    }
    Err(why.unwrap_or_else(|| VmiError::Unsupported("no page-table root".into())))
}

fn image_at(r: &mut Reader<'_>, root: u64) -> Result<Found, VmiError> {
    let mut tables = PageTables::new(root);
    // The image is the span from the first to the last mapped 2 MiB step; pages in between
    // may be unmapped (freed init memory, the gaps around read-only data) and read as zero.
    let mut mapped = Vec::with_capacity((IMAGE_SPAN / STEP) as usize);
    for i in 0..IMAGE_SPAN / STEP {
        mapped.push(tables.translate(r, START_KERNEL_MAP + i * STEP)?.is_some());
    }
    let first = mapped.iter().position(|&m| m).ok_or_else(|| {
        VmiError::Unsupported(format!(
            "the page tables at {root:#x} (vCPU 0's cr3) map no kernel image at {START_KERNEL_MAP:#x}: not a 64-bit Linux kernel"
        ))
    })? as u64;
    let last = mapped.iter().rposition(|&m| m).unwrap_or(0) as u64;
    let steps = last - first + 1;
    let vaddr = START_KERNEL_MAP + first * STEP;
    let len = steps * STEP;
    if len > MAX_IMAGE_BYTES {
        return Err(VmiError::Unsupported(format!(
            "the kernel image maps {} MiB, more than {}",
            len >> 20,
            MAX_IMAGE_BYTES >> 20
        )));
    }
    // Physical frame of every page; the image is physically contiguous.
    let pages = len / PAGE_SIZE as u64;
    let phys0 = tables
        .translate(r, vaddr)?
        .ok_or_else(|| VmiError::Inconsistent(format!("{vaddr:#x} stopped being mapped")))?;
    let delta = phys0 as i64 - (vaddr - START_KERNEL_MAP) as i64;
    // Frame of every page, and whether it is read-only data (not writable, not executable):
    // .rodata, where scripts/kallsyms puts its tables, and .BTF.
    let mut pfns = Vec::with_capacity(pages as usize);
    let mut rodata = Vec::with_capacity(pages as usize);
    for k in 0..pages {
        let va = vaddr + k * PAGE_SIZE as u64;
        let m = tables.walk(r, va)?;
        pfns.push(match m {
            Some(m) if m.phys as i64 - (va - START_KERNEL_MAP) as i64 == delta => {
                m.phys / PAGE_SIZE as u64
            }
            Some(m) => {
                return Err(VmiError::Inconsistent(format!(
                    "the kernel image is not physically contiguous ({va:#x} -> {:#x})",
                    m.phys
                )))
            }
            None => u64::MAX,
        });
        rodata.push(m.is_some_and(|m| !m.writable && m.no_exec));
    }
    // Read-only data first, and searched only within its runs of pages: the image buffer's
    // other pages are never touched then (each would cost a fault on a zero page, and a PV
    // dom0 takes every fault through the hypervisor). In Debian's 6.1 image the first and the
    // last read-only page are about 18 MiB apart, and 8 MiB between them are read-only data.
    // The rest of the image only if the tables are not found there (a kernel that maps its
    // read-only data writable or executable).
    let mut bytes = vec![0u8; len as usize];
    let ro = page_runs(&rodata);
    // The pages about to be read, faulted in at once rather than page by page.
    for run in &ro {
        crate::guestmem::prefault(&mut bytes[run.clone()]);
    }
    let mut have = vec![false; pfns.len()];
    let mut read = read_pages(r, &pfns, &mut bytes, &mut have, |k| rodata[k])?;
    let search = |bytes: &[u8], within: Vec<std::ops::Range<usize>>| {
        kallsyms::find_in_runs(&kallsyms::Image { bytes, vaddr }, &within)
            .map(|k| (k.info().num_syms, k.lookup(NEEDED), within))
    };
    let (count, mut symbols, within) = match search(&bytes, ro) {
        Ok(found) => found,
        Err(_) => {
            read += read_pages(r, &pfns, &mut bytes, &mut have, |k| !rodata[k])?;
            let all = 0..bytes.len();
            search(&bytes, std::iter::once(all).collect())
                .map_err(|e| VmiError::Unsupported(format!("the guest's kallsyms: {e}")))?
        }
    };
    if !symbols.contains_key("__start_BTF") || !symbols.contains_key("__stop_BTF") {
        let sections: Vec<_> = within
            .iter()
            .filter_map(|w| btf_section(&bytes[w.clone()]).map(|(s, e)| (w.start + s, w.start + e)))
            .collect();
        if let [(s, e)] = sections[..] {
            symbols.insert("__start_BTF".into(), vaddr + s as u64);
            symbols.insert("__stop_BTF".into(), vaddr + e as u64);
        }
    }
    Ok(Found {
        profile: Profile {
            symbols,
            layout: None,
            source: "the guest's kallsyms".into(),
        },
        delta,
        root,
        symbols: count,
        image_bytes: len,
        read_bytes: read * PAGE_SIZE as u64,
        image: ImageCopy {
            vaddr,
            bytes,
            read: have,
        },
    })
}

/// Read the pages `k` of the image with `pick(k)` into their place in `bytes`, runs of
/// consecutive pages at once (a page that cannot be read stays zero), and set `have[k]` for
/// each page read. Returns how many were asked for.
fn read_pages(
    r: &mut Reader<'_>,
    pfns: &[u64],
    bytes: &mut [u8],
    have: &mut [bool],
    pick: impl Fn(usize) -> bool,
) -> Result<u64, VmiError> {
    let mut read = 0;
    let mut k = 0;
    while k < pfns.len() {
        if !pick(k) {
            k += 1;
            continue;
        }
        let n = (k..pfns.len().min(k + 1024))
            .take_while(|&j| pick(j))
            .count();
        let out = &mut bytes[k * PAGE_SIZE..(k + n) * PAGE_SIZE];
        let ok = r.frames_into(&pfns[k..k + n], out, None)?;
        for ((good, page), h) in ok.iter().zip(out.chunks_mut(PAGE_SIZE)).zip(&mut have[k..]) {
            if !good {
                page.fill(0);
            }
            *h = *good;
        }
        read += n as u64;
        k += n;
    }
    Ok(read)
}

/// The byte ranges of the runs of consecutive pages `k` with `pick[k]`, in order.
fn page_runs(pick: &[bool]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (k, _) in pick.iter().enumerate().filter(|(_, &p)| p) {
        let at = k * PAGE_SIZE;
        match runs.last_mut() {
            Some(r) if r.end == at => r.end = at + PAGE_SIZE,
            _ => runs.push(at..at + PAGE_SIZE),
        }
    }
    runs
}

/// The one `.BTF` section of the image, `[start, end)` in `bytes`: its header names the
/// lengths. None unless exactly one header fits.
fn btf_section(bytes: &[u8]) -> Option<(usize, usize)> {
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let mut found = None;
    for s in memchr::memmem::find_iter(bytes, &BTF_HEADER) {
        // type_off, type_len, str_off, str_len after the 8-byte header start.
        let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) = (
            u32_at(bytes, s + 8),
            u32_at(bytes, s + 12),
            u32_at(bytes, s + 16),
            u32_at(bytes, s + 20),
        ) else {
            continue;
        };
        let body = (type_off as u64 + type_len as u64).max(str_off as u64 + str_len as u64);
        let end = s as u64 + 24 + body;
        if type_len == 0 || str_len == 0 || end > bytes.len() as u64 {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some((s, end as usize));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evict::vmi::kallsyms::tests::{sym, tables};
    use crate::evict::vmi::kallsyms::Layout;
    use crate::evict::vmi::reader::{ImageMem, Limits};

    /// The image's (KASLR-moved) virtual and physical places, and the tables' page pair.
    const V: u64 = START_KERNEL_MAP + 0x300_0000;
    const P: u64 = 0x100_0000;
    const PGD: u64 = 0x80_0000;

    fn put(m: &mut [u8], at: u64, b: &[u8]) {
        m[at as usize..][..b.len()].copy_from_slice(b);
    }

    fn btf_header() -> Vec<u8> {
        let mut h = BTF_HEADER.to_vec();
        for v in [0u32, 100, 100, 50] {
            h.extend(v.to_le_bytes());
        }
        h
    }

    /// A 32 MiB guest: the image one 2 MiB step at V -> P, mapped through the kernel half of
    /// a PTI pair of PGDs; kallsyms (with or without the BTF bounds) and a BTF header in it.
    fn guest(btf_symbols: bool) -> ImageMem {
        let mut m = image_step(P | 0xe3);
        kernel(&mut m, btf_symbols);
        ImageMem(m)
    }

    /// 32 MiB whose page tables (at PGD) map the 2 MiB step at V by the PMD entry `pmd_entry`.
    fn image_step(pmd_entry: u64) -> Vec<u8> {
        let mut m = vec![0u8; 32 << 20];
        let (pud, pmd) = (PGD + 0x2000, PGD + 0x3000);
        put(&mut m, PGD + 8 * 511, &(pud | 0x63).to_le_bytes());
        put(&mut m, pud + 8 * 510, &(pmd | 0x63).to_le_bytes());
        put(
            &mut m,
            pmd + 8 * ((V >> 21) & 511),
            &pmd_entry.to_le_bytes(),
        );
        m
    }

    /// The same image mapped in 4 KiB pages as a kernel maps itself: text (read-only,
    /// executable) in its first 8 pages, read-only data (not executable) up to page 256, data
    /// (writable, not executable) after.
    fn guest_with_rights() -> ImageMem {
        guest_with_rights_but(&[])
    }

    /// As [`guest_with_rights`], with the pages `writable` mapped writable.
    fn guest_with_rights_but(writable: &[u64]) -> ImageMem {
        let pt = PGD + 0x4000;
        let mut m = image_step(pt | 0x63);
        for k in 0..512u64 {
            let rights: u64 = match k {
                0..8 => 0x61,
                k if writable.contains(&k) => 0x8000_0000_0000_0063,
                8..256 => 0x8000_0000_0000_0061,
                _ => 0x8000_0000_0000_0063,
            };
            put(
                &mut m,
                pt + 8 * k,
                &((P + k * 0x1000) | rights).to_le_bytes(),
            );
        }
        kernel(&mut m, true);
        ImageMem(m)
    }

    /// The kernel's kallsyms and BTF header in the image at P.
    fn kernel(m: &mut [u8], btf_symbols: bool) {
        let mut syms = vec![
            sym("_text", b'T', V, false),
            sym("startup_64", b'T', V, false),
        ];
        for i in 0..300u64 {
            syms.push(sym(&format!("f{i}"), b't', V + 0x100 + 16 * i, false));
        }
        syms.push(sym("linux_banner", b'D', V + 0x8000, false));
        if btf_symbols {
            syms.push(sym("__start_BTF", b'R', V + 0x9000, false));
            syms.push(sym("__stop_BTF", b'R', V + 0x9000 + 174, false));
        }
        syms.push(sym("vmemmap_base", b'D', V + 0xa000, false));
        syms.push(sym("max_pfn", b'B', V + 0xb000, false));
        put(m, P + 0x9000, &btf_header());
        put(m, P + 0x10000, &tables(&syms, Layout::NamesFirst, true));
    }

    #[test]
    fn only_the_read_only_data_is_read_when_the_tables_are_there() {
        let mem = guest_with_rights();
        let mut r = Reader::new(&mem, Limits::default());
        let f = from_guest(&mut r, PGD).unwrap();
        assert_eq!(f.read_bytes, 248 * 4096);
        assert_eq!(f.image_bytes, STEP);
        assert_eq!(f.profile.get("linux_banner"), Some(V + 0x8000));
        assert_eq!(f.profile.get("__start_BTF"), Some(V + 0x9000));
        // The section's bytes are kept, as read; the text pages (0-7) were not read.
        let btf = f.image.range(V + 0x9000, V + 0x9000 + 24).unwrap();
        assert_eq!(btf, &btf_header()[..]);
        assert!(f.image.range(V + 0x7000, V + 0x9000).is_none());
        assert!(f.image.range(V + STEP - 8, V + STEP + 8).is_none());
        assert!(f.image.range(V - 8, V + 8).is_none());
    }

    #[test]
    fn read_only_runs_split_by_writable_pages_are_searched_each() {
        // Page 100 (between the banner and BTF at pages 8-9 and the tables from page 16) and
        // page 200 are writable: three runs of read-only data, the gaps neither read nor searched.
        let mem = guest_with_rights_but(&[100, 200]);
        let mut r = Reader::new(&mem, Limits::default());
        let f = from_guest(&mut r, PGD).unwrap();
        assert_eq!(f.read_bytes, 246 * 4096);
        assert_eq!(f.profile.get("linux_banner"), Some(V + 0x8000));
        assert!(f.symbols > 300);
        assert!(f.image.range(V + 99 * 4096, V + 101 * 4096).is_none());
        let runs = page_runs(&[false, true, true, false, true]);
        assert_eq!(runs, vec![4096..3 * 4096, 4 * 4096..5 * 4096]);
        assert!(page_runs(&[false; 3]).is_empty());
    }

    #[test]
    fn the_guests_kallsyms_give_run_time_addresses_and_the_delta() {
        let mem = guest(true);
        let mut r = Reader::new(&mem, Limits::default());
        // The user half of the pair, a PCID and the no-flush bit, as a vCPU in user mode has.
        let f = from_guest(&mut r, (1 << 63) | (PGD + 0x1000) | 0x5).unwrap();
        assert_eq!(f.root, PGD);
        assert_eq!(f.delta, P as i64 - (V - START_KERNEL_MAP) as i64);
        assert_eq!(f.profile.get("linux_banner"), Some(V + 0x8000));
        assert_eq!(f.profile.get("__stop_BTF"), Some(V + 0x9000 + 174));
        assert_eq!(f.profile.get("init_top_pgt"), None);
        assert_eq!(f.image_bytes, STEP);
        // Mapped writable and executable: nothing is read-only data, so all of it was read.
        assert_eq!(f.read_bytes, STEP);
        assert!(f.symbols > 300);
    }

    #[test]
    fn without_the_btf_symbols_the_section_is_found_by_its_header() {
        let mem = guest(false);
        let mut r = Reader::new(&mem, Limits::default());
        let f = from_guest(&mut r, PGD).unwrap();
        assert_eq!(f.profile.get("__start_BTF"), Some(V + 0x9000));
        assert_eq!(f.profile.get("__stop_BTF"), Some(V + 0x9000 + 24 + 150));
    }

    #[test]
    fn no_image_or_no_kallsyms_is_an_error_not_a_guess() {
        // A root that maps nothing.
        let mem = guest(true);
        let mut r = Reader::new(&mem, Limits::default());
        let e = from_guest(&mut r, 0x40_0000).unwrap_err();
        assert!(e.to_string().contains("map no kernel image"), "{e}");
        // The image without its tables.
        let mut bare = guest(true);
        bare.0[(P + 0x10000) as usize..(P + 0x80000) as usize].fill(0);
        let mut r = Reader::new(&bare, Limits::default());
        let e = from_guest(&mut r, PGD).unwrap_err();
        assert!(e.to_string().contains("kallsyms"), "{e}");
    }

    #[test]
    fn the_btf_section_is_bounded_by_its_header() {
        let mut img = vec![0u8; 4096];
        let h = btf_header();
        img[1000..1000 + h.len()].copy_from_slice(&h);
        assert_eq!(btf_section(&img), Some((1000, 1000 + 24 + 150)));
        // A length past the image is no section; two sections are refused.
        let mut long = img.clone();
        long[1000 + 20..1000 + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(btf_section(&long), None);
        img[3000..3000 + h.len()].copy_from_slice(&h);
        assert_eq!(btf_section(&img), None);
    }
}
