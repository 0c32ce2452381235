//! Finding and checking the tables: the digit run of the token table, its index, the
//! markers, names and `num_syms` before it, the offsets, each against the others
//! (the format is in the parent module's header).

use super::*;

/// Where the digit tokens run ("0\0" ... "9\0"), at most `most` of them.
pub(super) fn digit_runs(b: &[u8], most: usize) -> Result<Vec<usize>, String> {
    let mut hits = Vec::new();
    for at in memchr::memmem::find_iter(b, DIGITS) {
        if hits.len() == most {
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
pub(super) struct Tokens {
    /// Offset of `kallsyms_token_table`.
    at: usize,
    /// Offset of `kallsyms_token_index`.
    index_at: usize,
    /// (offset, length) of each token's string.
    spans: [(usize, usize); 256],
}

impl Tokens {
    /// The first byte and the length of the expansion of the `len` tokens at `tok`, without
    /// copying it (a name longer than [`MAX_SYMBOL`] is an error).
    pub(super) fn measure(
        &self,
        m: &Mem,
        tok: usize,
        len: usize,
    ) -> Result<(Option<u8>, usize), String> {
        let tokens =
            m.b.get(tok..tok.checked_add(len).ok_or("names overflow")?)
                .ok_or("a name entry is cut short")?;
        let (mut first, mut total) = (None, 0usize);
        for &t in tokens {
            let (s, l) = self.spans[usize::from(t)];
            if first.is_none() && l > 0 {
                first = Some(*m.b.get(s).ok_or("a token is cut short")?);
            }
            total = total.saturating_add(l);
            if total > MAX_SYMBOL {
                return Err(format!("a symbol longer than {MAX_SYMBOL} characters"));
            }
        }
        Ok((first, total))
    }

    /// Append the expansion of the `len` tokens at `tok` to a cleared `buf`, stopping with
    /// `false` (and `buf` cut short) as soon as it would be longer than `limit` bytes.
    pub(super) fn expand_upto(
        &self,
        m: &Mem,
        tok: usize,
        len: usize,
        limit: usize,
        buf: &mut Vec<u8>,
    ) -> Result<bool, String> {
        buf.clear();
        let tokens =
            m.b.get(tok..tok.checked_add(len).ok_or("names overflow")?)
                .ok_or("a name entry is cut short")?;
        for &t in tokens {
            let (s, l) = self.spans[usize::from(t)];
            if buf.len().saturating_add(l) > limit {
                return Ok(false);
            }
            let text =
                m.b.get(s..s.saturating_add(l))
                    .ok_or("a token is cut short")?;
            buf.extend_from_slice(text);
        }
        Ok(true)
    }
}

/// The token table whose token "0" is at `hit`, if its index follows it and agrees with it.
pub(super) fn tokens_at(m: &Mem, hit: usize) -> Option<Tokens> {
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
pub(super) struct Candidate {
    pub(super) layout: Layout,
    /// Offset of `kallsyms_num_syms`.
    pub(super) num_syms_at: usize,
    num_syms: usize,
    /// Offset of `kallsyms_markers`.
    markers_at: usize,
}

/// The length byte(s) of the name entry at `pos`: (offset of its tokens, their number).
pub(super) fn entry(m: &Mem, pos: usize) -> Option<(usize, usize)> {
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

/// The sets of tables that could go with token table `t`, by layout, none of them starting
/// below offset `floor` (where the searched span starts).
pub(super) fn candidates(
    m: &Mem,
    t: &Tokens,
    floor: usize,
    searches: &mut usize,
) -> Result<Vec<Candidate>, String> {
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
    // The markers, then 3 bytes a symbol of seqs_of_names, before the token table. Before
    // them, 4 bytes a symbol of offsets and at least 2 of names: n symbols take 9n bytes or
    // more above `floor`, which bounds the counts tried (a tenth of MAX_SYMS for the
    // read-only data of Debian's 6.1 kernel: this loop was most of the search's CPU).
    let most = (t.at.saturating_sub(floor) / 9).min(MAX_SYMS);
    let mut last = None;
    for n in 1..=most {
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
pub(super) fn check<'a>(m: &Mem<'a>, t: &Tokens, c: &Candidate) -> Result<Kallsyms<'a>, String> {
    let n = c.num_syms;
    if n == 0 || n > MAX_SYMS {
        return Err(format!("kallsyms_num_syms {n} is implausible"));
    }
    let names_at = c.num_syms_at + 8;
    // Names and markers, and each symbol's type letter. Names are measured, not copied: only
    // those short enough to be `_text` or `_stext` are expanded (copying every name was most
    // of the search's CPU once the candidates were bounded).
    let mut types = Vec::with_capacity(n);
    // Symbols named _text or _stext.
    let mut text_at = Vec::new();
    const TEXT_NAMES: [&[u8]; 2] = [b"_text", b"_stext"];
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
        match t.measure(m, tok, len)? {
            (Some(ty), total) if ty.is_ascii_alphabetic() && total > 1 => {
                types.push(ty);
                if total <= 1 + b"_stext".len()
                    && t.expand_upto(m, tok, len, total, &mut buf)?
                    && TEXT_NAMES.contains(&&buf[1..])
                {
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
