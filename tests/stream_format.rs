//! Golden checks of the written bytes against the specs, and the parser on hand-built
//! stock-like streams and tampered files (exact error variants).

mod stream_common;

use stream_common::{image, params, Collect, STORE_PFN};
use xckpt::compose::Image;
use xckpt::hv::{state_kind, GuestType, PageType};
use xckpt::stream::format::{libxc_rec, libxl_rec, pfinfo};
use xckpt::stream::records::write_record;
use xckpt::stream::{
    domain_header, image_header, libxl_header, parse_save_file, write_save_file, write_xl_header,
    StreamOptions, StreamParseError,
};

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Walk records from `at` until an END; return (type, body length) of each and the end offset.
/// Checks that every record (header + body + padding) is a multiple of 8 bytes.
fn records(b: &[u8], mut at: usize) -> (Vec<(u32, u32)>, usize) {
    let mut out = Vec::new();
    loop {
        let (ty, len) = (le32(b, at), le32(b, at + 4));
        let padded = (len as usize).div_ceil(8) * 8;
        assert!(
            b[at + 8 + len as usize..at + 8 + padded]
                .iter()
                .all(|&x| x == 0),
            "padding"
        );
        out.push((ty, len));
        at += 8 + padded;
        if ty == 0 {
            return (out, at);
        }
    }
}

