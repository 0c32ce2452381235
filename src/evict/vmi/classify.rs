//! Classify guest frames from the `struct page` array (vmemmap): the free buddy blocks.
//!
//! Each chunk of the array is read twice in a row ([`super::reader::PhysMem::read`]); a block
//! counts only if both reads agree on every field looked at, so a `struct page` the guest
//! changed while it was read (a torn read) is skipped, never trusted. A block is proved free
//! when, in both reads:
//!
//! - its head carries the version's buddy marking, `private` (the order) is at most
//!   [`MAX_ORDER`], the head is aligned to its size and the block ends inside the guest, the
//!   head's refcount is 0 and it is no compound tail;
//! - every other page of the block has no type (-1), refcount 0, no compound-head bit and no
//!   page-state flag (bits 0-19 of `flags`).
//!
//! A tail that fails is a page the guest is allocating right now: only the head is kept. A
//! head that breaks an invariant the kernel keeps under its zone lock (order out of range,
//! misaligned, past the end, refcount held, a marked head inside another free block) is
//! inconsistent memory: the whole scan is refused ([`VmiError::Inconsistent`]).

use crate::hv::PAGE_SIZE;

use super::layout::{BuddyMark, PageLayout, MAX_ORDER};
use super::reader::Reader;
use super::translate::PageTables;
use super::VmiError;

/// `struct page`s per chunk: a multiple of every block size, so no block spans two chunks.
const CHUNK: u64 = 4096;
/// Page-state flags that no free page has.
const STATE_FLAGS: u64 = 0xf_ffff;

/// What the scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// `(start, len)` runs of free frames, in order, merged.
    pub runs: Vec<(u64, u64)>,
    /// Frames in `runs`.
    pub pages: u64,
    /// Free blocks found.
    pub blocks: u64,
    /// Heads skipped because the two reads differed.
    pub unsettled: u64,
    /// Blocks cut to their head because a tail was not (or no longer) free.
    pub cut: u64,
    /// Frames whose `struct page` could not be read (unmapped vmemmap).
    pub unread: u64,
    /// Frames not classified: no pfn of their chunk was asked for ([`Target::only`]).
    pub skipped: u64,
}

/// The fields of one `struct page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    flags: u64,
    compound: u64,
    private: u64,
    word: u32,
    refcount: u32,
}

fn fields(l: &PageLayout, b: &[u8]) -> Fields {
    let u64_at = |o: u32| u64::from_le_bytes(b[o as usize..o as usize + 8].try_into().expect("8"));
    let u32_at = |o: u32| u32::from_le_bytes(b[o as usize..o as usize + 4].try_into().expect("4"));
    Fields {
        flags: u64_at(l.flags),
        compound: l.compound_head.map_or(0, u64_at),
        private: u64_at(l.private),
        word: u32_at(l.mapcount),
        refcount: u32_at(l.refcount),
    }
}

/// Where the scan looks.
pub struct Target<'a> {
    /// The kernel's page tables.
    pub tables: &'a mut PageTables,
    /// `vmemmap_base`.
    pub vmemmap: u64,
    /// `struct page`.
    pub layout: PageLayout,
    /// The version's marking.
    pub mark: BuddyMark,
    /// Frames to classify: `0..limit`.
    pub limit: u64,
    /// If set, only the chunks holding a pfn set in it.
    pub only: Option<&'a crate::hv::PfnBitmap>,
}

/// Scan frames `0..t.limit`.
pub fn scan(r: &mut Reader<'_>, t: &mut Target<'_>) -> Result<Scan, VmiError> {
    let mut out = Scan::default();
    let size = t.layout.size as u64;
    // The frames as read (twice) and laid out along the chunk's virtual pages: allocated and
    // faulted in once, reused by every chunk (fresh buffers per chunk cost a page fault per
    // page each time, a trip through the hypervisor in a PV dom0).
    let (mut a, mut b, mut va_a, mut va_b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < t.limit {
        let n = CHUNK.min(t.limit - start);
        if !t.only.is_none_or(|o| asked(o, start, n)) {
            out.skipped += n;
            start += n;
            continue;
        }
        let va0 = start
            .checked_mul(size)
            .and_then(|o| t.vmemmap.checked_add(o))
            .ok_or_else(|| VmiError::Inconsistent("vmemmap address overflows".into()))?;
        let bytes = (n * size) as usize;
        let vpages = bytes.div_ceil(PAGE_SIZE);
        let mut frames = Vec::with_capacity(vpages);
        for v in 0..vpages as u64 {
            let va = va0
                .checked_add(v * PAGE_SIZE as u64)
                .ok_or_else(|| VmiError::Inconsistent("vmemmap address overflows".into()))?;
            frames.push(t.tables.translate(r, va)?.map(|pa| pa / PAGE_SIZE as u64));
        }
        let pfns: Vec<u64> = frames.iter().flatten().copied().collect();
        for (buf, len) in [
            (&mut a, pfns.len() * PAGE_SIZE),
            (&mut b, pfns.len() * PAGE_SIZE),
            (&mut va_a, vpages * PAGE_SIZE),
            (&mut va_b, vpages * PAGE_SIZE),
        ] {
            crate::guestmem::resize_for_overwrite(buf, len);
            buf.fill(0);
        }
        let ok = r.frames_into(&pfns, &mut a, Some(&mut b))?;
        // Lay the frames out along the chunk's virtual pages; `valid` per virtual page.
        let mut valid = vec![false; vpages];
        let mut k = 0;
        for (v, f) in frames.iter().enumerate() {
            if f.is_some() {
                valid[v] = ok[k];
                va_a[v * PAGE_SIZE..][..PAGE_SIZE]
                    .copy_from_slice(&a[k * PAGE_SIZE..][..PAGE_SIZE]);
                va_b[v * PAGE_SIZE..][..PAGE_SIZE]
                    .copy_from_slice(&b[k * PAGE_SIZE..][..PAGE_SIZE]);
                k += 1;
            }
        }
        let chunk = Chunk {
            start,
            n,
            size,
            a: &va_a,
            b: &va_b,
            valid: &valid,
        };
        classify_chunk(&chunk, t, &mut out)?;
        start += n;
    }
    out.pages = out.runs.iter().map(|r| r.1).sum();
    Ok(out)
}

/// Whether any pfn of `[start, start + n)` is set in `only`.
fn asked(only: &crate::hv::PfnBitmap, start: u64, n: u64) -> bool {
    let end = (start + n).min(only.len() as u64);
    start < end && only[start as usize..end as usize].any()
}

struct Chunk<'a> {
    start: u64,
    n: u64,
    size: u64,
    a: &'a [u8],
    b: &'a [u8],
    valid: &'a [bool],
}

