//! Tests of the kallsyms reader: synthetic tables in each order, and hostile ones.

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
fn a_search_within_a_range_finds_only_tables_inside_it() {
    let syms = symbols(true);
    let t = tables(&syms, Layout::OffsetsFirstSeqs, true);
    let img = image_with(&t, TABLES_AT);
    let image = Image {
        bytes: &img,
        vaddr: VADDR,
    };
    // The range holding the tables: the same symbols as a search of the whole image, their
    // addresses (outside the range) checked against all of it.
    let k = find_within(&image, TABLES_AT..TABLES_AT + t.len()).unwrap();
    assert_eq!(k.lookup(&WANT), run(&img, VADDR).unwrap().1);
    assert_eq!(k.lookup(&["_text"])["_text"], VADDR);
    // A range before them, or past the image, finds nothing.
    assert!(find_within(&image, 0..TABLES_AT).is_err());
    assert!(find_within(&image, img.len()..img.len() + 10).is_err());
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
