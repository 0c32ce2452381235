//! `struct page` as the classifier needs it, and the ONE table of how each Linux version marks
//! the head page of a free buddy block.
//!
//! A free block of `2^order` pages is marked only in its first `struct page`; the order is in
//! `page->private`. The marking (checked against the kernel sources, include/linux/page-flags.h):
//!
//! | kernel        | the head is free when                                           |
//! |---------------|-----------------------------------------------------------------|
//! | up to 4.17    | `_mapcount == -128` (PAGE_BUDDY_MAPCOUNT_VALUE)                  |
//! | 4.18 - 6.10   | `page_type & (0xf0000000 \| 0x80) == 0xf0000000` (bit CLEARED)   |
//! | 6.11          | `page_type & (0x80000000 \| 0x40000000) == 0x80000000` (CLEARED) |
//! | 6.12 on       | `page_type >> 24 == 0xf0` (PGTY_buddy)                           |
//!
//! `page_type` shares its word with `_mapcount`; a page with no type and no mappings holds
//! -1 there in every version. Pages on the per-CPU lists are not marked (they stay stored).

/// Offsets (bytes) of the `struct page` fields the classifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageLayout {
    /// `sizeof(struct page)`.
    pub size: u32,
    /// `flags` (u64).
    pub flags: u32,
    /// `compound_head` (u64, bit 0 set on tail pages of compound pages), if the kernel has it.
    pub compound_head: Option<u32>,
    /// `private` (u64): the order of a free block's head.
    pub private: u32,
    /// `page_type` / `_mapcount` (u32).
    pub mapcount: u32,
    /// `_refcount` (u32).
    pub refcount: u32,
}

impl PageLayout {
    /// The layout if every field lies inside the struct and the size is plausible.
    pub fn checked(self) -> Result<PageLayout, String> {
        let fits = |off: u32, w: u32| off.checked_add(w).is_some_and(|e| e <= self.size);
        if !(32..=256).contains(&self.size) || self.size % 8 != 0 {
            return Err(format!(
                "sizeof(struct page) = {} is implausible",
                self.size
            ));
        }
        let ok = fits(self.flags, 8)
            && self.compound_head.is_none_or(|o| fits(o, 8))
            && fits(self.private, 8)
            && fits(self.mapcount, 4)
            && fits(self.refcount, 4);
        if !ok {
            return Err(format!(
                "a struct page field lies outside its {} bytes: {self:?}",
                self.size
            ));
        }
        Ok(self)
    }
}

/// How the head of a free block is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuddyMark {
    /// `_mapcount` equals this value.
    Mapcount(i32),
    /// `page_type & (base | bit) == base`: the type bit is set by clearing it.
    TypeBitCleared {
        /// PAGE_TYPE_BASE.
        base: u32,
        /// PG_buddy.
        bit: u32,
    },
    /// `page_type >> 24` equals this byte.
    TopByte(u8),
}

impl BuddyMark {
    /// Whether the `page_type`/`_mapcount` word marks a free block's head.
    pub fn is_buddy(self, word: u32) -> bool {
        match self {
            BuddyMark::Mapcount(v) => word as i32 == v,
            BuddyMark::TypeBitCleared { base, bit } => word & (base | bit) == base,
            BuddyMark::TopByte(b) => (word >> 24) as u8 == b,
        }
    }
}

/// One row of the table: kernels `since..=until` (major, minor).
#[derive(Debug, Clone, Copy)]
pub struct Marking {
    /// First version.
    pub since: (u32, u32),
    /// Last version.
    pub until: (u32, u32),
    /// The marking.
    pub mark: BuddyMark,
    /// The name of the value in the kernel's BTF, if it is an enumerator there (a cross-check).
    pub btf_name: Option<&'static str>,
}

/// The largest order of a free block on x86-64 (MAX_ORDER - 1 before 6.4, MAX_ORDER from 6.4:
/// 10 both ways with the default configuration).
pub const MAX_ORDER: u64 = 10;

/// THE table.
pub const MARKINGS: &[Marking] = &[
    Marking {
        since: (2, 6),
        until: (4, 17),
        mark: BuddyMark::Mapcount(-128),
        btf_name: None,
    },
    Marking {
        since: (4, 18),
        until: (6, 10),
        mark: BuddyMark::TypeBitCleared {
            base: 0xf000_0000,
            bit: 0x80,
        },
        btf_name: None,
    },
    Marking {
        since: (6, 11),
        until: (6, 11),
        mark: BuddyMark::TypeBitCleared {
            base: 0x8000_0000,
            bit: 0x4000_0000,
        },
        btf_name: Some("PG_buddy"),
    },
    Marking {
        since: (6, 12),
        until: (6, 255),
        mark: BuddyMark::TopByte(0xf0),
        btf_name: Some("PGTY_buddy"),
    },
];

/// The row for kernel `v`.
pub fn marking_for(v: (u32, u32)) -> Option<&'static Marking> {
    MARKINGS.iter().find(|m| m.since <= v && v <= m.until)
}

/// `(major, minor)` from a banner `Linux version 6.1.0-56-amd64 (...)`.
pub fn banner_version(banner: &str) -> Option<(u32, u32)> {
    let rest = banner.strip_prefix("Linux version ")?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_has_its_marking() {
        let at = |v| marking_for(v).unwrap().mark;
        assert!(at((4, 17)).is_buddy(-128i32 as u32));
        assert!(!at((4, 17)).is_buddy(u32::MAX));
        // 4.18..6.10: PG_buddy set = bit 0x80 cleared.
        assert!(at((6, 1)).is_buddy(0xffff_ff7f));
        assert!(!at((6, 1)).is_buddy(u32::MAX));
        assert!(!at((6, 1)).is_buddy(3)); // a mapcount
        assert!(at((6, 11)).is_buddy(0xbfff_ffff));
        assert!(!at((6, 11)).is_buddy(0xffff_ff7f));
        assert!(at((6, 12)).is_buddy(0xf000_0000));
        assert!(!at((6, 12)).is_buddy(0xf100_0000));
        assert!(marking_for((2, 4)).is_none());
        assert!(marking_for((7, 0)).is_none());
        assert_eq!(
            banner_version("Linux version 6.1.0-56-amd64 (x)"),
            Some((6, 1))
        );
        assert_eq!(banner_version("Linux version 6"), None);
        assert_eq!(banner_version("FreeBSD"), None);
    }
}
