//! A small, bounded reader of the kernel's BTF (the `.BTF` section, in guest memory between
//! `__start_BTF` and `__stop_BTF`): just enough to find `struct page`'s fields and an
//! enumerator's value. The bytes are the guest's, so hostile: every offset is checked, nested
//! anonymous members are followed at most [`MAX_DEPTH`] deep, and a bad section is an error,
//! never a panic.
//!
//! ```text
//! header   magic 0xeb9f u16, version 1 u8, flags u8, hdr_len u32,
//!          type_off u32, type_len u32, str_off u32, str_len u32   (offsets after the header)
//! type     name_off u32, info u32 (vlen bits 0-15, kind bits 24-28, kind_flag bit 31),
//!          size_or_type u32, then kind-specific data (members: name_off, type, offset_bits)
//! ```
//! (No crate on crates.io reads BTF from a byte slice without libbpf and with bounded,
//! panic-free parsing of untrusted input; this file is the few types needed.)

use super::layout::PageLayout;

const MAX_DEPTH: u32 = 4;
const BTF_MAGIC: u16 = 0xeb9f;
// Kinds.
const INT: u32 = 1;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// One type's header and where its extra data starts.
#[derive(Debug, Clone, Copy)]
struct Ty {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    extra: usize,
}

/// A parsed BTF section: where each type starts in the type data (the data stays in the
/// bytes, and a type's header is decoded when it is looked at). Four bytes a type: a kernel's
/// BTF has over 100,000 types, and in a PV dom0 each page of a fresh index costs a fault
/// through the hypervisor.
pub struct Btf<'a> {
    /// Offset of type `id`'s header in `data` (`id` 0, void, has none: `u32::MAX`).
    types: Vec<u32>,
    data: &'a [u8],
    strs: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Why a type's header could not be read.
enum Bad {
    Short,
    Kind(u32),
}

/// The header of the type at `at` in `data`, and the length of its kind-specific data.
fn header(data: &[u8], at: usize) -> Result<(Ty, usize), Bad> {
    let name_off = u32_at(data, at).ok_or(Bad::Short)?;
    let info = u32_at(data, at + 4).ok_or(Bad::Short)?;
    let size_or_type = u32_at(data, at + 8).ok_or(Bad::Short)?;
    let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
    let extra_len = match kind {
        INT | VAR | DECL_TAG => 4,
        ARRAY => 12,
        STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
        ENUM | FUNC_PROTO => 8 * vlen,
        2 | 7 | TYPEDEF | VOLATILE | CONST | RESTRICT | 12 | 16 | TYPE_TAG => 0,
        k => return Err(Bad::Kind(k)),
    };
    let ty = Ty {
        name_off,
        kind,
        vlen: vlen as u32,
        kind_flag: info >> 31 == 1,
        size_or_type,
        extra: at + 12,
    };
    Ok((ty, extra_len))
}

impl<'a> Btf<'a> {
    /// Index the types of `bytes` (a whole `.BTF` section).
    pub fn parse(bytes: &'a [u8]) -> Result<Btf<'a>, String> {
        let magic = bytes.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(format!("no BTF magic (found {magic:x?})"));
        }
        let h = |i: usize| u32_at(bytes, 4 + 4 * i).ok_or("BTF header cut short");
        let (hdr_len, type_off, type_len, str_off, str_len) = (h(0)?, h(1)?, h(2)?, h(3)?, h(4)?);
        let sect = |off: u32, len: u32| {
            let s = (hdr_len as usize).checked_add(off as usize)?;
            bytes.get(s..s.checked_add(len as usize)?)
        };
        let data = sect(type_off, type_len).ok_or("BTF type section outside the data")?;
        let strs = sect(str_off, str_len).ok_or("BTF string section outside the data")?;
        let mut types = vec![u32::MAX]; // type id 0 is void
        let mut at = 0usize;
        while at < data.len() {
            let (id, here) = (types.len(), at);
            let bad = move || format!("BTF type {id} cut short at byte {here}");
            let (_, extra_len) = header(data, at).map_err(|e| match e {
                Bad::Short => bad(),
                Bad::Kind(k) => format!("unknown BTF kind {k} (type {id})"),
            })?;
            types.push(u32::try_from(at).map_err(|_| bad())?);
            at = at + 12 + extra_len;
            if at > data.len() || types.len() > 1 << 22 {
                return Err(bad());
            }
        }
        Ok(Btf { types, data, strs })
    }

