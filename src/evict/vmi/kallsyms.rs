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
    let m = Mem {
        b: image.bytes,
        vaddr: image.vaddr,
    };
    let mut found: Vec<Kallsyms<'a>> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let hits = digit_runs(m.b)?;
    let mut token_tables = 0;
    let mut searches = MAX_SEARCHES;
    let mut checks = MAX_CHECKS;
    for &hit in &hits {
        let Some(t) = tokens_at(&m, hit) else {
            continue;
        };
        token_tables += 1;
        for c in candidates(&m, &t, &mut searches)? {
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
        let mut want: HashMap<&[u8], usize> = HashMap::new();
        for n in names {
            let next = want.len();
            want.entry(n.as_bytes()).or_insert(next);
        }
        // Per wanted name: (type, address) of its symbols, and how many there were.
        let mut hits: Vec<(Vec<(u8, u64)>, usize)> = vec![(Vec::new(), 0); want.len()];
        let _ = self.each_symbol(|i, name| {
            let (Some((&ty, name)), Some(addr)) = (name.split_first(), self.address(i)) else {
                return;
            };
            if let Some(h) = want.get(name).and_then(|&w| hits.get_mut(w)) {
                h.1 += 1;
                if h.0.len() < MAX_SAME_NAME {
                    h.0.push((ty, addr));
                }
            }
        });
        let mut out = HashMap::new();
        for (name, w) in want {
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

    /// Call `f(i, type letter and name)` for each symbol, in table order.
    fn each_symbol(&self, mut f: impl FnMut(usize, &[u8])) -> Result<(), String> {
        let mut buf = Vec::with_capacity(MAX_SYMBOL);
        let mut pos = self.names_at;
        for i in 0..self.info.num_syms {
            let (tok, len) = entry(&self.mem, pos).ok_or("a name entry is cut short")?;
            self.tokens.expand(&self.mem, tok, len, &mut buf)?;
            f(i, &buf);
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

/// Where the digit tokens run ("0\0" ... "9\0").
fn digit_runs(b: &[u8]) -> Result<Vec<usize>, String> {
    let mut hits = Vec::new();
    for at in memchr::memmem::find_iter(b, DIGITS) {
        if hits.len() == MAX_HITS {
            return Err(format!(
                "more than {MAX_HITS} runs of the tokens \"0\" to \"9\": refusing to search"
            ));
        }
        hits.push(at);
    }
    Ok(hits)
}

/// A checked token table and index.
#[derive(Clone)]
struct Tokens {
    /// Offset of `kallsyms_token_table`.
    at: usize,
    /// Offset of `kallsyms_token_index`.
    index_at: usize,
    /// (offset, length) of each token's string.
    spans: [(usize, usize); 256],
}

impl Tokens {
    /// Append the expansion of the `len` tokens at `tok` to a cleared `buf`.
    fn expand(&self, m: &Mem, tok: usize, len: usize, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.clear();
        let tokens =
            m.b.get(tok..tok.checked_add(len).ok_or("names overflow")?)
                .ok_or("a name entry is cut short")?;
        for &t in tokens {
            let (s, l) = self.spans[usize::from(t)];
            let text =
                m.b.get(s..s.saturating_add(l))
                    .ok_or("a token is cut short")?;
            if buf.len().saturating_add(l) > MAX_SYMBOL {
                return Err(format!("a symbol longer than {MAX_SYMBOL} characters"));
            }
            buf.extend_from_slice(text);
        }
        Ok(())
    }
}

/// The token table whose token "0" is at `hit`, if its index follows it and agrees with it.
fn tokens_at(m: &Mem, hit: usize) -> Option<Tokens> {
    // Tokens 0x30..=0xff, then the index at the next 8-aligned address. The index is u16, so
    // the table is smaller than 64 KiB.
    let limit = m.b.len().min(hit.saturating_add(1 << 16));
    let mut pos = hit;
    for _ in 0x30..256 {
        pos = pos + m.b.get(pos..limit)?.iter().position(|&c| c == 0)? + 1;
    }
    let end = pos;
    let index_at = m.align_up(end)?;
    let mut index = [0usize; 256];
    for (i, x) in index.iter_mut().enumerate() {
        *x = usize::from(m.u16(index_at.checked_add(2 * i)?)?);
    }
    let at = hit.checked_sub(index[0x30])?;
    if index[0] != 0 || !m.aligned(at) {
        return None;
    }
    // Every string must start where the index says and end before the next one.
    let mut spans = [(0, 0); 256];
    let mut pos = at;
    for (i, &x) in index.iter().enumerate() {
        if pos - at != x {
            return None;
        }
        let len = m.b.get(pos..end)?.iter().position(|&c| c == 0)?;
        spans[i] = (pos, len);
        pos += len + 1;
    }
    (pos == end).then_some(Tokens {
        at,
        index_at,
        spans,
    })
}

/// A possible set of tables around a token table.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    layout: Layout,
    /// Offset of `kallsyms_num_syms`.
    num_syms_at: usize,
    num_syms: usize,
    /// Offset of `kallsyms_markers`.
    markers_at: usize,
}

/// The length byte(s) of the name entry at `pos`: (offset of its tokens, their number).
fn entry(m: &Mem, pos: usize) -> Option<(usize, usize)> {
    let b0 = *m.b.get(pos)?;
    if b0 & 0x80 == 0 {
        return (b0 != 0).then_some((pos.checked_add(1)?, usize::from(b0)));
    }
    // Two bytes (Linux 6.1 on), only for lengths from 128 on.
    let b1 = *m.b.get(pos.checked_add(1)?)?;
    let len = usize::from(b0 & 0x7f) | usize::from(b1) << 7;
    (b1 != 0 && b1 & 0x80 == 0 && len <= MAX_SYMBOL).then_some((pos.checked_add(2)?, len))
}

/// The end of `count` name entries from `pos`, if they end by `limit`.
fn walk(m: &Mem, mut pos: usize, count: usize, limit: usize) -> Option<usize> {
    for _ in 0..count {
        let (tok, len) = entry(m, pos)?;
        pos = tok.checked_add(len)?;
        if pos > limit {
            return None;
        }
    }
    Some(pos)
}

/// Could `markers` (`count` of them) start at `at`: 0 first, increasing at both ends.
fn markers_plausible(m: &Mem, at: usize, count: usize) -> bool {
    let word = |i: usize| {
        i.checked_mul(4)
            .and_then(|o| at.checked_add(o))
            .and_then(|o| m.u32(o))
    };
    word(0) == Some(0)
        && (count == 1
            || (word(1).is_some_and(|v| v > 0)
                && word(count - 1)
                    .zip(word(count - 2))
                    .is_some_and(|(a, b)| a > b)))
}

/// The (offset of num_syms, num_syms) that fit the `count` markers at `markers_at`: the
/// count, 4 bytes of padding, then names whose entries from the last marker's on end just
/// before the markers.
fn names_before(m: &Mem, markers_at: usize, count: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let Some(last) = (count - 1)
        .checked_mul(4)
        .and_then(|o| m.u32(markers_at.checked_add(o)?))
    else {
        return out;
    };
    let last = last as usize;
    let first = 256 * (count - 1);
    // At least one entry of 2 bytes after the last marker's symbol, at most 256.
    let Some(hi) = markers_at.checked_sub(last).and_then(|o| o.checked_sub(2)) else {
        return out;
    };
    if last > MAX_NAMES_BYTES {
        return out;
    }
    let lo = hi.saturating_sub(256 * (2 + MAX_SYMBOL)).max(8);
    let Some(mut names_at) = m.align_up(lo) else {
        return out;
    };
    while names_at <= hi {
        if let (Some(n), Some(0)) = (m.u32(names_at - 8), m.u32(names_at - 4)) {
            let n = n as usize;
            if n > first && n <= first + 256 {
                let end = names_at
                    .checked_add(last)
                    .and_then(|p| walk(m, p, n - first, markers_at));
                if end.and_then(|e| m.align_up(e)) == Some(markers_at) {
                    out.push((names_at - 8, n));
                }
            }
        }
        names_at += 8;
    }
    out
}

/// The sets of tables that could go with token table `t`, by layout.
fn candidates(m: &Mem, t: &Tokens, searches: &mut usize) -> Result<Vec<Candidate>, String> {
    let mut out = Vec::new();
    let mut search = |markers_at: usize, count: usize, layouts: &[Layout]| {
        if !markers_plausible(m, markers_at, count) {
            return Ok(());
        }
        *searches = searches
            .checked_sub(1)
            .ok_or("too many candidate kallsyms markers")?;
        for (num_syms_at, num_syms) in names_before(m, markers_at, count) {
            for &layout in layouts {
                out.push(Candidate {
                    layout,
                    num_syms_at,
                    num_syms,
                    markers_at,
                });
            }
        }
        Ok::<(), String>(())
    };
    // The markers just before the token table.
    for count in 1..=MAX_MARKERS {
        let Some(at) = t.at.checked_sub(4 * count).and_then(|o| m.align_down(o)) else {
            break;
        };
        search(at, count, &[Layout::OffsetsFirst, Layout::NamesFirst])?;
    }
    // The markers, then 3 bytes a symbol of seqs_of_names, before the token table.
    let mut last = None;
    for n in 1..=MAX_SYMS {
        let count = n.div_ceil(256);
        let Some(at) =
            t.at.checked_sub(3 * n)
                .and_then(|o| m.align_down(o))
                .and_then(|o| o.checked_sub(4 * count))
                .and_then(|o| m.align_down(o))
        else {
            break;
        };
        if last == Some((at, count)) {
            continue;
        }
        last = Some((at, count));
        search(at, count, &[Layout::OffsetsFirstSeqs])?;
    }
    Ok(out)
}

/// Check a candidate set of tables throughout.
fn check<'a>(m: &Mem<'a>, t: &Tokens, c: &Candidate) -> Result<Kallsyms<'a>, String> {
    let n = c.num_syms;
    if n == 0 || n > MAX_SYMS {
        return Err(format!("kallsyms_num_syms {n} is implausible"));
    }
    let names_at = c.num_syms_at + 8;
    // Names and markers, and each symbol's type letter.
    let mut types = Vec::with_capacity(n);
    // Symbols named _text or _stext.
    let mut text_at = Vec::new();
    let mut buf = Vec::with_capacity(MAX_SYMBOL);
    let mut pos = names_at;
    for i in 0..n {
        if i % 256 == 0 {
            let marker = m.u32(c.markers_at + 4 * (i / 256));
            if marker.map(|v| v as usize) != Some(pos - names_at) {
                return Err(format!(
                    "kallsyms_markers[{}] is {marker:?}, symbol {i} starts at {}",
                    i / 256,
                    pos - names_at
                ));
            }
        }
        let (tok, len) = entry(m, pos).ok_or_else(|| format!("symbol {i}'s length is bad"))?;
        t.expand(m, tok, len, &mut buf)?;
        match buf.split_first() {
            Some((&ty, name)) if ty.is_ascii_alphabetic() && !name.is_empty() => {
                types.push(ty);
                if name == b"_text" || name == b"_stext" {
                    text_at.push(i);
                }
            }
            _ => return Err(format!("symbol {i} has no type letter and name")),
        }
        pos = tok + len;
        if pos > c.markers_at || pos - names_at > MAX_NAMES_BYTES {
            return Err("kallsyms_names runs into the markers".into());
        }
    }
    if m.align_up(pos) != Some(c.markers_at) {
        return Err("kallsyms_names does not end where the markers start".into());
    }
    let after_markers = m.align_up(c.markers_at + 4 * n.div_ceil(256));
    let seqs_at = match c.layout {
        Layout::OffsetsFirst | Layout::NamesFirst => (after_markers == Some(t.at)).then_some(None),
        Layout::OffsetsFirstSeqs => after_markers
            .filter(|&q| q.checked_add(3 * n).and_then(|e| m.align_up(e)) == Some(t.at))
            .map(Some),
    }
    .ok_or("the markers do not end where the token table starts")?;
    let (offsets_at, base_at, seqs_at) = match c.layout {
        Layout::OffsetsFirst | Layout::OffsetsFirstSeqs => {
            let base_at = c
                .num_syms_at
                .checked_sub(8)
                .ok_or("no room for kallsyms_relative_base")?;
            let offsets_at = base_at
                .checked_sub(4 * n)
                .and_then(|o| m.align_down(o))
                .ok_or("no room for kallsyms_offsets")?;
            (offsets_at, base_at, seqs_at)
        }
        Layout::NamesFirst => {
            let offsets_at = m
                .align_up(t.index_at + 512)
                .ok_or("no room for kallsyms_offsets")?;
            let base_at = m
                .align_up(offsets_at + 4 * n)
                .ok_or("no room for kallsyms_relative_base")?;
            (offsets_at, base_at, Some(base_at + 8))
        }
    };
    let relative_base = m
        .u64(base_at)
        .ok_or("kallsyms_relative_base is outside the image")?;
    if let Some(q) = seqs_at {
        check_seqs(m, q, n)?;
    }
    let absolute = check_offsets(m, offsets_at, relative_base, true, &types);
    let relative = check_offsets(m, offsets_at, relative_base, false, &types);
    let absolute_percpu = match (absolute, relative) {
        (Ok(()), Err(_)) => true,
        (Err(_), Ok(())) => false,
        (Ok(()), Ok(())) => {
            return Err("the offsets read both with and without absolute per-cpu".into())
        }
        (Err(a), Err(r)) => return Err(format!("{a}; {r}")),
    };
    let k = Kallsyms {
        mem: *m,
        tokens: t.clone(),
        names_at,
        offsets_at,
        info: Info {
            layout: c.layout,
            num_syms: n,
            absolute_percpu,
            relative_base,
            token_table: m.addr(t.at),
        },
    };
    if !text_at
        .iter()
        .any(|&i| k.address(i).is_some_and(|a| m.contains(a)))
    {
        return Err("no _text or _stext in the image".into());
    }
    Ok(k)
}

/// `kallsyms_seqs_of_names`: a permutation of the symbols, 3 big-endian bytes each.
fn check_seqs(m: &Mem, at: usize, n: usize) -> Result<(), String> {
    let bytes = at
        .checked_add(3 * n)
        .and_then(|e| m.b.get(at..e))
        .ok_or("kallsyms_seqs_of_names is outside the image")?;
    let mut seen = vec![false; n];
    for s in bytes.chunks_exact(3) {
        let v = usize::from(s[0]) << 16 | usize::from(s[1]) << 8 | usize::from(s[2]);
        match seen.get_mut(v) {
            Some(x) if !*x => *x = true,
            _ => return Err("kallsyms_seqs_of_names is no permutation".into()),
        }
    }
    Ok(())
}

/// The offsets must give addresses in table order, the first relative symbol at the base,
/// and every text symbol inside the image.
fn check_offsets(
    m: &Mem,
    at: usize,
    base: u64,
    absolute_percpu: bool,
    types: &[u8],
) -> Result<(), String> {
    let how = if absolute_percpu {
        "with absolute per-cpu"
    } else {
        "base-relative"
    };
    let mut prev = 0u64;
    let mut first_relative = true;
    let mut text = 0usize;
    for (i, &ty) in types.iter().enumerate() {
        let off = m
            .i32(at + 4 * i)
            .ok_or("kallsyms_offsets is outside the image")?;
        let addr = decode(off, base, absolute_percpu)
            .ok_or_else(|| format!("symbol {i}'s address overflows ({how})"))?;
        if addr < prev {
            return Err(format!("the offsets read {how} are not in address order"));
        }
        prev = addr;
        if (!absolute_percpu || off < 0) && std::mem::take(&mut first_relative) && addr != base {
            return Err(format!(
                "the first relative symbol read {how} is not at the relative base"
            ));
        }
        if matches!(ty, b't' | b'T') {
            if !m.contains(addr) {
                return Err(format!(
                    "text symbol {i} read {how} is at {addr:#x}, outside the image"
                ));
            }
            text += 1;
        }
    }
    if text == 0 {
        return Err("no text symbols".into());
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const VADDR: u64 = 0xffff_ffff_8100_0000;
    const IMAGE: usize = 256 << 10;
    const TABLES_AT: usize = 0x20000;

    pub(in crate::evict::vmi) struct Sym {
        name: String,
        ty: u8,
        addr: u64,
        percpu: bool,
    }

    pub(in crate::evict::vmi) fn sym(name: &str, ty: u8, addr: u64, percpu: bool) -> Sym {
        Sym {
            name: name.into(),
            ty,
            addr,
            percpu,
        }
    }

    /// 700 symbols (3 markers), per-cpu ones first when `percpu`, a name of 300 tokens.
    fn symbols(percpu: bool) -> Vec<Sym> {
        let mut s = Vec::new();
        if percpu {
            s.push(sym("fixed_percpu_data", b'A', 0, true));
            s.push(sym("cpu_number", b'A', 0x1000, true));
            s.push(sym("runqueues", b'A', 0x2_0000, true));
        }
        s.push(sym("_text", b'T', VADDR, false));
        s.push(sym("startup_64", b'T', VADDR, false));
        for i in 0..650u64 {
            let ty = if i % 3 == 0 { b'T' } else { b't' };
            s.push(sym(
                &format!("func_{i:04}"),
                ty,
                VADDR + 0x100 + 0x40 * i,
                false,
            ));
        }
        s.push(sym(&"y".repeat(300), b't', VADDR + 0xc000, false));
        s.push(sym("dup", b't', VADDR + 0xc100, false));
        s.push(sym("dup", b't', VADDR + 0xc200, false));
        s.push(sym("dup_global", b't', VADDR + 0xc300, false));
        s.push(sym("dup_global", b'T', VADDR + 0xc400, false));
        s.push(sym("_etext", b'T', VADDR + 0xd000, false));
        s.push(sym("linux_banner", b'D', VADDR + 0x1_8000, false));
        for i in 0..40u64 {
            s.push(sym(
                &format!("data_{i}"),
                b'd',
                VADDR + 0x1_9000 + 8 * i,
                false,
            ));
        }
        // Data beyond the image is no error.
        s.push(sym("max_pfn", b'B', VADDR + 0x200_0000, false));
        s
    }

    const MULTI: [&str; 6] = ["func_", "_0", "per", "cpu_", "da", "ta_"];

    /// Token strings: each printable character at its own code, a few longer ones above 0x80.
    fn token_strings() -> Vec<Vec<u8>> {
        let mut t = vec![Vec::new(); 256];
        for c in 0x21..0x7fu8 {
            t[usize::from(c)] = vec![c];
        }
        for (i, s) in MULTI.iter().enumerate() {
            t[0x80 + i] = s.as_bytes().to_vec();
        }
        t
    }

    fn compress(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            match MULTI.iter().position(|m| s[i..].starts_with(m.as_bytes())) {
                Some(k) => {
                    out.push(0x80 + k as u8);
                    i += MULTI[k].len();
                }
                None => {
                    out.push(s[i]);
                    i += 1;
                }
            }
        }
        out
    }

    fn pad8(v: &mut Vec<u8>) {
        while v.len() % 8 != 0 {
            v.push(0);
        }
    }

    /// The tables as `scripts/kallsyms` would lay them out (from an 8-aligned address).
    pub(in crate::evict::vmi) fn tables(
        syms: &[Sym],
        layout: Layout,
        absolute_percpu: bool,
    ) -> Vec<u8> {
        let n = syms.len();
        let base = syms.iter().find(|s| !s.percpu).unwrap().addr;
        let mut offsets = Vec::new();
        for s in syms {
            let v: i32 = match (absolute_percpu, s.percpu) {
                (true, true) => s.addr as i32,
                (true, false) => (base as i64 - s.addr as i64 - 1) as i32,
                (false, _) => (s.addr - base) as u32 as i32,
            };
            offsets.extend_from_slice(&v.to_le_bytes());
        }
        let mut names = Vec::new();
        let mut markers = Vec::new();
        for (i, s) in syms.iter().enumerate() {
            if i % 256 == 0 {
                markers.extend_from_slice(&(names.len() as u32).to_le_bytes());
            }
            let mut full = vec![s.ty];
            full.extend_from_slice(s.name.as_bytes());
            let c = compress(&full);
            if c.len() > 0x7f {
                names.push((c.len() & 0x7f) as u8 | 0x80);
                names.push((c.len() >> 7) as u8);
            } else {
                names.push(c.len() as u8);
            }
            names.extend_from_slice(&c);
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| (&syms[a].name, syms[a].addr).cmp(&(&syms[b].name, syms[b].addr)));
        let mut seqs = Vec::new();
        for i in order {
            seqs.extend_from_slice(&(i as u32).to_be_bytes()[1..]);
        }
        let mut token_table = Vec::new();
        let mut token_index = Vec::new();
        for t in token_strings() {
            token_index.extend_from_slice(&(token_table.len() as u16).to_le_bytes());
            token_table.extend_from_slice(&t);
            token_table.push(0);
        }
        let num = (n as u32).to_le_bytes().to_vec();
        let base = base.to_le_bytes().to_vec();
        let parts: Vec<&[u8]> = match layout {
            Layout::OffsetsFirst => vec![
                &offsets,
                &base,
                &num,
                &names,
                &markers,
                &token_table,
                &token_index,
            ],
            Layout::OffsetsFirstSeqs => vec![
                &offsets,
                &base,
                &num,
                &names,
                &markers,
                &seqs,
                &token_table,
                &token_index,
            ],
            Layout::NamesFirst => vec![
                &num,
                &names,
                &markers,
                &token_table,
                &token_index,
                &offsets,
                &base,
                &seqs,
            ],
        };
        let mut out = Vec::new();
        for p in parts {
            pad8(&mut out);
            out.extend_from_slice(p);
        }
        out
    }

    fn junk(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// An image of junk with `t` at `at`.
    fn image_with(t: &[u8], at: usize) -> Vec<u8> {
        let mut img = junk(IMAGE, 0x9e37_79b9_7f4a_7c15);
        img[at..at + t.len()].copy_from_slice(t);
        img
    }

    const WANT: [&str; 10] = [
        "_text",
        "linux_banner",
        "max_pfn",
        "func_0123",
        "fixed_percpu_data",
        "runqueues",
        "dup",
        "dup_global",
        "no_such_symbol",
        "_etext",
    ];

    fn run(img: &[u8], vaddr: u64) -> Result<(Info, HashMap<String, u64>), String> {
        let k = find(&Image { bytes: img, vaddr })?;
        Ok((k.info().clone(), k.lookup(&WANT)))
    }

    #[test]
    fn every_layout_gives_the_run_time_addresses() {
        let long = "y".repeat(300);
        for (layout, abs) in [
            (Layout::OffsetsFirst, true),
            (Layout::OffsetsFirstSeqs, true),
            (Layout::NamesFirst, true),
            (Layout::NamesFirst, false),
            (Layout::OffsetsFirst, false),
        ] {
            let syms = symbols(abs);
            let img = image_with(&tables(&syms, layout, abs), TABLES_AT);
            let (info, got) = run(&img, VADDR).unwrap_or_else(|e| panic!("{layout}: {e}"));
            assert_eq!(info.layout, layout);
            assert_eq!(info.num_syms, syms.len());
            assert_eq!(info.absolute_percpu, abs);
            assert_eq!(info.relative_base, VADDR);
            assert_eq!(info.token_table % 8, 0);
            let mut want = HashMap::from([
                ("_text".to_string(), VADDR),
                ("linux_banner".into(), VADDR + 0x1_8000),
                ("max_pfn".into(), VADDR + 0x200_0000),
                ("func_0123".into(), VADDR + 0x100 + 0x40 * 123),
                ("dup_global".into(), VADDR + 0xc400),
                ("_etext".into(), VADDR + 0xd000),
            ]);
            if abs {
                want.insert("fixed_percpu_data".into(), 0);
                want.insert("runqueues".into(), 0x2_0000);
            }
            assert_eq!(got, want, "{layout}");
            let k = find(&Image {
                bytes: &img,
                vaddr: VADDR,
            })
            .unwrap();
            assert_eq!(k.lookup(&[&long])[&long], VADDR + 0xc000, "{layout}");
            assert!(info
                .to_string()
                .contains(&format!("{} symbols", syms.len())));
        }
    }

    #[test]
    fn alignment_follows_the_virtual_address() {
        // The buffer starts 4 bytes past an 8-aligned address: the tables sit at an odd
        // multiple of 4 in it.
        let syms = symbols(true);
        for layout in [Layout::OffsetsFirstSeqs, Layout::NamesFirst] {
            let t = tables(&syms, layout, true);
            let img = image_with(&t, TABLES_AT + 4);
            let (info, got) = run(&img, VADDR - 4).unwrap();
            assert_eq!(info.layout, layout);
            assert_eq!(got["_text"], VADDR);
            // Misplaced by 4 bytes against the addresses, they are not taken.
            let img = image_with(&t, TABLES_AT + 4);
            assert!(run(&img, VADDR).is_err(), "{layout}");
        }
    }

    /// A names-first table built from `symbols(true)`, its symbol count, and the offsets in
    /// it of the markers and the token table.
    fn names_first() -> (Vec<u8>, usize, usize, usize) {
        let syms = symbols(true);
        let t = tables(&syms, Layout::NamesFirst, true);
        let img = image_with(&t, TABLES_AT);
        let k = find(&Image {
            bytes: &img,
            vaddr: VADDR,
        })
        .unwrap();
        let token_table = (k.info.token_table - VADDR) as usize - TABLES_AT;
        let markers = (token_table - 4 * syms.len().div_ceil(256)) / 8 * 8;
        (t, syms.len(), token_table, markers)
    }

    #[test]
    fn corrupt_tables_are_refused() {
        let (t, n, token_table, markers) = names_first();
        let index = (token_table + token_strings().iter().map(|s| s.len() + 1).sum::<usize>())
            .next_multiple_of(8);
        let offsets = index + 512;
        type Corrupt = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Corrupt)> = vec![
            ("truncated", Box::new(|t| t.truncate(t.len() / 2))),
            (
                "token index out of range",
                Box::new(move |t| t[index + 2 * 0x41..][..2].copy_from_slice(&[0xff, 0xff])),
            ),
            (
                "huge num_syms",
                Box::new(|t| t[..4].copy_from_slice(&u32::MAX.to_le_bytes())),
            ),
            (
                "num_syms over the limit",
                Box::new(|t| t[..4].copy_from_slice(&(MAX_SYMS as u32 + 1).to_le_bytes())),
            ),
            (
                "num_syms one more",
                Box::new(move |t| t[..4].copy_from_slice(&(n as u32 + 1).to_le_bytes())),
            ),
            (
                "a marker lies",
                Box::new(move |t| t[markers + 4] = t[markers + 4].wrapping_add(1)),
            ),
            (
                "offsets out of order",
                Box::new(move |t| {
                    let (a, b) = (offsets + 4 * 100, offsets + 4 * 200);
                    for k in 0..4 {
                        t.swap(a + k, b + k);
                    }
                }),
            ),
            (
                "relative base off the image",
                Box::new(move |t| {
                    let base = (offsets + 4 * n).next_multiple_of(8);
                    t[base..base + 8].copy_from_slice(&0xffff_ffff_a000_0000u64.to_le_bytes());
                }),
            ),
            ("a name entry with a length of zero", Box::new(|t| t[8] = 0)),
            (
                "seqs_of_names no permutation",
                Box::new(move |t| {
                    let seqs = (offsets + 4 * n).next_multiple_of(8) + 8;
                    t.copy_within(seqs + 3..seqs + 6, seqs);
                }),
            ),
        ];
        for (what, corrupt) in cases {
            let mut t = t.clone();
            corrupt(&mut t);
            let img = image_with(&t, TABLES_AT);
            assert!(run(&img, VADDR).is_err(), "{what}: accepted");
        }
    }

    #[test]
    fn two_copies_are_refused() {
        let syms = symbols(true);
        let t = tables(&syms, Layout::NamesFirst, true);
        let mut img = image_with(&t, TABLES_AT);
        img[TABLES_AT + 0x10000..][..t.len()].copy_from_slice(&t);
        let e = run(&img, VADDR).unwrap_err();
        assert!(e.contains("refusing to choose"), "{e}");
    }

    #[test]
    fn no_tables_no_panic() {
        for img in [vec![], vec![0u8; 7], vec![0u8; 1 << 16], junk(1 << 16, 7)] {
            for vaddr in [0, VADDR, u64::MAX - 3] {
                assert!(run(&img, vaddr).is_err());
            }
        }
        // Only a token table.
        let t: Vec<u8> = token_strings()
            .into_iter()
            .flat_map(|mut s| {
                s.push(0);
                s
            })
            .collect();
        let e = run(&image_with(&t, TABLES_AT), VADDR).unwrap_err();
        assert!(e.starts_with("no "), "{e}");
        // Many runs of the digit tokens.
        let img: Vec<u8> = DIGITS
            .iter()
            .copied()
            .cycle()
            .take(DIGITS.len() * 100)
            .collect();
        assert!(run(&img, VADDR).unwrap_err().contains("refusing to search"));
    }

    #[test]
    fn random_corruption_never_panics() {
        let syms = symbols(true);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (round, layout) in [Layout::OffsetsFirstSeqs, Layout::NamesFirst]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let t = tables(&syms, layout, true);
            let mut img = image_with(&t, TABLES_AT);
            for _ in 0..(1 + round % 8) {
                let at = TABLES_AT + (rnd() as usize) % t.len();
                img[at] = rnd() as u8;
            }
            let vaddr = if round % 5 == 0 { rnd() } else { VADDR };
            if let Ok((info, _)) = run(&img, vaddr) {
                assert_eq!(info.num_syms, syms.len(), "round {round}");
            }
        }
    }
}
