//! Writer -> parser round trips, error variants of the writer, and the config rewrite.

mod stream_common;

use std::io::{self, Write};

use stream_common::{bytes, image, params, Collect, TestImage, STORE_PFN};
use xckpt::compose::{Image, PageState};
use xckpt::hv::{state_kind, GuestType, PageType, StateBlob, PAGE_SIZE};
use xckpt::stream::{parse_save_file, write_save_file, StreamOptions, StreamWriteError};

fn write(img: &TestImage, opts: &StreamOptions) -> (Vec<u8>, xckpt::stream::StreamStats) {
    let mut out = Vec::new();
    let stats = write_save_file(img, opts, &mut out).expect("write");
    (out, stats)
}

fn parse(bytes: &[u8]) -> Collect {
    let mut sink = Collect::default();
    parse_save_file(&mut &bytes[..], &mut sink).expect("parse");
    sink
}

fn check_round_trip(ty: GuestType, n: usize) {
    let img = image(ty, n);
    let (out, stats) = write(&img, &StreamOptions::default());
    let got = parse(&out);

    // Config: byte-equal (the writer adds one NUL, the parser strips it).
    assert_eq!(got.config.as_deref(), Some(img.config.as_slice()));

    // Pages: every populated pfn, in order, byte-equal; zero / evicted as zeros.
    let populated: Vec<u64> = (0..n as u64)
        .filter(|&p| img.page_state(p) != PageState::Unpopulated)
        .collect();
    assert_eq!(got.pages.iter().map(|p| p.0).collect::<Vec<_>>(), populated);
    for (pfn, pty, data) in &got.pages {
        assert_eq!(*pty, PageType::Normal);
        let data = data.as_ref().expect("data page");
        match img.page_state(*pfn) {
            PageState::Data(_) => assert_eq!(data, &img.data[pfn], "pfn {pfn:#x}"),
            _ => assert!(data.iter().all(|&b| b == 0), "pfn {pfn:#x} not zero"),
        }
    }
    // read_page was called for data pages only, in ascending pfn order.
    let reads = img.reads.lock().unwrap().clone();
    let data_pfns: Vec<u64> = populated
        .iter()
        .copied()
        .filter(|p| img.data.contains_key(p))
        .collect();
    assert_eq!(reads, data_pfns);

    // Blobs: all of them, byte-equal.
    let mut want = img.blobs.clone();
    let mut have = got.blobs.clone();
    want.sort_by_key(|b| b.kind);
    have.sort_by_key(|b| b.kind);
    assert_eq!(have, want);

    let end = got.end.expect("end");
    assert_eq!(end.guest_type, ty);
    assert_eq!(
        end.pfn_range,
        Some((populated[0], *populated.last().unwrap()))
    );
    assert_eq!(end.data_pages, populated.len() as u64);
    assert_eq!(end.nodata_pfns, 0);
    assert_eq!(end.bytes, out.len() as u64);
    assert_eq!(end.domain.libxc_version, 3);
    assert_eq!(end.domain.xen_version, (4, 17));
    assert_eq!(end.emulator_id, (ty == GuestType::Hvm).then_some(2));

    assert_eq!(stats.bytes, out.len() as u64);
    assert_eq!(stats.data_pages, data_pfns.len() as u64);
    assert_eq!(stats.data_pages + stats.zero_pages, populated.len() as u64);
    assert_eq!(stats.pages, populated.len() as u64);
    assert_eq!(stats.unpopulated_pfns, n as u64 - populated.len() as u64);
    // One PAGE_DATA record per aligned 2 MiB region (512 pfns) with populated pfns.
    let mut regions: Vec<u64> = populated.iter().map(|p| p / 512).collect();
    regions.dedup();
    assert_eq!(stats.page_records, regions.len() as u64);
}

#[test]
fn hvm_round_trip_is_byte_equal() {
    check_round_trip(GuestType::Hvm, 3000);
}

#[test]
fn pvh_round_trip_is_byte_equal() {
    check_round_trip(GuestType::Pvh, 1500);
}

