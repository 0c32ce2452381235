//! Free pages without an agent: read a Linux x86-64 guest's free buddy blocks from dom0 by
//! introspection of its memory (PVH and HVM guests, whose Linux pfns are xckpt's pfns).
//!
//! ```text
//! symbols: the guest's own kallsyms (discover),     linux_banner, __start_BTF, __stop_BTF,
//!   or a profile (--guest-profile: System.map/ISF)  init_top_pgt, vmemmap_base,
//!   |                                                page_offset_base, max_pfn, ...
//!   v
//! kernel image in guest memory (translate)          kallsyms: where the vCPU's page tables
//!   |                                                map it; a profile: the 2 MiB step where
//!   |                                                the banner and the BTF magic are (one)
//!   v
//! version (banner) -> marking (layout::MARKINGS)     one table per kernel version
//! struct page (btf, from the guest's .BTF; or ISF)  size and field offsets
//! vmemmap_base, page_offset_base (KASLR values)     read at their symbols; the page tables
//!   |                                                must map page_offset_base + phys back
//!   v
//! classify: the struct page array, read twice      runs of free frames
//! ```
//!
//! The guest's memory is hostile input: reads are bounded in pages and time
//! ([`reader::Limits`]), arithmetic is checked, nesting is bounded, and anything that does not
//! add up is an error ([`VmiError`]): the capture then stores every page, with one note. The
//! scan never walks the guest's free lists, so it cannot be sent round a loop; it reads the
//! `struct page` array once (twice per chunk) in pfn order.

pub mod btf;
pub mod classify;
pub mod discover;
pub mod kallsyms;
pub mod layout;
pub mod reader;
pub mod symbols;
pub mod translate;

use std::time::{Duration, Instant};

pub use classify::Scan;
pub use reader::{HvMem, ImageMem, Limits, PhysMem};
pub use symbols::{Profile, ProfileError};

use layout::{BuddyMark, Marking};
use reader::Reader;
use translate::{image_phys, PageTables};

/// Why the introspection gave no answer. None fails a checkpoint: every page is stored.
#[derive(Debug, thiserror::Error)]
pub enum VmiError {
    /// The symbols (the profile, or the guest's kallsyms) lack one the introspection needs.
    #[error("the kernel's symbols lack {0}")]
    MissingSymbol(&'static str),
    /// The kernel was not found in guest memory where the symbols put it.
    #[error("no Linux kernel in guest memory where the symbols put it (no \"Linux version\" banner with BTF): a profile of another kernel, or not Linux")]
    NoImage,
    /// The guest's kernel version has no known free-page marking.
    #[error("guest kernel {0:?}: no known free-page marking for this version")]
    UnknownVersion(String),
    /// The BTF could not give `struct page`.
    #[error("the guest's BTF: {0}")]
    Btf(String),
    /// The guest is not one the introspection reads.
    #[error("{0}")]
    Unsupported(String),
    /// Guest memory does not add up.
    #[error("inconsistent guest memory: {0}")]
    Inconsistent(String),
    /// The read budget ran out.
    #[error("introspection stopped: {0}")]
    Budget(String),
    /// The kernel an earlier scan found is no longer where it was: the guest rebooted.
    #[error("the kernel found by an earlier checkpoint is no longer there (the guest rebooted)")]
    Moved,
    /// Mapping guest memory failed.
    #[error(transparent)]
    Hv(#[from] crate::hv::HvError),
}

/// Where the introspection takes the guest kernel's symbols from.
#[derive(Debug, Clone, Copy)]
pub enum Symbols<'p> {
    /// The operator's profile (`--guest-profile`).
    Profile(&'p Profile),
    /// The guest's own kallsyms, found through the page tables of a vCPU's `cr3`.
    Guest {
        /// vCPU 0's `cr3`.
        cr3: u64,
    },
    /// The kernel an earlier scan of this guest found ([`FreeScan::known`]): proved again
    /// (the whole banner where it was, the page tables mapping the direct map onto it) in a
    /// few page reads, or refused with [`VmiError::Moved`].
    Known(&'p KnownKernel),
}

impl<'p> From<&'p Profile> for Symbols<'p> {
    fn from(p: &'p Profile) -> Self {
        Symbols::Profile(p)
    }
}

/// What a scan learnt of the guest's kernel: all a later scan of the same boot needs, so it
/// does not search the image, kallsyms and BTF again. Kept between checkpoints (until the
/// guest reboots), as `evict::memo` does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnownKernel {
    /// The whole banner (up to its NUL).
    pub banner: String,
    /// The run-time addresses of the symbols the scan reads (those the kernel has).
    pub symbols: std::collections::BTreeMap<String, u64>,
    /// `phys = addr - __START_KERNEL_map + delta` for the image.
    pub delta: i64,
    /// The kernel's page-table root (physical).
    pub root: u64,
    /// `struct page`.
    pub layout: layout::PageLayout,
    /// Where the symbols came from, for the notes.
    pub source: String,
}

/// The symbols a scan reads, once the image is found.
const USED: [&str; 8] = [
    "linux_banner",
    "__start_BTF",
    "__stop_BTF",
    "vmemmap_base",
    "page_offset_base",
    "__pgtable_l5_enabled",
    "init_top_pgt",
    "max_pfn",
];

impl KnownKernel {
    fn get(&self, name: &'static str) -> Result<u64, VmiError> {
        self.symbols
            .get(name)
            .copied()
            .ok_or(VmiError::MissingSymbol(name))
    }