    /// Type `id`'s header (`None` for void and ids past the last type).
    fn ty(&self, id: u32) -> Option<Ty> {
        let at = *self.types.get(id as usize)?;
        if at == u32::MAX {
            return None;
        }
        header(self.data, at as usize).ok().map(|(t, _)| t)
    }

    /// Every type's header, in id order.
    fn all(&self) -> impl Iterator<Item = Ty> + '_ {
        (1..self.types.len() as u32).filter_map(|id| self.ty(id))
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let s = self.strs.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// Skip typedefs and qualifiers (bounded).
    fn resolve(&self, mut id: u32) -> Option<Ty> {
        for _ in 0..16 {
            let t = self.ty(id)?;
            match t.kind {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// `(name, type, bit offset)` of member `i` of a struct/union.
    fn member(&self, t: &Ty, i: u32) -> Option<(u32, u32, u32)> {
        let at = t.extra + 12 * i as usize;
        let off = u32_at(self.data, at + 8)?;
        let off = if t.kind_flag { off & 0xff_ffff } else { off };
        Some((u32_at(self.data, at)?, u32_at(self.data, at + 4)?, off))
    }

    /// Byte offset of field `want` in `t`, looking into anonymous members.
    fn field(&self, t: &Ty, want: &str, depth: u32) -> Option<u32> {
        if depth > MAX_DEPTH || !matches!(t.kind, STRUCT | UNION) {
            return None;
        }
        let mut anon = Vec::new();
        for i in 0..t.vlen {
            let (name, ty, bits) = self.member(t, i)?;
            let n = self.name(name);
            if n == want.as_bytes() {
                return (bits % 8 == 0).then_some(bits / 8);
            }
            if n.is_empty() {
                anon.push((ty, bits));
            }
        }
        anon.into_iter().find_map(|(ty, bits)| {
            let inner = self.resolve(ty)?;
            (bits % 8 == 0).then_some(())?;
            (bits / 8).checked_add(self.field(&inner, want, depth + 1)?)
        })
    }

    /// The layout of `struct page`.
    pub fn page_layout(&self) -> Result<PageLayout, String> {
        let page = self
            .all()
            .find(|t| t.kind == STRUCT && self.name(t.name_off) == b"page")
            .ok_or("no struct page in the BTF")?;
        let f = |n: &str| self.field(&page, n, 0);
        let need = |n: &str| f(n).ok_or_else(|| format!("struct page has no field {n} in the BTF"));
        PageLayout {
            size: page.size_or_type,
            flags: need("flags")?,
            compound_head: f("compound_head"),
            private: need("private")?,
            mapcount: f("page_type").map_or_else(|| need("_mapcount"), Ok)?,
            refcount: need("_refcount")?,
        }
        .checked()
    }

    /// The value of enumerator `name`, if some enum has it.
    pub fn enumerator(&self, name: &str) -> Option<i64> {
        self.all().find_map(|t| {
            let step = match t.kind {
                ENUM => 8,
                ENUM64 => 12,
                _ => return None,
            };
            (0..t.vlen as usize).find_map(|i| {
                let at = t.extra + step * i;
                if self.name(u32_at(self.data, at)?) != name.as_bytes() {
                    return None;
                }
                let lo = u32_at(self.data, at + 4)?;
                Some(if t.kind == ENUM {
                    if t.kind_flag {
                        lo as i32 as i64
                    } else {
                        lo as i64
                    }
                } else {
                    ((u32_at(self.data, at + 8)? as i64) << 32) | lo as i64
                })
            })
        })
    }
}

/// Build a BTF section (tests: synthetic guests and hostile variants).
#[doc(hidden)]
pub mod build {
    /// A tiny BTF writer: strings and types appended in order.
    #[derive(Default)]
    pub struct BtfBuilder {
        types: Vec<u8>,
        strs: Vec<u8>,
        count: u32,
    }

    impl BtfBuilder {
        /// An empty section (type 0 is void).
        pub fn new() -> Self {
            BtfBuilder {
                strs: vec![0],
                ..Default::default()
            }
        }

        fn s(&mut self, n: &str) -> u32 {
            if n.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(n.as_bytes());
            self.strs.push(0);
            off
        }

        fn w(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }

        /// An int type of `size` bytes; returns its id.
        pub fn int(&mut self, size: u32) -> u32 {
            let n = self.s("int");
            self.w(n);
            self.w(1 << 24);
            self.w(size);
            self.w(size * 8);
            self.count += 1;
            self.count
        }

        /// A struct (or union) with `(name, type, byte offset)` members; returns its id.
        pub fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            m: &[(&str, u32, u32)],
        ) -> u32 {
            let n = self.s(name);
            self.w(n);
            self.w(((if union { 5 } else { 4 }) << 24) | m.len() as u32);
            self.w(size);
            for &(mn, ty, off) in m {
                let mn = self.s(mn);
                self.w(mn);
                self.w(ty);
                self.w(off * 8);
            }
            self.count += 1;
            self.count
        }

        /// An enum with `(name, value)` enumerators.
        pub fn enumeration(&mut self, name: &str, vals: &[(&str, u32)]) -> u32 {
            let n = self.s(name);
            self.w(n);
            self.w((6 << 24) | vals.len() as u32);
            self.w(4);
            for &(vn, v) in vals {
                let vn = self.s(vn);
                self.w(vn);
                self.w(v);
            }
            self.count += 1;
            self.count
        }

        /// The section's bytes.
        pub fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strs.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strs);
            out
        }
    }