#[test]
fn a_populated_2mib_region_is_one_record_of_512_aligned_pfns() {
    let mut img = image(GuestType::Pvh, 1536);
    img.states.iter_mut().for_each(|s| *s = PageState::Zero);
    let (out, stats) = write(&img, &StreamOptions::default());
    assert_eq!(stats.page_records, 3);
    assert_eq!(parse(&out).pages.len(), 1536);
    // Walk the PAGE_DATA records: each holds 512 contiguous pfns starting at a multiple of 512.
    let le = |at: usize, n: usize| -> u64 {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&out[at..at + n]);
        u64::from_le_bytes(v)
    };
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(i) = (at..out.len() - 16).find(|&i| le(i, 4) == 1 && le(i + 8, 4) == 512) {
        let body = le(i + 4, 4) as usize;
        if body != 8 + 512 * 8 + 512 * PAGE_SIZE {
            at = i + 1;
            continue;
        }
        let pfns: Vec<u64> = (0..512).map(|k| le(i + 16 + 8 * k, 8)).collect();
        assert!(pfns.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
        starts.push(pfns[0]);
        at = i + 8 + body;
    }
    assert_eq!(starts, [0, 512, 1024]);
}

#[test]
fn pv_without_its_records_is_refused() {
    let mut img = image(GuestType::Hvm, 64);
    img.ty = GuestType::Pv;
    let err = write_save_file(&img, &StreamOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, StreamWriteError::MissingState("X86_PV_INFO")),
        "{err}"
    );
}

fn without(img: &mut TestImage, kind: u32) {
    img.blobs.retain(|b| b.kind != kind);
}

#[test]
fn missing_state_is_reported_before_writing() {
    for (ty, kind, name) in [
        (GuestType::Hvm, state_kind::QEMU_STATE, "QEMU_STATE"),
        (GuestType::Pvh, state_kind::HVM_CONTEXT, "HVM_CONTEXT"),
        (GuestType::Pvh, state_kind::HVM_PARAMS, "HVM_PARAMS"),
    ] {
        let mut img = image(ty, 64);
        without(&mut img, kind);
        let mut out = Vec::new();
        let err = write_save_file(&img, &StreamOptions::default(), &mut out).unwrap_err();
        assert!(
            matches!(err, StreamWriteError::MissingState(n) if n == name),
            "{err}"
        );
        assert!(out.is_empty());
    }
}

#[test]
fn optional_state_may_be_absent() {
    let mut img = image(GuestType::Hvm, 64);
    for k in [
        state_kind::CPUID_POLICY,
        state_kind::MSR_POLICY,
        state_kind::TSC_INFO,
        state_kind::QEMU_XENSTORE,
    ] {
        without(&mut img, k);
    }
    let (out, _) = write(&img, &StreamOptions::default());
    let kinds: Vec<u32> = parse(&out).blobs.iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [
            state_kind::HVM_PARAMS,
            state_kind::HVM_CONTEXT,
            state_kind::QEMU_STATE
        ]
    );
}

#[test]
fn malformed_state_is_rejected() {
    let cases: [(u32, Vec<u8>); 4] = [
        (state_kind::HVM_PARAMS, params(&[(5, 1)])),
        (state_kind::TSC_INFO, bytes(9, 20)),
        (state_kind::CPUID_POLICY, bytes(9, 25)),
        (state_kind::MSR_POLICY, bytes(9, 17)),
    ];
    for (kind, data) in cases {
        let mut img = image(GuestType::Pvh, 64);
        without(&mut img, kind);
        img.blobs.push(StateBlob { kind, data });
        let err = write_save_file(&img, &StreamOptions::default(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, StreamWriteError::BadState { .. }),
            "{kind:#x}: {err}"
        );
    }
}

#[test]
fn unpopulated_store_page_is_rejected() {
    let mut img = image(GuestType::Pvh, 64);
    img.states[STORE_PFN as usize] = PageState::Unpopulated;
    let err = write_save_file(&img, &StreamOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            StreamWriteError::BadState {
                what: "HVM_PARAMS",
                ..
            }
        ),
        "{err}"
    );
}

/// Accepts `left` bytes, then fails like a pipe whose reader exited.
struct BrokenPipe {
    left: usize,
}

impl Write for BrokenPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_surface_as_io() {
    let img = image(GuestType::Hvm, 3000);
    let mut out = BrokenPipe {
        left: 1000 * PAGE_SIZE + 3,
    };
    let err = write_save_file(&img, &StreamOptions::default(), &mut out).unwrap_err();
    assert!(
        matches!(&err, StreamWriteError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe),
        "{err}"
    );
}