    /// The physical address of image address `a`.
    fn phys(&self, a: u64) -> Result<u64, VmiError> {
        image_phys(a, self.delta).ok_or(VmiError::Inconsistent(format!(
            "{a:#x} is outside the kernel image"
        )))
    }

    /// The banner up to the first '(' (e.g. "Linux version 6.1.0-56-amd64").
    pub fn kernel(&self) -> &str {
        kernel_name(&self.banner)
    }
}

/// The introspection's answer.
#[derive(Debug, Clone)]
pub struct FreeScan {
    /// The free blocks.
    pub scan: Scan,
    /// Where the symbols came from (the profile's path, or the guest's kallsyms).
    pub source: String,
    /// The guest's banner, up to the first '(' (e.g. "Linux version 6.1.0-56-amd64").
    pub kernel: String,
    /// The kernel as found, for the next scan of this boot ([`Symbols::Known`]).
    pub known: KnownKernel,
    /// Wall time.
    pub took: Duration,
    /// Guest pages read.
    pub pages_read: u64,
}

/// Defaults of the randomised bases when the kernel has no variable for them.
const VMEMMAP_DEFAULT: u64 = 0xffff_ea00_0000_0000;
const PAGE_OFFSET_DEFAULT: u64 = 0xffff_8880_0000_0000;
/// What `linux_banner` starts with.
const BANNER: &[u8] = b"Linux version ";
/// The largest `.BTF` section read.
const MAX_BTF_BYTES: u64 = 64 << 20;

fn sym(p: &Profile, name: &'static str) -> Result<u64, VmiError> {
    p.get(name).ok_or(VmiError::MissingSymbol(name))
}

/// Find the free frames of the guest in `mem`, with the kernel's symbols from `symbols`.
/// With `only`, just the `struct page` chunks holding a pfn set in it are read: a capture
/// that copies only those pfns needs no other answer (a free block never spans two chunks).
pub fn find_free<'p>(
    mem: &dyn PhysMem,
    symbols: impl Into<Symbols<'p>>,
    limits: Limits,
    only: Option<&crate::hv::PfnBitmap>,
) -> Result<FreeScan, VmiError> {
    let t0 = Instant::now();
    let mut r = Reader::new(mem, limits);
    let (known, source) = locate(&mut r, symbols.into())?;
    let scan = scan_free(&mut r, &known, only)?;
    Ok(FreeScan {
        scan,
        source,
        kernel: known.kernel().to_string(),
        known,
        took: t0.elapsed(),
        pages_read: r.pages_read,
    })
}

