//! `xckpt import`: an `xl save` file becomes the base layer of a new chain.
//!
//! The parser ([`crate::stream::parse_save_file`]) walks the file; this sink packs its pages into
//! frames as they arrive and builds the index at the end, when the pfn range is known. A PV
//! guest's file also gives its page-table types and vCPU records; the layer gets the blobs a
//! captured PV layer has (see [`pv_blobs`]).

use std::io::BufReader;
use std::path::Path;

use crate::hv::{state_kind, DomainIdentity, GuestType, PageType, Pfn, StateBlob, PAGE_SIZE};
use crate::layer::index::MAX_PFN_COUNT;
use crate::layer::{
    compress_frame, CaptureStats, LayerIndex, LayerKind, LayerMeta, LayerWriteError, LayerWriter,
    PageEntry, DEFAULT_FRAME_PAGES,
};
use crate::progress;
use crate::pv::PageTypes;
use crate::store::{Chain, LayerRecord, StoreError};
use crate::stream::{parse_save_file, ParsedHeader, SinkError, StreamParseError, StreamSink};

/// Why an import failed. The chain is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The chain already has layers.
    #[error("chain {0} already has layers: import into a new name")]
    ChainNotEmpty(String),
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid save file.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: StreamParseError,
    },
    /// The file holds no pages.
    #[error("{0}: the save file holds no guest pages")]
    Empty(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A save file names a pfn that no layer can hold: refused as it is read, before the index of
/// that many pfns would be allocated.
#[derive(Debug, thiserror::Error)]
#[error("pfn {pfn:#x} is beyond the {MAX_PFN_COUNT} pfns (16 TiB) a layer holds")]
struct PfnBeyondLayer {
    pfn: Pfn,
}

/// Packs parsed pages into a layer.
struct LayerSink {
    writer: LayerWriter,
    level: i32,
    frame: Vec<u8>,
    frame_pfns: Vec<Pfn>,
    entries: Vec<(Pfn, PageEntry, Option<u64>)>,
    config: Vec<u8>,
    state: Vec<StateBlob>,
    raw_bytes: u64,
    /// A PV guest's page-table pages, from the PAGE_DATA types.
    tables: PageTypes,
}

impl LayerSink {
    fn flush(&mut self) -> Result<(), LayerWriteError> {
        if self.frame_pfns.is_empty() {
            return Ok(());
        }
        let f = compress_frame(&self.frame, self.level, self.writer.digest_kind());
        let first = self.writer.push_frame(&f)?;
        for (i, pfn) in self.frame_pfns.drain(..).enumerate() {
            self.entries
                .push((pfn, PageEntry::Data, Some(first + i as u64)));
        }
        self.frame.clear();
        Ok(())
    }
}

impl StreamSink for LayerSink {
    fn config(&mut self, config: &[u8]) -> Result<(), SinkError> {
        self.config = config.to_vec();
        self.config.push(0); // as `xl save` embeds it (strlen + 1)
        Ok(())
    }

    fn page(&mut self, pfn: Pfn, ty: PageType, data: Option<&[u8]>) -> Result<(), SinkError> {
        if pfn >= MAX_PFN_COUNT {
            return Err(Box::new(PfnBeyondLayer { pfn }));
        }
        if let PageType::Other(raw) = ty {
            self.tables.add(&[pfn], &[raw]);
        }
        match (ty, data) {
            (_, Some(d)) if d.iter().all(|&b| b == 0) => {
                self.entries.push((pfn, PageEntry::Zero, None))
            }
            (_, Some(d)) => {
                self.frame.extend_from_slice(d);
                self.frame_pfns.push(pfn);
                self.raw_bytes += PAGE_SIZE as u64;
                if self.frame_pfns.len() == DEFAULT_FRAME_PAGES as usize {
                    self.flush()?;
                }
            }
            (PageType::Unpopulated | PageType::Broken, None) => {
                self.entries.push((pfn, PageEntry::Unpopulated, None))
            }
            // Populate-without-data: the frame reads as zeros after restore.
            (_, None) => self.entries.push((pfn, PageEntry::Zero, None)),
        }
        Ok(())
    }

    fn state_blob(&mut self, blob: StateBlob) -> Result<(), SinkError> {
        // A PV vCPU record is one blob per vCPU (its id in the first 4 bytes).
        let vcpu = |b: &StateBlob| per_vcpu(b.kind).then(|| b.data.get(..4).map(<[u8]>::to_vec));
        self.state
            .retain(|b| b.kind != blob.kind || vcpu(b) != vcpu(&blob));
        self.state.push(blob);
        Ok(())
    }
}

/// Whether blobs of `kind` come one per vCPU.
fn per_vcpu(kind: u32) -> bool {
    matches!(
        kind,
        state_kind::X86_PV_VCPU_BASIC
            | state_kind::X86_PV_VCPU_EXTENDED
            | state_kind::X86_PV_VCPU_XSAVE
            | state_kind::X86_PV_VCPU_MSRS
    )
}

/// The blobs a PV layer carries beside libxc's records: the p2m and the page-table types.
/// A save file's page tables and vCPU frames are already normalised (pfns), so the p2m is
/// the identity: writing a stream from the layer normalises them to themselves.
fn pv_blobs(pfn_count: u64, tables: &PageTypes) -> [StateBlob; 2] {
    let p2m = (0..pfn_count).flat_map(u64::to_le_bytes).collect();
    [
        StateBlob {
            kind: state_kind::PV_P2M,
            data: p2m,
        },
        StateBlob {
            kind: state_kind::PV_PAGE_TYPES,
            data: tables.to_blob(),
        },
    ]
}

/// Import the `xl save` file at `path` as the base layer (id 1) of the empty `chain`.
pub fn import_file(path: &Path, chain: &Chain, level: i32) -> Result<LayerRecord, ImportError> {
    let shown = path.display().to_string();
    if !chain.manifest()?.layers.is_empty() {
        return Err(ImportError::ChainNotEmpty(chain.name().to_string()));
    }
    let file = std::fs::File::open(path).map_err(|source| ImportError::Open {
        path: shown.clone(),
        source,
    })?;
    let mut sink = LayerSink {
        writer: chain.begin_layer()?,
        level,
        frame: Vec::with_capacity(DEFAULT_FRAME_PAGES as usize * PAGE_SIZE),
        frame_pfns: Vec::new(),
        entries: Vec::new(),
        config: Vec::new(),
        state: Vec::new(),
        raw_bytes: 0,
        tables: PageTypes::default(),
    };
    let total = file.metadata().ok().map(|m| m.len());
    let read = progress::Reader::new(file, chain.name(), progress::Task::Import, total);
    let mut input = BufReader::with_capacity(1 << 20, read);
    let header = parse_save_file(&mut input, &mut sink).map_err(|source| ImportError::Parse {
        path: shown.clone(),
        source,
    })?;
    input.get_ref().finish();
    sink.flush().map_err(StoreError::from)?;
    let pfn_count = header.pfn_count();
    if pfn_count == 0 {
        return Err(ImportError::Empty(shown));
    }
    if header.guest_type == GuestType::Pv {
        sink.state.extend(pv_blobs(pfn_count, &sink.tables));
    }
    let mut index = LayerIndex::new(pfn_count);
    for &(pfn, entry, slot) in &sink.entries {
        index.set(pfn, entry, slot);
    }
    let meta = import_meta(&header, &sink, &index, &shown);
    let rec = chain.commit_layer(sink.writer, &meta, &index, &sink.state, &sink.config)?;
    Ok(rec)
}

fn import_meta(h: &ParsedHeader, sink: &LayerSink, index: &LayerIndex, shown: &str) -> LayerMeta {
    let cfg: serde_json::Value =
        serde_json::from_slice(crate::libxl::config::strip_nul(&sink.config)).unwrap_or_default();
    let text = |ptr: &str| {
        cfg.pointer(ptr)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut stats = CaptureStats {
        sent_pages: sink.raw_bytes / PAGE_SIZE as u64,
        notes: vec![format!("imported from {shown}")],
        ..Default::default()
    };
    stats.count_pages(index, true);
    LayerMeta {
        id: 1,
        parent: None,
        kind: LayerKind::Base,
        domain: DomainIdentity {
            name: text("/c_info/name"),
            domid: 0,
            uuid: text("/c_info/uuid"),
            instance: format!("import:{shown}"),
        },
        guest_type: h.guest_type,
        pfn_count: h.pfn_count(),
        vcpus: cfg
            .pointer("/b_info/max_vcpus")
            .and_then(|v| v.as_u64())
            .unwrap_or(1) as u32,
        created_unix_ms: crate::store::unix_ms(),
        frame_pages: DEFAULT_FRAME_PAGES,
        compress_level: sink.level,
        stats,
        group: None,
        disks: Vec::new(),
    }
}
