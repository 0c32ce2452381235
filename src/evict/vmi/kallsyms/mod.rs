//! Kernel symbols without a profile: the guest kernel's own kallsyms tables, read out of its
//! image in memory (no System.map, no debug info).
//!
//! `scripts/kallsyms` puts the tables in `.rodata`, each label aligned to 8 bytes
//! (`.balign 8` on 64-bit), in one of three orders:
//!
//! ```text
//! offsets first (to 6.1)    with seqs (6.2, 6.3;          names first (6.4 on)
//!                           Debian's 6.1.y too)
//! offsets       s32 x N     offsets                       num_syms      u32
//! relative_base u64         relative_base                 names
//! num_syms      u32         num_syms                      markers       u32 x ceil(N/256)
//! names                     names                         token_table
//! markers       u32 x M     markers                       token_index   u16 x 256
//! token_table               seqs_of_names 3 bytes x N     offsets       s32 x N
//! token_index   u16 x 256   token_table                   relative_base u64
//!                           token_index                   seqs_of_names 3 bytes x N
//!
//! names        per symbol: a length (1 byte; 2 from 128 on: (b0 & 0x7f) | b1 << 7), then
//!              that many token numbers; the tokens' strings joined are the type letter and
//!              the name ("Tstartup_64")
//! markers[i]   where symbol 256*i starts in names
//! token_table  256 NUL-terminated strings; each character used in a name is its own token,
//!              at its own code: "0\0" "1\0" ... "9\0" are tokens 0x30..0x39
//! token_index  where token i starts in token_table
//! address      with absolute per-cpu symbols (x86-64 SMP, 6.1 and 6.12): offset >= 0 is the
//!              address itself (a per-cpu symbol), else relative_base - 1 - offset; without:
//!              relative_base + (u32)offset. relative_base is relocated (KASLR) like any
//!              pointer, so addresses are run-time ones.
//! ```
//!
//! The search: every run of the digit tokens is a candidate token table; its token index must
//! follow it and agree with it string by string. The markers end just before the token table
//! (or before `seqs_of_names`, whose size follows from the symbol count); `num_syms` sits just
//! before the names, which must end where the markers start, each marker pointing at its
//! symbol. Offsets must give addresses in symbol order, the text symbols inside the image, and
//! `_text` or `_stext`. Only one set of tables may pass: two is a refusal, not a guess.
//!
//! The image is the guest's, so hostile: reads are checked, loops bounded ([`MAX_SYMS`], the
//! `MAX_*` limits), and whatever does not add up is an error, never a panic.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// Most symbols believed (Debian's 6.1 kernel has 94,266, its 6.12 one about 167,000).
pub const MAX_SYMS: usize = 2_000_000;
const MAX_MARKERS: usize = MAX_SYMS.div_ceil(256);
/// Largest `kallsyms_names` believed.
const MAX_NAMES_BYTES: usize = 64 << 20;
/// Most tokens in, and characters of, one symbol with its type letter (twice KSYM_NAME_LEN).
const MAX_SYMBOL: usize = 1024;
/// Most runs of the digit tokens looked at.
const MAX_HITS: usize = 64;
/// Most searches for `num_syms` before a plausible marker table, over all token tables.
const MAX_SEARCHES: usize = 4096;
/// Most complete sets of tables checked symbol by symbol.
const MAX_CHECKS: usize = 64;
/// Most failed candidates named in an error.
const MAX_REASONS: usize = 3;
/// Most symbols of one name kept while looking up.
const MAX_SAME_NAME: usize = 16;
/// Tokens 0x30..=0x39.
const DIGITS: &[u8; 20] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";

/// The kernel image as mapped: `bytes[i]` is the byte at kernel virtual address `vaddr + i`
/// (pages that could not be read are zero-filled).
pub struct Image<'a> {
    /// The image's bytes.
    pub bytes: &'a [u8],
    /// The kernel virtual address of `bytes[0]`.
    pub vaddr: u64,
}

/// The order of the tables (see the module's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Offsets, relative base, count, names, markers, token table and index (Linux up to 6.1).
    OffsetsFirst,
    /// As [`Layout::OffsetsFirst`] with `kallsyms_seqs_of_names` (3 bytes a symbol) between
    /// the markers and the token table (Linux 6.2 and 6.3; Debian's 6.1.y has it too).
    OffsetsFirstSeqs,
    /// Count, names, markers, token table and index, offsets, relative base, seqs (Linux 6.4
    /// on).
    NamesFirst,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::OffsetsFirst => "offsets-first",
            Layout::OffsetsFirstSeqs => "offsets-first with seqs_of_names",
            Layout::NamesFirst => "names-first",
        })
    }
}