/// The kernel in guest memory: from a profile or the guest's kallsyms, searched for; from an
/// earlier scan, proved to be still there. Returns it and where its symbols came from.
fn locate(r: &mut Reader<'_>, symbols: Symbols<'_>) -> Result<(KnownKernel, String), VmiError> {
    let found;
    let (profile, known) = match symbols {
        Symbols::Known(k) => {
            let at = k.phys(k.get("linux_banner")?)?;
            if read_banner(r, at)?.as_deref() != Some(k.banner.as_str()) {
                return Err(VmiError::Moved);
            }
            let source = format!("{}, kept from an earlier checkpoint", k.source);
            return Ok((k.clone(), source));
        }
        Symbols::Profile(p) => (p, None),
        Symbols::Guest { cr3 } => {
            found = discover::from_guest(r, cr3)?;
            (&found.profile, Some(&found))
        }
    };
    let source = match known {
        Some(f) => format!(
            "the guest's kallsyms: {} symbols; {} MiB of a {} MiB image read",
            f.symbols,
            f.read_bytes >> 20,
            f.image_bytes >> 20
        ),
        None => profile.source.clone(),
    };
    let banner_at = sym(profile, "linux_banner")?;
    let btf_range = (profile.get("__start_BTF"), profile.get("__stop_BTF"));
    if profile.layout.is_none() && btf_range.0.is_none() {
        return Err(VmiError::MissingSymbol("__start_BTF"));
    }
    let delta = match known {
        Some(f) => f.delta,
        None => translate::find_image_delta(r, banner_at, BANNER, &mut |r, d| match btf_range.0 {
            Some(s) => Ok(image_phys(s, d)
                .map(|p| r.bytes(p, 2))
                .transpose()?
                .flatten()
                == Some(vec![0x9f, 0xeb])),
            None => Ok(true),
        })?,
    };
    let at = |a: u64| {
        image_phys(a, delta).ok_or(VmiError::Inconsistent(format!(
            "{a:#x} is outside the kernel image"
        )))
    };
    let banner = read_banner(r, at(banner_at)?)?.ok_or(VmiError::NoImage)?;
    let marking = marking_of(&banner)?;
    let page_layout = match (profile.layout, btf_range) {
        (Some(l), _) => l,
        // The search read the image's read-only data, where the section is: not read again.
        (None, (Some(s), Some(e))) => {
            let len = btf_len(s, e)?;
            let read;
            let bytes = match known.and_then(|f| f.image.range(s, e)) {
                Some(kept) => kept,
                None => {
                    read = r.bytes(at(s)?, len)?;
                    read.as_deref()
                        .ok_or_else(|| VmiError::Btf("section not readable".into()))?
                }
            };
            btf_layout(bytes, marking)?
        }
        (None, _) => return Err(VmiError::MissingSymbol("__stop_BTF")),
    };
    let root = match (profile.get("init_top_pgt"), known) {
        (Some(a), _) => at(a)?,
        (None, Some(f)) => f.root,
        (None, None) => return Err(VmiError::MissingSymbol("init_top_pgt")),
    };
    let symbols = USED
        .iter()
        .filter_map(|&n| Some((n.to_string(), profile.get(n)?)))
        .collect();
    let known = KnownKernel {
        banner,
        symbols,
        delta,
        root,
        layout: page_layout,
        source: source.clone(),
    };
    Ok((known, source))
}

/// The banner at physical `at` (up to its NUL), if one starts there.
fn read_banner(r: &mut Reader<'_>, at: u64) -> Result<Option<String>, VmiError> {
    let bytes = r.bytes(at, 160)?.unwrap_or_default();
    if !bytes.starts_with(BANNER) {
        return Ok(None);
    }
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    Ok(Some(String::from_utf8_lossy(&bytes[..end]).to_string()))
}

/// A banner up to its first '('.
fn kernel_name(banner: &str) -> &str {
    banner.split(" (").next().unwrap_or("").trim()
}

/// The free-page marking of the kernel the banner names.
fn marking_of(banner: &str) -> Result<&'static Marking, VmiError> {
    let kernel = || kernel_name(banner).to_string();
    let version =
        layout::banner_version(banner).ok_or_else(|| VmiError::UnknownVersion(kernel()))?;
    layout::marking_for(version).ok_or_else(|| VmiError::UnknownVersion(kernel()))
}