    /// The `struct page` of Linux 6.1 on x86-64 (64 bytes), as its BTF nests it, plus `extra`
    /// enumerators.
    pub fn linux_page_btf(extra: &[(&str, u32)]) -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let u64t = b.int(8);
        let u32t = b.int(4);
        let atomic = b.composite(false, "", 4, &[("counter", u32t, 0)]);
        let pagecache = b.composite(
            false,
            "",
            40,
            &[
                ("lru", u64t, 0),
                ("mapping", u64t, 16),
                ("index", u64t, 24),
                ("private", u64t, 32),
            ],
        );
        let tail = b.composite(false, "", 40, &[("compound_head", u64t, 0)]);
        let u1 = b.composite(true, "", 40, &[("", pagecache, 0), ("", tail, 0)]);
        let u2 = b.composite(
            true,
            "",
            4,
            &[("_mapcount", atomic, 0), ("page_type", u32t, 0)],
        );
        b.composite(
            false,
            "page",
            64,
            &[
                ("flags", u64t, 0),
                ("", u1, 8),
                ("", u2, 48),
                ("_refcount", atomic, 52),
            ],
        );
        if !extra.is_empty() {
            b.enumeration("pagetype", extra);
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_struct_page_in_nested_anonymous_members() {
        let bytes = build::linux_page_btf(&[("PGTY_buddy", 0xf0)]);
        let btf = Btf::parse(&bytes).unwrap();
        let l = btf.page_layout().unwrap();
        assert_eq!(
            l,
            PageLayout {
                size: 64,
                flags: 0,
                compound_head: Some(8),
                private: 40,
                mapcount: 48,
                refcount: 52
            }
        );
        assert_eq!(btf.enumerator("PGTY_buddy"), Some(0xf0));
        assert_eq!(btf.enumerator("PG_buddy"), None);
    }

    #[test]
    fn bogus_btf_is_an_error_never_a_panic() {
        let good = build::linux_page_btf(&[]);
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&good[..30]).is_err());
        // Every truncation and every single-byte corruption: an error or a layout, no panic.
        for n in 0..good.len() {
            let _ = Btf::parse(&good[..n]).map(|b| b.page_layout());
        }
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                if let Ok(b) = Btf::parse(&bad) {
                    let _ = b.page_layout();
                    let _ = b.enumerator("PG_buddy");
                }
            }
        }
        // A type that refers to itself as its anonymous member: bounded by MAX_DEPTH.
        let mut b = build::BtfBuilder::new();
        b.composite(false, "page", 64, &[("", 1, 0)]);
        let loopy = b.finish();
        assert!(Btf::parse(&loopy).unwrap().page_layout().is_err());
    }
}
