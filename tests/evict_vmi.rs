//! The introspection classifier on synthetic guest memory images: each kernel version's
//! free-page marking, and corrupt or hostile structures (never a panic, never a page called
//! free that the image does not prove free).

mod sim_util;
mod vmi_util;

use std::time::Duration;

use vmi_util::*;
use xckpt::evict::vmi::{
    find_free, FreeScan, ImageMem, KnownKernel, Limits, PhysMem, Symbols, VmiError,
};

const PAGES: u64 = 8192;
const MIB2: u64 = 2 << 20;

fn blocks(s: &mut Synth) {
    s.free_block(16, 4);
    s.free_block(64, 6);
    s.free_block(1024, 10);
    s.free_block(4097, 0);
    s.free_block(4098, 1); // adjacent: merged into one run with 4097
}

/// The scan of `s` with its profile, which must succeed.
fn found(s: &Synth) -> FreeScan {
    find_free(
        &ImageMem(s.img.clone()),
        &s.profile(),
        Limits::default(),
        None,
    )
    .unwrap()
}

fn scan(s: &Synth) -> Result<Vec<(u64, u64)>, VmiError> {
    find_free(
        &ImageMem(s.img.clone()),
        &s.profile(),
        Limits::default(),
        None,
    )
    .map(|f| f.scan.runs)
}

#[test]
fn every_version_marking_finds_exactly_the_free_blocks() {
    for k in [&K4_14, &K6_1, &K6_11, &K6_12] {
        let mut s = Synth::new(PAGES, k, 2 * MIB2);
        blocks(&mut s);
        let runs = scan(&s).unwrap_or_else(|e| panic!("{}: {e}", k.banner));
        assert_eq!(
            runs,
            vec![(16, 16), (64, 64), (1024, 1024), (4097, 3)],
            "{}",
            k.banner
        );
    }
    // Another version's marking is not taken for free.
    let mut s = Synth::new(PAGES, &K6_12, 0);
    s.buddy_word = K6_1.buddy_word;
    blocks(&mut s);
    assert_eq!(scan(&s).unwrap(), vec![]);
}

#[test]
fn the_kernel_found_once_is_proved_again_in_a_few_reads() {
    let mut s = Synth::new(PAGES, &K6_1, 2 * MIB2);
    blocks(&mut s);
    let mem = ImageMem(s.img.clone());
    let first = find_free(&mem, &s.profile(), Limits::default(), None).unwrap();
    let again = find_free(&mem, Symbols::Known(&first.known), Limits::default(), None).unwrap();
    assert_eq!(again.scan, first.scan);
    assert_eq!(again.known, first.known);
    assert!(
        again.source.ends_with("kept from an earlier checkpoint"),
        "{}",
        again.source
    );
    // No delta search and no BTF: the reads left are the struct pages and a few tables.
    assert!(
        again.pages_read + 16 < first.pages_read,
        "{} then {}",
        first.pages_read,
        again.pages_read
    );
    // The kept kernel is what a memo holds: it survives JSON.
    let json = serde_json::to_string(&first.known).unwrap();
    let back: KnownKernel = serde_json::from_str(&json).unwrap();
    assert_eq!(back, first.known);
    // A guest that rebooted: another banner, or another KASLR step, where it was.
    let mut other = s.img.clone();
    let at = first.known.symbols["linux_banner"] - 0xffff_ffff_8000_0000 + 2 * MIB2;
    other[at as usize + 14] ^= 1;
    let e = find_free(
        &ImageMem(other),
        Symbols::Known(&first.known),
        Limits::default(),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, VmiError::Moved), "{e}");
    let moved = Synth::new(PAGES, &K6_1, MIB2);
    let e = find_free(
        &ImageMem(moved.img.clone()),
        Symbols::Known(&first.known),
        Limits::default(),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, VmiError::Moved), "{e}");
}

#[test]
fn only_the_chunks_of_the_pfns_asked_for_are_read() {
    let mut s = Synth::new(PAGES, &K6_1, 0);
    blocks(&mut s);
    let mem = ImageMem(s.img.clone());
    let all = find_free(&mem, &s.profile(), Limits::default(), None).unwrap();
    // One pfn in the second chunk of 4096: only that chunk is classified, and all of it.
    let mut only = xckpt::hv::PfnBitmap::repeat(false, PAGES as usize);
    only.set(5000, true);
    let part = find_free(&mem, &s.profile(), Limits::default(), Some(&only)).unwrap();
    assert_eq!(part.scan.runs, vec![(4097, 3)]);
    assert_eq!(part.scan.skipped, 4096);
    assert!(part.pages_read < all.pages_read);
    // Nothing asked: nothing classified, no error.
    only.set(5000, false);
    let none = find_free(&mem, &s.profile(), Limits::default(), Some(&only)).unwrap();
    assert_eq!(none.scan.runs, vec![]);
    assert_eq!(none.scan.skipped, PAGES);
}

