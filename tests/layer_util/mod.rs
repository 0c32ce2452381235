//! Helpers shared by the layer, store and compose tests: deterministic pages and layers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use xckpt::hv::{DomainIdentity, GuestType, Pfn, StateBlob, PAGE_SIZE};
use xckpt::layer::{
    compress_frame, CaptureStats, EvictPolicy, LayerIndex, LayerKind, LayerMeta, LayerWriter,
    PageEntry,
};

/// A page whose content depends on `pfn` and `version`; some are very compressible, some not.
pub fn page(pfn: Pfn, version: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(pfn.wrapping_mul(0x9e37_79b9) ^ version);
    let mut p = vec![0u8; PAGE_SIZE];
    if (pfn + version) % 3 == 0 {
        rng.fill(&mut p);
    } else {
        p[..16].copy_from_slice(&[(pfn as u8) ^ (version as u8); 16]);
        p[100..108].copy_from_slice(&pfn.to_le_bytes());
        p[200..208].copy_from_slice(&version.to_le_bytes());
    }
    p
}

/// The domain identity of the tests.
pub fn identity() -> DomainIdentity {
    DomainIdentity {
        name: "guest1".into(),
        domid: 7,
        uuid: "00000000-0000-0000-0000-000000000007".into(),
        instance: "7-1".into(),
    }
}

/// A header for layer `id`.
pub fn meta(id: u64, parent: Option<u64>, pfn_count: u64) -> LayerMeta {
    LayerMeta {
        id,
        parent,
        kind: if parent.is_none() {
            LayerKind::Base
        } else {
            LayerKind::Incremental
        },
        domain: identity(),
        guest_type: GuestType::Pvh,
        pfn_count,
        vcpus: 2,
        created_unix_ms: 1_700_000_000_000 + id,
        frame_pages: 4,
        compress_level: 3,
        stats: CaptureStats {
            rounds: 2,
            data_pages: 3,
            ..CaptureStats::default()
        },
        group: None,
        disks: Vec::new(),
    }
}

/// What one layer records, by pfn: Some(version) for data, or another entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Data page of this version.
    Data(u64),
    /// Another entry.
    Other(PageEntry),
}

/// Write a layer to `dir` with `puts` (in push order; repeated pfns allowed), `frame_pages`
/// pages per frame at `level`. Returns the file path.
pub fn write_layer(
    dir: &Path,
    meta: &LayerMeta,
    puts: &[(Pfn, Put)],
    frame_pages: usize,
    level: i32,
) -> PathBuf {
    let (writer, index) = fill_writer(dir, meta.pfn_count, puts, frame_pages, level);
    let dest = dir.join(format!("layer-{:06}.xcl", meta.id));
    writer
        .finish(meta, &index, &state(meta.id), &config(meta.id), &dest)
        .unwrap();
    dest
}

/// Push the frames of `puts` into a new writer in `dir`; returns it and the index.
pub fn fill_writer(
    dir: &Path,
    pfn_count: u64,
    puts: &[(Pfn, Put)],
    frame_pages: usize,
    level: i32,
) -> (LayerWriter, LayerIndex) {
    fill(
        LayerWriter::create(dir).unwrap(),
        pfn_count,
        puts,
        frame_pages,
        level,
    )
}

/// Push the frames of `puts` into `writer`; returns it and the index.
pub fn fill(
    mut writer: LayerWriter,
    pfn_count: u64,
    puts: &[(Pfn, Put)],
    frame_pages: usize,
    level: i32,
) -> (LayerWriter, LayerIndex) {
    let mut index = LayerIndex::new(pfn_count);
    let mut pending: Vec<Pfn> = Vec::new();
    let mut buf = Vec::new();
    let flush =
        |w: &mut LayerWriter, idx: &mut LayerIndex, pending: &mut Vec<Pfn>, buf: &mut Vec<u8>| {
            if pending.is_empty() {
                return;
            }
            let kind = w.digest_kind();
            let first = w.push_frame(&compress_frame(buf, level, kind)).unwrap();
            for (i, &pfn) in pending.iter().enumerate() {
                idx.set(pfn, PageEntry::Data, Some(first + i as u64));
            }
            pending.clear();
            buf.clear();
        };
    for &(pfn, put) in puts {
        match put {
            Put::Data(v) => {
                buf.extend_from_slice(&page(pfn, v));
                pending.push(pfn);
                if pending.len() == frame_pages {
                    flush(&mut writer, &mut index, &mut pending, &mut buf);
                }
            }
            Put::Other(e) => {
                // Keep push order: an older pending copy of this pfn must not override it.
                flush(&mut writer, &mut index, &mut pending, &mut buf);
                index.set(pfn, e, None);
            }
        }
    }
    flush(&mut writer, &mut index, &mut pending, &mut buf);
    (writer, index)
}

/// State blobs of layer `id`.
pub fn state(id: u64) -> Vec<StateBlob> {
    vec![
        StateBlob {
            kind: 1,
            data: format!("cpu state of layer {id}").into_bytes(),
        },
        StateBlob {
            kind: 0x20,
            data: vec![id as u8; 300],
        },
        StateBlob {
            kind: 0x13,
            data: Vec::new(),
        },
    ]
}

/// Config blob of layer `id`.
pub fn config(id: u64) -> Vec<u8> {
    format!("{{\"name\":\"guest1\",\"layer\":{id}}}").into_bytes()
}

/// A small layer with every kind of entry, a re-pushed pfn and several frames.
pub fn small_layer(dir: &Path, level: i32) -> PathBuf {
    let puts = [
        (0, Put::Data(1)),
        (1, Put::Data(1)),
        (2, Put::Other(PageEntry::Zero)),
        (5, Put::Data(1)),
        (3, Put::Other(PageEntry::Evicted(EvictPolicy::Free))),
        (4, Put::Other(PageEntry::Unpopulated)),
        (1, Put::Data(2)),
        (6, Put::Other(PageEntry::Evicted(EvictPolicy::Balloon))),
        (7, Put::Data(1)),
        (9, Put::Other(PageEntry::Evicted(EvictPolicy::Cache))),
    ];
    write_layer(dir, &meta(1, None, 12), &puts, 2, level)
}