fn json(config: &[u8]) -> serde_json::Value {
    serde_json::from_slice(config).expect("json")
}

#[test]
fn rename_sets_name_and_fresh_uuid() {
    let img = image(GuestType::Hvm, 64);
    let opts = StreamOptions {
        rename: Some("clone-1".into()),
        ..Default::default()
    };
    let (out, _) = write(&img, &opts);
    let got = json(&parse(&out).config.unwrap());
    let orig = json(&img.config);
    assert_eq!(got["c_info"]["name"], "clone-1");
    let uuid = got["c_info"]["uuid"].as_str().unwrap();
    assert_ne!(uuid, orig["c_info"]["uuid"].as_str().unwrap());
    assert_eq!(uuid.len(), 36);
    assert_eq!(uuid.matches('-').count(), 4);
    assert_eq!(&uuid[14..15], "4");
    assert_eq!(got["c_info"]["type"], "hvm");
    assert_eq!(got["b_info"], orig["b_info"]);

    // Two renames give two different uuids.
    let (out2, _) = write(&img, &opts);
    let got2 = json(&parse(&out2).config.unwrap());
    assert_ne!(got2["c_info"]["uuid"], got["c_info"]["uuid"]);
}

#[test]
fn domid_is_cleared_unless_preserved() {
    let mut img = image(GuestType::Pvh, 64);
    img.config = br#"{"c_info": {"type": "pvh", "name": "g", "domid": 12}}"#.to_vec();
    let (out, _) = write(&img, &StreamOptions::default());
    assert_eq!(json(&parse(&out).config.unwrap())["c_info"]["domid"], 0);
    let keep = StreamOptions {
        preserve_domid: true,
        ..Default::default()
    };
    let (out, _) = write(&img, &keep);
    assert_eq!(parse(&out).config.unwrap(), img.config);
}

#[test]
fn rename_of_non_json_config_fails() {
    let mut img = image(GuestType::Pvh, 64);
    img.config = b"name = 'g'\n".to_vec();
    let opts = StreamOptions {
        rename: Some("x".into()),
        ..Default::default()
    };
    let err = write_save_file(&img, &opts, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, StreamWriteError::Config(_)), "{err}");
}

#[test]
fn empty_config_is_written_like_xl_save_without_config() {
    let mut img = image(GuestType::Pvh, 64);
    img.config.clear();
    let (out, _) = write(&img, &StreamOptions::default());
    // mandatory flags: STREAMv2 only; optional data: just a zero config length.
    assert_eq!(&out[36..40], &[2, 0, 0, 0]);
    assert_eq!(&out[44..52], &[4, 0, 0, 0, 0, 0, 0, 0]);
    let got = parse(&out);
    assert!(got.config.is_none());
    let end = got.end.unwrap();
    assert!(!end.config_present && !end.config_is_json);
    assert_eq!(
        end.guest_type,
        GuestType::Pvh,
        "no config, no emulator record: PVH"
    );
}

#[test]
fn config_of_another_guest_type_is_rejected() {
    let mut img = image(GuestType::Pvh, 64);
    img.config = stream_common::config("hvm", "g");
    let err = write_save_file(&img, &StreamOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, StreamWriteError::BadConfig(m) if m.contains("Hvm")),
        "{err}"
    );
}

#[test]
fn reserved_fields_are_written_as_zero() {
    let mut img = image(GuestType::Pvh, 64);
    for b in img.blobs.iter_mut() {
        match b.kind {
            state_kind::TSC_INFO => b.data[20..].fill(0xee),
            state_kind::HVM_PARAMS => b.data[4..8].fill(0xee),
            _ => {}
        }
    }
    let (out, _) = write(&img, &StreamOptions::default());
    let got = parse(&out);
    let tsc = got
        .blobs
        .iter()
        .find(|b| b.kind == state_kind::TSC_INFO)
        .unwrap();
    assert_eq!(tsc.data, stream_common::tsc());
    let p = got
        .blobs
        .iter()
        .find(|b| b.kind == state_kind::HVM_PARAMS)
        .unwrap();
    assert_eq!(&p.data[4..8], &[0; 4]);
    assert_eq!(&p.data[8..], &img.blobs[1].data[8..]);
}