#[test]
fn golden_header_bytes_and_record_layout() {
    let img = image(GuestType::Hvm, 2100);
    let mut b = Vec::new();
    write_save_file(&img, &StreamOptions::default(), &mut b).unwrap();

    // xl savefile header (tools/xl/xl.h): magic, byteorder 0x01020304 in host (LE) order,
    // mandatory flags JSON|STREAMv2, optional flags 0, optional data length.
    assert_eq!(&b[..32], b"Xen saved domain, xl format\n \0 \r");
    assert_eq!(&b[32..36], &[4, 3, 2, 1]);
    assert_eq!(le32(&b, 36), 3);
    assert_eq!(le32(&b, 40), 0);
    let opt_len = le32(&b, 44) as usize;
    let cfg_len = le32(&b, 48) as usize;
    assert_eq!(opt_len, 4 + cfg_len);
    assert_eq!(&b[52..52 + cfg_len - 1], img.config.as_slice());
    assert_eq!(
        b[52 + cfg_len - 1],
        0,
        "config is NUL-terminated like xl writes it"
    );

    // libxl header: "LibxlFmt", version 2 and options 0, big-endian.
    let l = 48 + opt_len;
    assert_eq!(&b[l..l + 16], b"LibxlFmt\0\0\0\x02\0\0\0\0");
    // LIBXC_CONTEXT record, empty.
    assert_eq!(&b[l + 16..l + 24], &[1, 0, 0, 0, 0, 0, 0, 0]);

    // libxc image header: marker, "XENF", version 3 (big-endian), options 0 (LE stream).
    let x = l + 24;
    assert_eq!(&b[x..x + 8], &[0xff; 8]);
    assert_eq!(&b[x + 8..x + 12], b"XENF");
    assert_eq!(&b[x + 12..x + 16], &[0, 0, 0, 3]);
    assert_eq!(&b[x + 16..x + 24], &[0; 8]);
    // Domain header: type 2 (x86 HVM), page shift 12, Xen 4.17 (little-endian).
    assert_eq!(
        &b[x + 24..x + 40],
        &[2, 0, 0, 0, 12, 0, 0, 0, 4, 0, 0, 0, 17, 0, 0, 0]
    );
    assert_eq!(image_header().as_slice(), &b[x..x + 24]);
    assert_eq!(domain_header(4, 17).as_slice(), &b[x + 24..x + 40]);
    assert_eq!(libxl_header().as_slice(), &b[l..l + 16]);

    let (xc, after) = records(&b, x + 40);
    let types: Vec<u32> = xc.iter().map(|r| r.0).collect();
    use libxc_rec::*;
    assert_eq!(
        types,
        [
            X86_CPUID_POLICY,
            X86_MSR_POLICY,
            STATIC_DATA_END,
            // One record per aligned 2 MiB region (512 pfns) of the 2100.
            PAGE_DATA,
            PAGE_DATA,
            PAGE_DATA,
            PAGE_DATA,
            PAGE_DATA,
            X86_TSC_INFO,
            HVM_PARAMS,
            HVM_CONTEXT,
            END
        ]
    );
    assert_eq!(xc[10].1, 1237, "HVM_CONTEXT body length without padding");
    assert_eq!(xc[2].1, 0);
    assert_eq!(xc[11].1, 0);
    // First PAGE_DATA: the populated pfns below 512, pfn words carry type NOTAB (0) and the pfn.
    let n0 = (0..512)
        .filter(|&p| img.page_state(p) != xckpt::compose::PageState::Unpopulated)
        .count();
    let p = x
        + 40
        + xc[..3]
            .iter()
            .map(|r| 8 + (r.1 as usize).div_ceil(8) * 8)
            .sum::<usize>();
    assert_eq!(le32(&b, p), PAGE_DATA);
    assert_eq!(le32(&b, p + 8) as usize, n0);
    assert_eq!(le32(&b, p + 12), 0);
    assert_eq!(xc[3].1 as usize, 8 + n0 * 8 + n0 * 4096);
    assert_eq!(u64::from_le_bytes(b[p + 16..p + 24].try_into().unwrap()), 0);
    assert_eq!(u64::from_le_bytes(b[p + 24..p + 32].try_into().unwrap()), 1);

    // Then the libxl records: emulator xenstore data, emulator context (qemu-xen, index 0).
    let (xl, end) = records(&b, after);
    assert_eq!(
        xl.iter().map(|r| r.0).collect::<Vec<_>>(),
        [
            libxl_rec::EMULATOR_XENSTORE_DATA,
            libxl_rec::EMULATOR_CONTEXT,
            libxl_rec::END
        ]
    );
    assert_eq!(xl[1].1, 8 + 3001);
    let emu = after + 8 + (xl[0].1 as usize).div_ceil(8) * 8;
    assert_eq!(&b[emu + 8..emu + 16], &[2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(end, b.len());
}

#[test]
fn pvh_stream_has_no_emulator_records() {
    let img = image(GuestType::Pvh, 100);
    let mut b = Vec::new();
    write_save_file(&img, &StreamOptions::default(), &mut b).unwrap();
    let l = 48 + le32(&b, 44) as usize;
    let (_, after) = records(&b, l + 24 + 40);
    let (xl, _) = records(&b, after);
    assert_eq!(xl, [(libxl_rec::END, 0)]);
}

/// A stream as stock `xl save` of an HVM guest writes it: v3, no CPUID/MSR policy in this one,
/// XTAB pfns for holes, HVM_CONTEXT before HVM_PARAMS (libxc's actual order), and optional
/// libxc records to skip.
fn stock_like(version: u32, extra_libxc: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    let cfg = br#"{"c_info":{"type":"hvm","name":"win"}}"#;
    let mut cfg0 = cfg.to_vec();
    cfg0.push(0);
    write_xl_header(&mut b, &cfg0).unwrap();
    b.extend_from_slice(&libxl_header());
    write_record(&mut b, libxl_rec::LIBXC_CONTEXT, &[]).unwrap();
    let mut ih = image_header();
    ih[12..16].copy_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&ih);
    b.extend_from_slice(&domain_header(4, 17));
    if version >= 3 {
        write_record(&mut b, libxc_rec::STATIC_DATA_END, &[]).unwrap();
    }
    for (ty, body) in extra_libxc {
        write_record(&mut b, *ty, &[body]).unwrap();
    }
    // PAGE_DATA: pfn 0x10 data, pfn 0x11 XTAB, pfn 0x12 data, pfn 0x13 XALLOC.
    let words: Vec<u8> = [
        STORE_PFN,
        0x11 | (u64::from(pfinfo::XTAB) << 32),
        0x12,
        0x13 | (u64::from(pfinfo::XALLOC) << 32),
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect();
    let mut hdr = 4u32.to_le_bytes().to_vec();
    hdr.extend_from_slice(&[0; 4]);
    write_record(
        &mut b,
        libxc_rec::PAGE_DATA,
        &[&hdr, &words, &[0xaa; 4096], &[0xbb; 4096]],
    )
    .unwrap();
    write_record(&mut b, libxc_rec::X86_TSC_INFO, &[&[7; 24]]).unwrap();
    write_record(&mut b, libxc_rec::HVM_CONTEXT, &[&[9; 13]]).unwrap();
    write_record(&mut b, libxc_rec::HVM_PARAMS, &[&params(&[(1, STORE_PFN)])]).unwrap();
    write_record(&mut b, libxc_rec::END, &[]).unwrap();
    write_record(
        &mut b,
        libxl_rec::EMULATOR_CONTEXT,
        &[&[2, 0, 0, 0, 0, 0, 0, 0], b"QEVM"],
    )
    .unwrap();
    write_record(&mut b, libxl_rec::END, &[]).unwrap();
    b
}

fn parse(b: &[u8]) -> Result<Collect, StreamParseError> {
    let mut sink = Collect::default();
    parse_save_file(&mut &b[..], &mut sink).map(|_| sink)
}

#[test]
fn parses_stock_like_stream() {
    let optional = (libxc_rec::OPTIONAL | 0x42, vec![1, 2, 3]);
    let got = parse(&stock_like(3, &[optional])).unwrap();
    assert_eq!(
        got.config.unwrap(),
        br#"{"c_info":{"type":"hvm","name":"win"}}"#
    );
    let pages: Vec<_> = got
        .pages
        .iter()
        .map(|p| (p.0, p.1, p.2.as_ref().map(|d| d[0])))
        .collect();
    assert_eq!(
        pages,
        [
            (0x10, PageType::Normal, Some(0xaa)),
            (0x11, PageType::Unpopulated, None),
            (0x12, PageType::Normal, Some(0xbb)),
            (0x13, PageType::Other(pfinfo::XALLOC), None),
        ]
    );
    let kinds: Vec<u32> = got.blobs.iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [
            state_kind::TSC_INFO,
            state_kind::HVM_CONTEXT,
            state_kind::HVM_PARAMS,
            state_kind::QEMU_STATE
        ]
    );
    assert_eq!(got.blobs[3].data, b"QEVM");
    let end = got.end.unwrap();
    assert_eq!(end.guest_type, GuestType::Hvm);
    assert_eq!(end.pfn_range, Some((0x10, 0x13)));
    assert_eq!(end.pfn_count(), 0x14);
    assert_eq!((end.data_pages, end.nodata_pfns), (2, 2));
    assert!(end.config_is_json);
}

#[test]
fn emulator_record_of_pvh_guest_is_rejected() {
    let mut b = stock_like(3, &[]);
    // Same length config, type "pvh" instead of "hvm".
    let at = b.windows(5).position(|w| w == b"\"hvm\"").unwrap();
    b[at + 1..at + 4].copy_from_slice(b"pvh");
    assert!(malformed(parse(&b)).contains("emulator record"));
}

#[test]
fn v2_stream_infers_static_data_end() {
    let got = parse(&stock_like(2, &[])).unwrap();
    assert_eq!(got.end.unwrap().domain.libxc_version, 2);
}

fn malformed(r: Result<Collect, StreamParseError>) -> String {
    match r {
        Err(StreamParseError::Malformed { what, .. }) => what,
        Err(e) => panic!("expected Malformed, got {e}"),
        Ok(_) => panic!("expected Malformed, got Ok"),
    }
}

#[test]
fn rejects_what_restore_rejects() {
    // Page data before STATIC_DATA_END in a v3 stream: build v2 and relabel it v3.
    let mut b = stock_like(2, &[]);
    let x = 48 + le32(&b, 44) as usize + 24;
    b[x + 15] = 3;
    assert!(malformed(parse(&b)).contains("STATIC_DATA_END"));
    // A mandatory record libxc does not handle for HVM.
    let pv = (libxc_rec::X86_PV_INFO, vec![8, 4, 0, 0, 0, 0, 0, 0]);
    assert!(malformed(parse(&stock_like(3, &[pv]))).contains("0x2"));
    // Bad sizes.
    let tsc = (libxc_rec::X86_TSC_INFO, vec![0; 16]);
    assert!(malformed(parse(&stock_like(3, &[tsc]))).contains("X86_TSC_INFO"));
    let cpuid = (libxc_rec::X86_CPUID_POLICY, vec![0; 25]);
    assert!(malformed(parse(&stock_like(3, &[cpuid]))).contains("CPUID"));
    let p = (libxc_rec::HVM_PARAMS, params(&[(1, 2)])[..20].to_vec());
    assert!(malformed(parse(&stock_like(3, &[p]))).contains("HVM_PARAMS"));
    // CHECKPOINT in a plain stream.
    let cp = (libxc_rec::CHECKPOINT, vec![]);
    assert!(matches!(
        parse(&stock_like(3, &[cp])),
        Err(StreamParseError::Unsupported { .. })
    ));
}

#[test]
fn tampered_headers_give_exact_errors() {
    let good = stock_like(3, &[]);
    let l = 48 + le32(&good, 44) as usize;

    let mut b = good.clone();
    b[0] ^= 1;
    assert!(matches!(
        parse(&b),
        Err(StreamParseError::BadMagic { offset: 0, .. })
    ));

    let mut b = good.clone();
    b[36] = 0x80; // unknown mandatory flag
    assert!(matches!(
        parse(&b),
        Err(StreamParseError::Unsupported { offset: 36, .. })
    ));

    let mut b = good.clone();
    b[36] = 1; // no STREAMv2: legacy stream
    assert!(matches!(
        parse(&b),
        Err(StreamParseError::Unsupported { .. })
    ));

    let mut b = good.clone();
    b[l] = b'X';
    assert!(matches!(
        parse(&b),
        Err(StreamParseError::BadMagic {
            what: "libxl stream ident",
            ..
        })
    ));

    let mut b = good.clone();
    b[l + 15] = 1; // big-endian libxl stream
    assert!(matches!(
        parse(&b),
        Err(StreamParseError::Unsupported { .. })
    ));

    let mut b = good.clone();
    b[l + 24 + 8] = b'Y';
    assert!(matches!(
        parse(&b),
        Err(StreamParseError::BadMagic {
            what: "libxc image id",
            ..
        })
    ));

    let mut b = good.clone();
    b[l + 24 + 24] = 1; // PV domain header under a config of another guest type
    assert!(malformed(parse(&b)).contains("domain type 1"));

    let mut b = good.clone();
    b[l + 16] = 9; // unknown libxl record instead of LIBXC_CONTEXT
    assert!(malformed(parse(&b)).contains("libxl record"));

    let mut b = good.clone();
    b[l + 24 + 40 + 4..l + 24 + 40 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(malformed(parse(&b)).contains("128 MiB"));

    // Truncation anywhere is an I/O error (unexpected EOF), never a panic.
    for cut in [10, 47, l + 3, l + 30, good.len() - 1] {
        match parse(&good[..cut]) {
            Err(StreamParseError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof)
            }
            other => panic!("cut at {cut}: {:?}", other.err()),
        }
    }
}

#[test]
fn page_data_count_mismatch_is_malformed() {
    let good = stock_like(3, &[]);
    let x = 48 + le32(&good, 44) as usize + 24 + 40 + 8; // after STATIC_DATA_END
    assert_eq!(le32(&good, x), libxc_rec::PAGE_DATA);
    let mut b = good.clone();
    b[x + 8] = 5; // count 5 but 4 words + 2 pages
    assert!(malformed(parse(&b)).contains("PAGE_DATA"));
    let mut b = good.clone();
    b[x + 8..x + 12].copy_from_slice(&0u32.to_le_bytes());
    assert!(malformed(parse(&b)).contains("0 pfns"));
    let mut b = good;
    b[x + 16 + 8 + 7] = 0x50; // unknown page type 0x5
    assert!(malformed(parse(&b)).contains("unknown page type"));
}

#[test]
fn sink_errors_are_wrapped() {
    struct Refuse;
    impl xckpt::stream::StreamSink for Refuse {
        fn config(&mut self, _: &[u8]) -> Result<(), xckpt::stream::SinkError> {
            Ok(())
        }
        fn page(
            &mut self,
            _: u64,
            _: PageType,
            _: Option<&[u8]>,
        ) -> Result<(), xckpt::stream::SinkError> {
            Err("disk full".into())
        }
        fn state_blob(&mut self, _: xckpt::hv::StateBlob) -> Result<(), xckpt::stream::SinkError> {
            Ok(())
        }
    }
    let b = stock_like(3, &[]);
    let err = parse_save_file(&mut &b[..], &mut Refuse).unwrap_err();
    assert!(
        matches!(&err, StreamParseError::Sink { source, .. } if source.to_string() == "disk full")
    );
}