#[test]
fn a_block_whose_tail_is_busy_is_cut_to_its_head() {
    let mut s = Synth::new(PAGES, &K6_1, 0);
    s.free_block(256, 3);
    s.set_page(258, 0, 0, 0, u32::MAX, 1); // allocated meanwhile
    s.free_block(512, 2);
    s.set_page(513, 1 << 12, 0, 0, u32::MAX, 0); // PG_reserved
    s.free_block(520, 2);
    s.set_page(521, 0, 0x1234 | 1, 0, u32::MAX, 0); // a compound tail
    let f = found(&s);
    assert_eq!(f.scan.runs, vec![(256, 1), (512, 1), (520, 1)]);
    assert_eq!(f.scan.cut, 3);
}

#[test]
fn impossible_heads_refuse_the_whole_scan() {
    type Corrupt = Box<dyn Fn(&mut Synth)>;
    let cases: Vec<(&str, Corrupt)> = vec![
        (
            "order 11",
            Box::new(|s| s.set_page(2048, 0, 0, 11, s.buddy_word, 0)),
        ),
        (
            "order 2^63",
            Box::new(|s| s.set_page(2048, 0, 0, 63, s.buddy_word, 0)),
        ),
        (
            "misaligned",
            Box::new(|s| s.set_page(2050, 0, 0, 2, s.buddy_word, 0)),
        ),
        (
            "past the end",
            Box::new(|s| s.set_page(PAGES - 4, 0, 0, 3, s.buddy_word, 0)),
        ),
        (
            "referenced",
            Box::new(|s| s.set_page(2048, 0, 0, 0, s.buddy_word, 1)),
        ),
        (
            "head in a block",
            Box::new(|s| {
                s.free_block(2048, 3);
                s.set_page(2052, 0, 0, 0, s.buddy_word, 0);
            }),
        ),
    ];
    for (what, corrupt) in cases {
        let mut s = Synth::new(PAGES, &K6_1, 0);
        blocks(&mut s);
        corrupt(&mut s);
        match scan(&s) {
            Err(VmiError::Inconsistent(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_profile_that_does_not_match_the_guest_is_refused() {
    let s = Synth::new(PAGES, &K6_1, 0);
    // Wrong banner address: no kernel image anywhere.
    let map = s.system_map().replace(
        "ffffffff81000000 D linux_banner",
        "ffffffff81000800 D linux_banner",
    );
    let p = xckpt::evict::vmi::Profile::from_system_map(&map).unwrap();
    let e = find_free(&ImageMem(s.img.clone()), &p, Limits::default(), None).unwrap_err();
    assert!(matches!(e, VmiError::NoImage), "{e}");
    // Not Linux at all: zeros.
    let e = find_free(
        &ImageMem(vec![0; PAGES as usize * PAGE]),
        &s.profile(),
        Limits::default(),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, VmiError::NoImage), "{e}");
    // A version the table does not know.
    let k = Kernel {
        banner: "Linux version 9.3.0 (x)",
        buddy_word: 0,
        btf_enums: &[],
    };
    let e = scan(&Synth::new(PAGES, &k, 0)).unwrap_err();
    assert!(matches!(e, VmiError::UnknownVersion(_)), "{e}");
    // BTF that contradicts the table.
    let k = Kernel {
        banner: "Linux version 6.12.0 (x)",
        buddy_word: 0xf000_0000,
        btf_enums: &[("PGTY_buddy", 0xf1)],
    };
    let e = scan(&Synth::new(PAGES, &k, 0)).unwrap_err();
    assert!(matches!(e, VmiError::Btf(_)), "{e}");
    // vmemmap_base not a kernel address.
    let mut s = Synth::new(PAGES, &K6_1, 0);
    s.put64(0x104_0000, 0x1000);
    assert!(matches!(scan(&s).unwrap_err(), VmiError::Inconsistent(_)));
    // The page tables do not map the direct map onto the banner.
    let mut s = Synth::new(PAGES, &K6_1, 0);
    s.put64(0x104_0008, PAGE_OFFSET + (1 << 30));
    assert!(matches!(scan(&s).unwrap_err(), VmiError::Inconsistent(_)));
    // 5-level paging.
    let mut s = Synth::new(PAGES, &K6_1, 0);
    s.put(0x104_0018, &[1, 0, 0, 0]);
    assert!(matches!(scan(&s).unwrap_err(), VmiError::Unsupported(_)));
}

#[test]
fn page_tables_pointing_outside_or_at_themselves_evict_nothing_there() {
    let mut s = Synth::new(PAGES, &K6_1, 0);
    blocks(&mut s);
    // The vmemmap page holding struct pages 0..63 points past the guest; the one for 64..127
    // points at the page table itself (a loop: it is read as struct pages, not followed).
    let pt = 0x103_4000u64;
    s.put64(pt, 0x7fff_ffff_f000 | 0x63);
    s.put64(pt + 8, pt | 0x63);
    let f = found(&s);
    assert_eq!(f.scan.runs, vec![(1024, 1024), (4097, 3)]);
    assert!(f.scan.unread >= 64);
}

#[test]
fn the_budget_bounds_reads_and_time() {
    let mut s = Synth::new(PAGES, &K6_1, 0);
    blocks(&mut s);
    let mem = ImageMem(s.img.clone());
    let small = Limits {
        time: Duration::from_secs(10),
        pages: 50,
    };
    assert!(matches!(
        find_free(&mem, &s.profile(), small, None),
        Err(VmiError::Budget(_))
    ));
    let none = Limits {
        time: Duration::ZERO,
        pages: 1 << 20,
    };
    std::thread::sleep(Duration::from_millis(2));
    assert!(matches!(
        find_free(&mem, &s.profile(), none, None),
        Err(VmiError::Budget(_))
    ));
}

/// Memory whose second read of the struct page array differs (the guest allocating while
/// it is read).
struct Torn(ImageMem, u64);

impl PhysMem for Torn {
    fn frames(&self) -> u64 {
        self.0.frames()
    }
    fn read(
        &self,
        pfns: &[u64],
        out: &mut [u8],
        again: Option<&mut [u8]>,
    ) -> Result<Vec<bool>, VmiError> {
        let ok = self.0.read(pfns, out, None)?;
        if let Some(b) = again {
            b[..out.len()].copy_from_slice(out);
            for (i, &p) in pfns.iter().enumerate() {
                if p == self.1 / PAGE as u64 {
                    let o = i * PAGE + (self.1 as usize % PAGE);
                    b[o..o + 8].copy_from_slice(&7u64.to_le_bytes());
                }
            }
        }
        Ok(ok)
    }
}

#[test]
fn a_struct_page_that_changes_between_the_two_reads_is_not_trusted() {
    let mut s = Synth::new(PAGES, &K6_1, 0);
    blocks(&mut s);
    // The private (order) of the head at 64 changes between the reads.
    let at = s.page_at(64) + 40;
    let f = find_free(
        &Torn(ImageMem(s.img.clone()), at),
        &s.profile(),
        Limits::default(),
        None,
    )
    .unwrap();
    assert_eq!(f.scan.runs, vec![(16, 16), (1024, 1024), (4097, 3)]);
    assert_eq!(f.scan.unsettled, 1);
}

#[test]
fn random_corruption_never_panics_and_never_frees_a_busy_page() {
    let mut s = Synth::new(PAGES, &K6_1, 0);
    blocks(&mut s);
    let profile = s.profile();
    let kernel = s.kernel_frames();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..60 {
        let mut img = s.img.clone();
        // Flip bytes in the kernel's structures and the struct page array.
        for _ in 0..(1 + round % 40) {
            let span = (kernel.end - kernel.start) * PAGE as u64;
            let at = kernel.start * PAGE as u64 + rnd() % span;
            img[at as usize] = rnd() as u8;
        }
        let Ok(f) = find_free(&ImageMem(img.clone()), &profile, Limits::default(), None) else {
            continue;
        };
        // Every page called free has, in the image read, a struct page that proves it.
        let word = |p: u64| {
            u32::from_le_bytes(img[(s.page_at(p) + 48) as usize..][..4].try_into().unwrap())
        };
        let refc = |p: u64| {
            u32::from_le_bytes(img[(s.page_at(p) + 52) as usize..][..4].try_into().unwrap())
        };
        for &(start, n) in &f.scan.runs {
            for p in start..start + n {
                assert_eq!(refc(p), 0, "round {round}: pfn {p} is referenced");
                assert!(
                    word(p) == K6_1.buddy_word || word(p) == u32::MAX,
                    "round {round}: pfn {p}"
                );
            }
        }
    }
}

mod sim {
    //! The proof on the simulator, as `tests/evict_sim.rs` gives it for the agent: a page the
    //! introspection reads as free but the guest writes after arming (before the scan, or
    //! after it while the capture runs) is stored, never evicted; the restore equals the guest
    //! at the pause on every other page.

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use xckpt::backend::sim::{SimConfig, SimDomain, TruthMode};
    use xckpt::capture::{checkpoint, CaptureOptions};
    use xckpt::compose::{Image, PageState};
    use xckpt::evict::EvictOptions;
    use xckpt::layer::EvictPolicy;
    use xckpt::store::Store;

    fn guest() -> (Arc<SimDomain>, Synth) {
        let mut s = Synth::new(PAGES, &K6_1, 2 * MIB2);
        blocks(&mut s);
        let mut cfg = SimConfig::small(PAGES);
        cfg.populated = std::iter::once(0..PAGES).collect();
        cfg.auto_truth = Some(TruthMode::Full);
        let dom = Arc::new(SimDomain::new(cfg).unwrap());
        for pfn in 0..PAGES {
            let p = &s.img[pfn as usize * PAGE..][..PAGE];
            if p.iter().any(|&b| b != 0) {
                dom.write_page(pfn, p).unwrap();
            }
        }
        // Free memory that held data once: only `free` leaves it out.
        for &(start, n) in &[(16u64, 16u64), (64, 64), (1024, 1024)] {
            for pfn in start..start + n {
                dom.write_page(pfn, &[0x5a; PAGE]).unwrap();
            }
        }
        (dom, s)
    }

    #[test]
    fn a_page_read_as_free_but_written_after_arming_is_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let chain = store.chain("g").unwrap();
        let (dom, s) = guest();
        // CLEAN 1 arms tracking (the scan follows it): write pfn 20 then. CLEAN 2 follows
        // round 0, which read every page: write 70 and 1030 then.
        let cleans = Arc::new(AtomicU64::new(0));
        let (d, c) = (dom.clone(), cleans.clone());
        dom.faults()
            .after_clean(move || match c.fetch_add(1, Ordering::SeqCst) {
                0 => d.write_page(20, &[0x11; PAGE]).unwrap(),
                1 => [70u64, 1030]
                    .iter()
                    .for_each(|&p| d.write_page(p, &[0x22; PAGE]).unwrap()),
                _ => {}
            });
        let o = CaptureOptions {
            threads: 2,
            frame_pages: 16,
            evict: EvictOptions {
                set: "zero,unpopulated,free".parse().unwrap(),
                guest_profile: Some(Arc::new(s.profile())),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = checkpoint(&dom, &chain, &o).unwrap();
        let notes = &r.layer.stats.notes;
        assert!(
            notes
                .iter()
                .any(|n| n.contains("free: by introspection of Linux version 6.1.0-56-amd64")),
            "{notes:?}"
        );
        let image = chain.compose(Some(r.layer.id)).unwrap();
        for pfn in [20u64, 70, 1030] {
            assert!(
                matches!(image.page_state(pfn), PageState::Data(_)),
                "pfn {pfn} written after arming is {:?}",
                image.page_state(pfn)
            );
        }
        assert_eq!(image.page_state(16), PageState::Evicted(EvictPolicy::Free));
        assert_eq!(
            image.page_state(4097),
            PageState::Evicted(EvictPolicy::Free)
        );
        let evicted = r.layer.stats.evicted.get(&EvictPolicy::Free).copied();
        assert_eq!(evicted, Some(16 + 64 + 1024 + 3 - 3), "{:?}", r.layer.stats);
        // Every other page restores as the guest had it at the pause.
        sim_util::assert_restores_except_evicted(&chain, &dom, r.layer.id, dom.truths().len() - 1);
    }

    #[test]
    fn a_profile_of_another_kernel_costs_only_the_free_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let chain = store.chain("g").unwrap();
        let (dom, s) = guest();
        let map = s.system_map().replace(
            "ffffffff81000000 D linux_banner",
            "ffffffff81000800 D linux_banner",
        );
        let o = CaptureOptions {
            threads: 2,
            frame_pages: 16,
            evict: EvictOptions {
                set: "zero,unpopulated,free".parse().unwrap(),
                guest_profile: Some(Arc::new(
                    xckpt::evict::vmi::Profile::from_system_map(&map).unwrap(),
                )),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = checkpoint(&dom, &chain, &o).unwrap();
        let notes = &r.layer.stats.notes;
        assert_eq!(
            notes.iter().filter(|n| n.contains("introspection")).count(),
            1,
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("every page stored")),
            "{notes:?}"
        );
        assert_eq!(
            r.layer
                .stats
                .evicted
                .get(&EvictPolicy::Free)
                .copied()
                .unwrap_or(0),
            0
        );
        let image = chain.compose(Some(r.layer.id)).unwrap();
        assert!(matches!(image.page_state(20), PageState::Data(_)));
    }
}

/// The BTF parser on a real kernel's `.BTF` (`objcopy -O binary --only-section=.BTF vmlinux`),
/// when `XCKPT_TEST_BTF` names one; with `XCKPT_TEST_BTF_LAYOUT=size,private,mapcount` the
/// offsets are checked too.
#[test]
fn a_real_kernels_btf_if_given() {
    let Ok(path) = std::env::var("XCKPT_TEST_BTF") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let btf = xckpt::evict::vmi::btf::Btf::parse(&bytes).unwrap();
    let l = btf.page_layout().unwrap();
    eprintln!(
        "struct page: {l:?}; PG_buddy {:?} PGTY_buddy {:?}",
        btf.enumerator("PG_buddy"),
        btf.enumerator("PGTY_buddy")
    );
    if let Ok(want) = std::env::var("XCKPT_TEST_BTF_LAYOUT") {
        assert_eq!(want, format!("{},{},{}", l.size, l.private, l.mapcount));
    }
}

/// The kernel image of a vmlinux ELF as it sits in memory: every PT_LOAD at its kernel
/// address (the per-cpu segment, linked at 0, at its load address in the image), gaps zero.
fn vmlinux_image(elf: &[u8]) -> (Vec<u8>, u64) {
    const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not a 64-bit ELF");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    // (address, file offset, file size, memory size)
    let mut loads = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) != 1 {
            continue;
        }
        let (vaddr, paddr) = (u64_at(ph + 16), u64_at(ph + 24));
        let addr = if vaddr >= KERNEL_MAP {
            vaddr
        } else {
            paddr + KERNEL_MAP
        };
        loads.push((addr, u64_at(ph + 8), u64_at(ph + 32), u64_at(ph + 40)));
    }
    let start = loads.iter().map(|l| l.0).min().unwrap();
    let end = loads.iter().map(|l| l.0 + l.3).max().unwrap();
    let mut img = vec![0u8; (end - start) as usize];
    for (addr, off, filesz, _) in loads {
        let at = (addr - start) as usize;
        img[at..at + filesz as usize].copy_from_slice(&elf[off as usize..(off + filesz) as usize]);
    }
    (img, start)
}

/// The guest-kallsyms reader on a real kernel (`XCKPT_TEST_VMLINUX`: a vmlinux ELF, e.g.
/// extracted from a vmlinuz with the kernel's scripts/extract-vmlinux), against a System.map
/// excerpt (`XCKPT_TEST_SYSTEM_MAP`, e.g. testbed/profiles/System.map-6.1.0-56-amd64): every
/// symbol of the excerpt must be found at its address.
#[test]
fn a_real_kernels_kallsyms_if_given() {
    use xckpt::evict::vmi::kallsyms;
    let Ok(path) = std::env::var("XCKPT_TEST_VMLINUX") else {
        eprintln!("skipped: XCKPT_TEST_VMLINUX names no vmlinux");
        return;
    };
    let elf = std::fs::read(path).unwrap();
    let (img, vaddr) = vmlinux_image(&elf);
    let map = std::env::var("XCKPT_TEST_SYSTEM_MAP")
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap_or_default();
    let want: Vec<(String, u64)> = map
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].to_string(), u64::from_str_radix(f[0], 16).unwrap())
        })
        .collect();
    let t0 = std::time::Instant::now();
    let image = kallsyms::Image { bytes: &img, vaddr };
    let k = kallsyms::find(&image).unwrap();
    let names: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    let got = k.lookup(&names);
    eprintln!(
        "{} ({} MiB image at {vaddr:#x}, {:?}); {} of {} System.map symbols found",
        k.info(),
        img.len() >> 20,
        t0.elapsed(),
        got.len(),
        want.len()
    );
    for (name, addr) in &want {
        assert_eq!(got.get(name), Some(addr), "{name}");
    }
}