/// What was found, for a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The order of the tables.
    pub layout: Layout,
    /// `kallsyms_num_syms`.
    pub num_syms: usize,
    /// Whether per-cpu symbols are absolute (non-negative offsets).
    pub absolute_percpu: bool,
    /// `kallsyms_relative_base` (run-time).
    pub relative_base: u64,
    /// The kernel virtual address of `kallsyms_token_table`.
    pub token_table: u64,
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kallsyms: {} symbols, {} tables (token table at {:#x}), {}per-cpu offsets \
             absolute, relative base {:#x}",
            self.num_syms,
            self.layout,
            self.token_table,
            if self.absolute_percpu { "" } else { "no " },
            self.relative_base
        )
    }
}

/// A checked set of kallsyms tables in an image.
pub struct Kallsyms<'a> {
    mem: Mem<'a>,
    tokens: Tokens,
    names_at: usize,
    offsets_at: usize,
    info: Info,
}

/// Find and check the kallsyms tables of `image`: exactly one consistent set, or Err(reason).
pub fn find<'a>(image: &Image<'a>) -> Result<Kallsyms<'a>, String> {
    find_within(image, 0..image.bytes.len())
}

/// As [`find`], with the token table searched for only in `image.bytes[within]` (the read-only
/// data, where scripts/kallsyms puts the tables): the rest of the image is not scanned, and
/// addresses are still checked against all of it.
pub fn find_within<'a>(image: &Image<'a>, within: Range<usize>) -> Result<Kallsyms<'a>, String> {
    find_in_runs(image, &[within])
}

/// As [`find_within`], over the ascending, disjoint `runs` of the image (the runs of read-only
/// data pages a kernel maps; the pages between them are never touched by the search, which
/// in a PV dom0 spares a fault through the hypervisor for each).
pub fn find_in_runs<'a>(image: &Image<'a>, runs: &[Range<usize>]) -> Result<Kallsyms<'a>, String> {
    let m = Mem {
        b: image.bytes,
        vaddr: image.vaddr,
    };
    let mut found: Vec<Kallsyms<'a>> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let start = runs.first().map_or(0, |r| r.start);
    let mut hits = Vec::new();
    for run in runs {
        let bytes = image.bytes.get(run.clone()).unwrap_or_default();
        let left = MAX_HITS - hits.len();
        hits.extend(digit_runs(bytes, left)?.into_iter().map(|h| h + run.start));
    }
    let mut token_tables = 0;
    let mut searches = MAX_SEARCHES;
    let mut checks = MAX_CHECKS;
    for &hit in &hits {
        let Some(t) = tokens_at(&m, hit) else {
            continue;
        };
        token_tables += 1;
        for c in candidates(&m, &t, start, &mut searches)? {
            checks = checks
                .checked_sub(1)
                .ok_or("too many candidate kallsyms tables")?;
            match check(&m, &t, &c) {
                Ok(k) => found.push(k),
                Err(e) => failed.push(format!("{} at {:#x}: {e}", c.layout, m.addr(c.num_syms_at))),
            }
        }
    }
    match found.len() {
        1 => found.pop().ok_or_else(String::new),
        0 if !failed.is_empty() => {
            let more = failed.len().saturating_sub(MAX_REASONS);
            failed.truncate(MAX_REASONS);
            Err(format!(
                "no consistent kallsyms tables: {}{}",
                failed.join("; "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ))
        }
        0 if hits.is_empty() => {
            Err("no kallsyms token table (no run of the tokens \"0\" to \"9\")".into())
        }
        0 if token_tables == 0 => Err(format!(
            "no kallsyms token table ({} runs of the tokens \"0\" to \"9\", none with a \
             kallsyms_token_index that agrees)",
            hits.len()
        )),
        0 => Err("no kallsyms num_syms, names and markers before the token table".into()),
        n => Err(format!(
            "{n} consistent sets of kallsyms tables (token tables at {}): refusing to choose",
            found
                .iter()
                .map(|k| format!("{:#x}", k.info.token_table))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl fmt::Debug for Kallsyms<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kallsyms")
            .field("info", &self.info)
            .finish()
    }
}

impl Kallsyms<'_> {
    /// What was found.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The run-time addresses of those of `names` that the tables hold. A name held by several
    /// symbols is taken when exactly one of them is global (upper-case type) or all have one
    /// address; otherwise it is left out.
    pub fn lookup(&self, names: &[&str]) -> HashMap<String, u64> {
        // A handful of names, each compared by length first: no hash of every symbol's name,
        // and an address decoded only for a match (the table holds about 100,000 names).
        let mut want: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        want.sort_unstable();
        want.dedup();
        let longest = want.iter().map(|n| n.len()).max().unwrap_or(0);
        // Per wanted name: (type, address) of its symbols, and how many there were.
        let mut hits: Vec<(Vec<(u8, u64)>, usize)> = vec![(Vec::new(), 0); want.len()];
        let _ = self.each_symbol(longest + 1, |i, name| {
            let Some((&ty, name)) = name.split_first() else {
                return;
            };
            let Some(w) = want.iter().position(|&n| n == name) else {
                return;
            };
            let (Some(h), Some(addr)) = (hits.get_mut(w), self.address(i)) else {
                return;
            };
            h.1 += 1;
            if h.0.len() < MAX_SAME_NAME {
                h.0.push((ty, addr));
            }
        });
        let mut out = HashMap::new();
        for (w, name) in want.into_iter().enumerate() {
            let Some((h, count)) = hits.get(w) else {
                continue;
            };
            if *count > h.len() {
                continue;
            }
            let global: Vec<u64> = h
                .iter()
                .filter(|s| s.0.is_ascii_uppercase())
                .map(|s| s.1)
                .collect();
            let pick: Vec<u64> = if global.is_empty() {
                h.iter().map(|s| s.1).collect()
            } else {
                global
            };
            if let Some(&a) = pick.first() {
                if pick.iter().all(|&b| b == a) {
                    out.insert(String::from_utf8_lossy(name).into_owned(), a);
                }
            }
        }
        out
    }

    /// The address of symbol `i`.
    fn address(&self, i: usize) -> Option<u64> {
        let off = self
            .mem
            .i32(self.offsets_at.checked_add(i.checked_mul(4)?)?)?;
        decode(off, self.info.relative_base, self.info.absolute_percpu)
    }

    /// Call `f(i, type letter and name)` for each symbol of at most `limit` bytes (type letter
    /// included), in table order.
    fn each_symbol(&self, limit: usize, mut f: impl FnMut(usize, &[u8])) -> Result<(), String> {
        let mut buf = Vec::with_capacity(MAX_SYMBOL);
        let mut pos = self.names_at;
        for i in 0..self.info.num_syms {
            let (tok, len) = entry(&self.mem, pos).ok_or("a name entry is cut short")?;
            // Measured first: a longer name is not copied.
            if self.tokens.measure(&self.mem, tok, len)?.1 <= limit
                && self
                    .tokens
                    .expand_upto(&self.mem, tok, len, limit, &mut buf)?
            {
                f(i, &buf);
            }
            pos = tok.checked_add(len).ok_or("names overflow")?;
        }
        Ok(())
    }
}

/// An address from an offset.
fn decode(off: i32, base: u64, absolute_percpu: bool) -> Option<u64> {
    match (absolute_percpu, off >= 0) {
        (true, true) => Some(off as u64),
        // base - 1 - off, with -1 - off = !off >= 0.
        (true, false) => base.checked_add(u64::from(!off as u32)),
        (false, _) => base.checked_add(u64::from(off as u32)),
    }
}

/// The image, with checked little-endian reads and alignment by virtual address.
#[derive(Clone, Copy)]
struct Mem<'a> {
    b: &'a [u8],
    vaddr: u64,
}