/// The free blocks of the kernel `k` (located): its randomised bases read, its page tables
/// proved against the banner, then the `struct page` array classified (the chunks holding a
/// pfn of `only`, or all).
fn scan_free(
    r: &mut Reader<'_>,
    k: &KnownKernel,
    only: Option<&crate::hv::PfnBitmap>,
) -> Result<Scan, VmiError> {
    let marking = marking_of(&k.banner)?;
    let banner_phys = k.phys(k.get("linux_banner")?)?;
    let value = |r: &mut Reader<'_>, name: &'static str| -> Result<Option<u64>, VmiError> {
        match k.symbols.get(name) {
            Some(&a) => r.u64_at(k.phys(a)?).map(|v| v.or(Some(u64::MAX))),
            None => Ok(None),
        }
    };
    if let Some(&a) = k.symbols.get("__pgtable_l5_enabled") {
        if r.bytes(k.phys(a)?, 4)?.is_some_and(|b| b != [0; 4]) {
            return Err(VmiError::Unsupported(
                "the guest uses 5-level paging".into(),
            ));
        }
    }
    let vmemmap = value(r, "vmemmap_base")?.unwrap_or(VMEMMAP_DEFAULT);
    let page_offset = value(r, "page_offset_base")?.unwrap_or(PAGE_OFFSET_DEFAULT);
    for (name, v) in [("vmemmap_base", vmemmap), ("page_offset_base", page_offset)] {
        if v < 0xffff_8000_0000_0000 || v % crate::hv::PAGE_SIZE as u64 != 0 {
            return Err(VmiError::Inconsistent(format!(
                "{name} = {v:#x} is no kernel address"
            )));
        }
    }
    let mut tables = PageTables::new(k.root);
    // The page tables must map the direct map onto the banner: proves root, delta and base.
    let direct = page_offset
        .checked_add(banner_phys)
        .ok_or_else(|| VmiError::Inconsistent("page_offset_base + phys overflows".into()))?;
    let mapped = tables.translate(r, direct)?;
    if mapped != Some(banner_phys) {
        return Err(VmiError::Inconsistent(format!(
            "the kernel's page tables map {direct:#x} to {mapped:x?}, not the banner at {banner_phys:#x}"
        )));
    }
    let limit = match value(r, "max_pfn")? {
        Some(m) if m > 0 => m.min(r.frames()),
        _ => r.frames(),
    };
    let mut target = classify::Target {
        tables: &mut tables,
        vmemmap,
        layout: k.layout,
        mark: marking.mark,
        limit,
        only,
    };
    classify::scan(r, &mut target)
}

/// The length of the `.BTF` section `[start, stop)`, if plausible.
fn btf_len(start: u64, stop: u64) -> Result<usize, VmiError> {
    stop.checked_sub(start)
        .filter(|&l| l > 24 && l <= MAX_BTF_BYTES)
        .map(|l| l as usize)
        .ok_or_else(|| {
            VmiError::Btf(format!(
                "section [{start:#x}, {stop:#x}) has no plausible size"
            ))
        })
}

/// `struct page` from the `.BTF` section `bytes`, cross-checked with the marking.
fn btf_layout(bytes: &[u8], marking: &Marking) -> Result<layout::PageLayout, VmiError> {
    let btf = btf::Btf::parse(bytes).map_err(VmiError::Btf)?;
    let l = btf.page_layout().map_err(VmiError::Btf)?;
    if let Some(name) = marking.btf_name {
        let want = match marking.mark {
            BuddyMark::TopByte(b) => b as i64,
            BuddyMark::TypeBitCleared { bit, .. } => bit as i64,
            BuddyMark::Mapcount(v) => v as i64,
        };
        if let Some(v) = btf.enumerator(name) {
            if v != want {
                return Err(VmiError::Btf(format!(
                    "{name} = {v:#x}, the table says {want:#x}"
                )));
            }
        }
    }
    Ok(l)
}
