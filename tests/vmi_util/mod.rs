//! A synthetic Linux x86-64 guest memory image for the introspection's tests: a kernel image
//! relocated by `delta` (banner, .BTF, init_top_pgt, the KASLR variables), page tables mapping
//! the direct map (one 1 GiB page) and the vmemmap (4 KiB pages), and a `struct page` array
//! (Linux 6.1's 64-byte layout) where every frame is allocated except the blocks made free.
#![allow(dead_code)]

use xckpt::evict::vmi::btf::build::linux_page_btf;
use xckpt::evict::vmi::Profile;

pub const START: u64 = 0xffff_ffff_8000_0000;
pub const PAGE: usize = 4096;
pub const VMEMMAP: u64 = 0xffff_ea00_0000_0000;
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
const BANNER: u64 = START + 0x100_0000;
const BTF: u64 = START + 0x101_0000;
const PGT: u64 = START + 0x103_0000;
const VARS: u64 = START + 0x104_0000;
const VMEMMAP_PHYS: u64 = 0x180_0000;

/// How a version marks a free head, as written into `page_type`.
pub struct Kernel {
    pub banner: &'static str,
    pub buddy_word: u32,
    pub btf_enums: &'static [(&'static str, u32)],
}

pub const K4_14: Kernel = Kernel {
    banner: "Linux version 4.14.0-1 (gcc)",
    buddy_word: -128i32 as u32,
    btf_enums: &[],
};
pub const K6_1: Kernel = Kernel {
    banner: "Linux version 6.1.0-56-amd64 (debian)",
    buddy_word: 0xffff_ff7f,
    btf_enums: &[],
};
pub const K6_11: Kernel = Kernel {
    banner: "Linux version 6.11.0 (x)",
    buddy_word: 0xbfff_ffff,
    btf_enums: &[("PG_buddy", 0x4000_0000)],
};
pub const K6_12: Kernel = Kernel {
    banner: "Linux version 6.12.9 (x)",
    buddy_word: 0xf000_0000,
    btf_enums: &[("PGTY_buddy", 0xf0)],
};

pub struct Synth {
    pub img: Vec<u8>,
    pub delta: u64,
    pub pages: u64,
    pub btf_len: u64,
    pub buddy_word: u32,
}

impl Synth {
    /// `pages` frames (at least 8192), the kernel relocated by `delta` (a multiple of 2 MiB).
    pub fn new(pages: u64, k: &Kernel, delta: u64) -> Synth {
        let mut s = Synth {
            img: vec![0; pages as usize * PAGE],
            delta,
            pages,
            btf_len: 0,
            buddy_word: k.buddy_word,
        };
        let phys = |a: u64| a - START + delta;
        s.put(phys(BANNER), k.banner.as_bytes());
        s.put(phys(BANNER) + k.banner.len() as u64, &[0]);
        let btf = linux_page_btf(k.btf_enums);
        s.btf_len = btf.len() as u64;
        s.put(phys(BTF), &btf);
        s.put64(phys(VARS), VMEMMAP);
        s.put64(phys(VARS) + 8, PAGE_OFFSET);
        s.put64(phys(VARS) + 16, pages);
        // Page tables: PGD -> PUD (1 GiB direct map); PGD -> PUD -> PMD -> PT (vmemmap).
        let (pgd, pud_d, pud_v, pmd, pt) = (
            phys(PGT),
            phys(PGT) + 0x1000,
            phys(PGT) + 0x2000,
            phys(PGT) + 0x3000,
            phys(PGT) + 0x4000,
        );
        let idx = |va: u64, sh: u32| (va >> sh) & 511;
        s.put64(pgd + 8 * idx(PAGE_OFFSET, 39), pud_d | 0x63);
        s.put64(pud_d + 8 * idx(PAGE_OFFSET, 30), 0xe3);
        s.put64(pgd + 8 * idx(VMEMMAP, 39), pud_v | 0x63);
        s.put64(pud_v + 8 * idx(VMEMMAP, 30), pmd | 0x63);
        s.put64(pmd + 8 * idx(VMEMMAP, 21), pt | 0x63);
        let vpages = (pages * 64).div_ceil(PAGE as u64);
        assert!(vpages <= 512);
        for i in 0..vpages {
            s.put64(
                pt + 8 * i,
                (VMEMMAP_PHYS + i * PAGE as u64) | 0x8000_0000_0000_0063,
            );
        }
        for pfn in 0..pages {
            s.set_page(pfn, 0x1 << 4, 0, 0, u32::MAX, 1);
        }
        s
    }

    pub fn put(&mut self, at: u64, b: &[u8]) {
        self.img[at as usize..][..b.len()].copy_from_slice(b);
    }
    pub fn put64(&mut self, at: u64, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    /// The struct page of `pfn`.
    pub fn page_at(&self, pfn: u64) -> u64 {
        VMEMMAP_PHYS + pfn * 64
    }

    pub fn set_page(
        &mut self,
        pfn: u64,
        flags: u64,
        compound: u64,
        private: u64,
        word: u32,
        refcount: u32,
    ) {
        let at = self.page_at(pfn);
        self.put64(at, flags);
        self.put64(at + 8, compound);
        self.put64(at + 40, private);
        self.put(at + 48, &word.to_le_bytes());
        self.put(at + 52, &refcount.to_le_bytes());
    }

    /// Make `[pfn, pfn + 2^order)` a free block.
    pub fn free_block(&mut self, pfn: u64, order: u64) {
        self.set_page(pfn, 0, 0, order, self.buddy_word, 0);
        for q in pfn + 1..pfn + (1 << order) {
            self.set_page(q, 0, 0, 0, u32::MAX, 0);
        }
    }

    pub fn system_map(&self) -> String {
        let mut m = String::new();
        for (a, n) in [
            (START + 0x100_0000 - 0x1000, "_text"),
            (BANNER, "linux_banner"),
            (BTF, "__start_BTF"),
            (BTF + self.btf_len, "__stop_BTF"),
            (PGT, "init_top_pgt"),
            (VARS, "vmemmap_base"),
            (VARS + 8, "page_offset_base"),
            (VARS + 16, "max_pfn"),
            (VARS + 24, "__pgtable_l5_enabled"),
        ] {
            m.push_str(&format!("{a:016x} D {n}\n"));
        }
        m
    }

    pub fn profile(&self) -> Profile {
        Profile::from_system_map(&self.system_map()).unwrap()
    }

    /// Frames that hold the kernel image, tables and struct pages (never made free).
    pub fn kernel_frames(&self) -> std::ops::Range<u64> {
        (0x100_0000 + self.delta) / PAGE as u64..(VMEMMAP_PHYS / PAGE as u64) + 512
    }
}