impl Mem<'_> {
    fn get<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.b.get(off..off.checked_add(N)?)?.try_into().ok()
    }
    fn u16(&self, off: usize) -> Option<u16> {
        self.get(off).map(u16::from_le_bytes)
    }
    fn u32(&self, off: usize) -> Option<u32> {
        self.get(off).map(u32::from_le_bytes)
    }
    fn i32(&self, off: usize) -> Option<i32> {
        self.get(off).map(i32::from_le_bytes)
    }
    fn u64(&self, off: usize) -> Option<u64> {
        self.get(off).map(u64::from_le_bytes)
    }
    /// The virtual address of `off`.
    fn addr(&self, off: usize) -> u64 {
        self.vaddr.wrapping_add(off as u64)
    }
    /// `off` moved up to an 8-aligned address.
    fn align_up(&self, off: usize) -> Option<usize> {
        off.checked_add((self.addr(off).wrapping_neg() & 7) as usize)
    }
    /// `off` moved down to an 8-aligned address.
    fn align_down(&self, off: usize) -> Option<usize> {
        off.checked_sub((self.addr(off) & 7) as usize)
    }
    fn aligned(&self, off: usize) -> bool {
        self.addr(off) & 7 == 0
    }
    fn contains(&self, a: u64) -> bool {
        a.checked_sub(self.vaddr)
            .is_some_and(|d| d < self.b.len() as u64)
    }
}

mod tables;
#[cfg(test)]
pub(super) mod tests;

use tables::{candidates, check, digit_runs, entry, tokens_at, Tokens};
