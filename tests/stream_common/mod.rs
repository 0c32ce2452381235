//! A small in-memory `Image` and a collecting `StreamSink`, shared by the stream tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use xckpt::compose::{Image, PageState};
use xckpt::hv::{state_kind, GuestType, PageType, Pfn, StateBlob, PAGE_SIZE};
use xckpt::layer::{EvictPolicy, LayerReadError};
use xckpt::stream::{DomainHeader, ParsedHeader, SinkError, StreamSink};

/// The xenstore ring pfn used by the test images.
pub const STORE_PFN: Pfn = 0x10;

/// An image held in memory.
pub struct TestImage {
    pub ty: GuestType,
    pub states: Vec<PageState>,
    pub data: HashMap<Pfn, Vec<u8>>,
    pub blobs: Vec<StateBlob>,
    pub config: Vec<u8>,
    pub reads: Mutex<Vec<Pfn>>,
}

impl Image for TestImage {
    fn pfn_count(&self) -> u64 {
        self.states.len() as u64
    }
    fn guest_type(&self) -> GuestType {
        self.ty
    }
    fn vcpus(&self) -> u32 {
        2
    }
    fn page_state(&self, pfn: Pfn) -> PageState {
        self.states[pfn as usize]
    }
    fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError> {
        self.reads.lock().unwrap().push(pfn);
        match self.data.get(&pfn) {
            Some(d) => buf.copy_from_slice(d),
            None => buf.fill(0),
        }
        Ok(())
    }
    fn state_blobs(&self) -> &[StateBlob] {
        &self.blobs
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// An HVM_PARAMS body.
pub fn params(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut v = (entries.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 4]);
    for (i, x) in entries {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// An X86_TSC_INFO body: mode 0, 2.4 GHz, nsec, incarnation 3, reserved zero.
pub fn tsc() -> Vec<u8> {
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend_from_slice(&2_400_000u32.to_le_bytes());
    v.extend_from_slice(&123_456_789_000u64.to_le_bytes());
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    v
}

/// A full set of blobs; odd sizes exercise record padding.
pub fn blobs(ty: GuestType) -> Vec<StateBlob> {
    let mut v = vec![
        StateBlob {
            kind: state_kind::HVM_CONTEXT,
            data: bytes(1, 1237),
        },
        StateBlob {
            kind: state_kind::HVM_PARAMS,
            data: params(&[(1, STORE_PFN), (17, 0x11)]),
        },
        StateBlob {
            kind: state_kind::TSC_INFO,
            data: tsc(),
        },
        StateBlob {
            kind: state_kind::CPUID_POLICY,
            data: bytes(3, 24 * 3),
        },
        StateBlob {
            kind: state_kind::MSR_POLICY,
            data: bytes(4, 16 * 2),
        },
    ];
    if ty == GuestType::Hvm {
        v.push(StateBlob {
            kind: state_kind::QEMU_STATE,
            data: bytes(5, 3001),
        });
        v.push(StateBlob {
            kind: state_kind::QEMU_XENSTORE,
            data: b"physmap/f0000000/start_addr\0f0000000\0physmap/f0000000/size\0800000\0"
                .to_vec(),
        });
    }
    v
}

/// A libxl-like JSON config.
pub fn config(ty: &str, name: &str) -> Vec<u8> {
    format!(
        "{{\n    \"c_info\": {{\n        \"type\": \"{ty}\",\n        \"name\": \"{name}\",\n        \
         \"uuid\": \"6f1c7f3e-2b0a-4c55-9a43-0d7f5e2a9b11\"\n    }},\n    \"b_info\": {{\n        \
         \"max_memkb\": 1048576\n    }}\n}}"
    )
    .into_bytes()
}

/// An image of `n` pfns: a pattern of data, zero, evicted and unpopulated pfns.
pub fn image(ty: GuestType, n: usize) -> TestImage {
    let mut states = Vec::with_capacity(n);
    let mut data = HashMap::new();
    for pfn in 0..n as u64 {
        let s = match pfn % 7 {
            _ if pfn == STORE_PFN => PageState::Data(0),
            0 | 3 | 5 => PageState::Data((pfn % 2) as usize),
            1 => PageState::Zero,
            2 => PageState::Evicted(EvictPolicy::Free),
            _ => PageState::Unpopulated,
        };
        if let PageState::Data(_) = s {
            data.insert(pfn, bytes(pfn + 100, PAGE_SIZE));
        }
        states.push(s);
    }
    let tyname = if ty == GuestType::Hvm { "hvm" } else { "pvh" };
    TestImage {
        ty,
        states,
        data,
        blobs: blobs(ty),
        config: config(tyname, "guest"),
        reads: Mutex::new(Vec::new()),
    }
}

/// Everything a parse delivered.
#[derive(Default)]
pub struct Collect {
    pub config: Option<Vec<u8>>,
    pub domain: Option<DomainHeader>,
    pub pages: Vec<(Pfn, PageType, Option<Vec<u8>>)>,
    pub blobs: Vec<StateBlob>,
    pub end: Option<ParsedHeader>,
}

impl StreamSink for Collect {
    fn config(&mut self, config: &[u8]) -> Result<(), SinkError> {
        self.config = Some(config.to_vec());
        Ok(())
    }
    fn domain(&mut self, header: &DomainHeader) -> Result<(), SinkError> {
        self.domain = Some(header.clone());
        Ok(())
    }
    fn page(&mut self, pfn: Pfn, ty: PageType, data: Option<&[u8]>) -> Result<(), SinkError> {
        self.pages.push((pfn, ty, data.map(<[u8]>::to_vec)));
        Ok(())
    }
    fn state_blob(&mut self, blob: StateBlob) -> Result<(), SinkError> {
        self.blobs.push(blob);
        Ok(())
    }
    fn end(&mut self, summary: &ParsedHeader) -> Result<(), SinkError> {
        self.end = Some(summary.clone());
        Ok(())
    }
}