impl Chunk<'_> {
    /// Both reads of frame `pfn`'s `struct page`, if its bytes were read.
    fn page(&self, l: &PageLayout, pfn: u64) -> Option<(Fields, Fields)> {
        let i = pfn.checked_sub(self.start).filter(|&i| i < self.n)?;
        let off = (i * self.size) as usize;
        let end = off + self.size as usize;
        let pages = off / PAGE_SIZE..end.div_ceil(PAGE_SIZE);
        if !self.valid.get(pages)?.iter().all(|&v| v) {
            return None;
        }
        Some((fields(l, &self.a[off..end]), fields(l, &self.b[off..end])))
    }
}

fn classify_chunk(c: &Chunk<'_>, t: &Target<'_>, out: &mut Scan) -> Result<(), VmiError> {
    let l = &t.layout;
    let mut pfn = c.start;
    while pfn < c.start + c.n {
        let Some((a, b)) = c.page(l, pfn) else {
            out.unread += 1;
            pfn += 1;
            continue;
        };
        if !t.mark.is_buddy(a.word) && !t.mark.is_buddy(b.word) {
            pfn += 1;
            continue;
        }
        if a != b {
            out.unsettled += 1;
            pfn += 1;
            continue;
        }
        let len = head_block(t, pfn, &a)?;
        let whole =
            (pfn + 1..pfn + len).all(|q| tail_is_free(c, t, q).unwrap_or(Ok(false)) == Ok(true));
        // A marked head inside this block is impossible in a consistent allocator.
        if let Some(q) = (pfn + 1..pfn + len).find(|&q| tail_is_free(c, t, q) == Some(Err(()))) {
            return Err(VmiError::Inconsistent(format!(
                "pfn {q:#x} is marked free inside the free block at pfn {pfn:#x}"
            )));
        }
        let take = if whole { len } else { 1 };
        out.cut += u64::from(!whole);
        out.blocks += 1;
        match out.runs.last_mut() {
            Some((s, n)) if *s + *n == pfn => *n += take,
            _ => out.runs.push((pfn, take)),
        }
        pfn += len;
    }
    Ok(())
}

/// The block size of a stable, marked head, or the inconsistency it shows.
fn head_block(t: &Target<'_>, pfn: u64, f: &Fields) -> Result<u64, VmiError> {
    let bad = |what: String| {
        Err(VmiError::Inconsistent(format!(
            "free head pfn {pfn:#x}: {what}"
        )))
    };
    if f.private > MAX_ORDER {
        return bad(format!("order {} > {MAX_ORDER}", f.private));
    }
    let len = 1u64 << f.private;
    if pfn % len != 0 {
        return bad(format!("not aligned to its order {}", f.private));
    }
    if pfn.checked_add(len).is_none_or(|e| e > t.limit) {
        return bad(format!(
            "order {} runs past the guest's last frame",
            f.private
        ));
    }
    if f.refcount != 0 || f.compound & 1 != 0 {
        return bad(format!(
            "refcount {} compound_head {:#x}",
            f.refcount, f.compound
        ));
    }
    Ok(len)
}

/// Whether tail `q` reads free in both reads: Some(Ok(true)) yes, Some(Ok(false)) not (now),
/// Some(Err(())) it is itself a marked head, None unreadable.
fn tail_is_free(c: &Chunk<'_>, t: &Target<'_>, q: u64) -> Option<Result<bool, ()>> {
    let (a, b) = c.page(&t.layout, q)?;
    if a == b && t.mark.is_buddy(a.word) {
        return Some(Err(()));
    }
    let free = |f: &Fields| {
        f.word == u32::MAX && f.refcount == 0 && f.compound & 1 == 0 && f.flags & STATE_FLAGS == 0
    };
    Some(Ok(a == b && free(&a)))
}
