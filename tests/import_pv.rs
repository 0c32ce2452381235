//! `xckpt import` of a PV guest's save file: the chain it builds writes the same stream back,
//! page tables and vCPU records included (what `xckpt restore` hands to `xl restore`).

mod stream_common;

use stream_common::{config, image, TestImage};
use xckpt::hv::{state_kind, GuestType, StateBlob, PAGE_SIZE};
use xckpt::store::Store;
use xckpt::stream::{write_save_file, StreamOptions};
use xen_sys::abi::{VCPU_CTX_X64_SIZE, XEN_DOMCTL_PFINFO_L1TAB};

/// Machine frames are pfn + this in the test guest's p2m.
const MFN_BASE: u64 = 0x1000;
/// The page-table page, and the page its first entry maps.
const TABLE_PFN: u64 = 3;
const MAPPED_PFN: u64 = 5;

fn blob(kind: u32, data: Vec<u8>) -> StateBlob {
    StateBlob { kind, data }
}

fn vcpu(kind: u32, id: u32, body: usize, fill: u8) -> StateBlob {
    let mut data = id.to_le_bytes().to_vec();
    data.extend_from_slice(&[0; 4]);
    data.extend(std::iter::repeat_n(fill, body));
    blob(kind, data)
}

/// A 64-bit PV image of `n` pfns: one L1 table mapping MAPPED_PFN (raw, by mfn, as captured),
/// two vCPUs, and the p2m that maps pfn p to mfn p + MFN_BASE.
fn pv_image(n: u64) -> TestImage {
    let mut img = image(GuestType::Pv, n as usize);
    img.config = config("pv", "pvguest");
    let mut table = vec![0u8; PAGE_SIZE];
    let pte = ((MAPPED_PFN + MFN_BASE) << 12) | 0x67;
    table[..8].copy_from_slice(&pte.to_le_bytes());
    img.data.insert(TABLE_PFN, table);
    let mut frames = 0u32.to_le_bytes().to_vec();
    frames.extend_from_slice(&((n - 1) as u32).to_le_bytes());
    frames.extend_from_slice(&7u64.to_le_bytes());
    let p2m: Vec<u8> = (0..n).flat_map(|p| (p + MFN_BASE).to_le_bytes()).collect();
    let mut types = TABLE_PFN.to_le_bytes().to_vec();
    types.extend_from_slice(&XEN_DOMCTL_PFINFO_L1TAB.to_le_bytes());
    img.blobs.extend([
        blob(state_kind::X86_PV_INFO, vec![8, 4, 0, 0, 0, 0, 0, 0]),
        blob(state_kind::X86_PV_P2M_FRAMES, frames),
        blob(state_kind::SHARED_INFO, vec![9; PAGE_SIZE]),
        vcpu(state_kind::X86_PV_VCPU_BASIC, 0, VCPU_CTX_X64_SIZE, 1),
        vcpu(state_kind::X86_PV_VCPU_EXTENDED, 0, 128, 2),
        vcpu(state_kind::X86_PV_VCPU_BASIC, 1, VCPU_CTX_X64_SIZE, 3),
        vcpu(state_kind::X86_PV_VCPU_EXTENDED, 1, 128, 4),
        blob(state_kind::PV_P2M, p2m),
        blob(state_kind::PV_PAGE_TYPES, types),
    ]);
    img
}

#[test]
fn imported_pv_save_file_restores_the_same_stream() {
    let img = pv_image(64);
    let mut save = Vec::new();
    write_save_file(&img, &StreamOptions::default(), &mut save).unwrap();
    // The save file's table maps the pfn, as libxc writes it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pv.save");
    std::fs::write(&file, &save).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let chain = store.chain("pvcopy").unwrap();
    let rec = xckpt::import::import_file(&file, &chain, 1).unwrap();
    assert_eq!(rec.id, 1);
    chain.verify(None).unwrap();
    let image = chain.compose(None).unwrap();
    assert_eq!(xckpt::compose::Image::guest_type(&image), GuestType::Pv);
    let mut again = Vec::new();
    write_save_file(&image, &StreamOptions::default(), &mut again).unwrap();
    assert_eq!(again.len(), save.len());
    assert!(
        again == save,
        "the stream written from the imported chain differs"
    );
    // The normalised entry is in the stream: pfn, not mfn.
    let pte = ((MAPPED_PFN << 12) | 0x67).to_le_bytes();
    assert!(save.windows(8).any(|w| w == pte));
}

#[test]
fn pv_domain_header_with_an_hvm_config_is_refused() {
    let img = pv_image(64);
    let mut save = Vec::new();
    write_save_file(&img, &StreamOptions::default(), &mut save).unwrap();
    // Same length, so every offset stays: the config now claims an HVM guest.
    let at = save
        .windows(12)
        .position(|w| w == b"\"type\": \"pv\"")
        .expect("config in the file");
    save[at..at + 12].copy_from_slice(b"\"type\":\"hvm\"");
    let mut sink = stream_common::Collect::default();
    let err = xckpt::stream::parse_save_file(&mut &save[..], &mut sink).unwrap_err();
    assert!(err.to_string().contains("domain type 1"), "{err}");
}
