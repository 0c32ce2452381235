//! Folding a run of layers into one new layer file: the layer-rewrite primitive of `merge` and
//! `prune`.
//!
//! The run is a layer (`top`) and its ancestors down to, but not including, `new_parent` (all
//! of them down to the base when `new_parent` is None, which makes the result a base). For each
//! pfn the newest layer of the run that covers it decides, as in a composition. Exactly one copy
//! of each data page is written: the dead slots of pages re-sent during pre-copy are dropped,
//! so folding a single layer compacts it. Each page is decoded and checked against the digest
//! stored at capture before it is re-encoded; the new DIGESTS carry the same values. Header,
//! vCPU/platform state and domain config come from `top`.

use std::path::PathBuf;

use super::{layer_file_name, Chain, LayerRecord, Manifest, StoreError};
use crate::failpoint::failpoint;
use crate::layer::pipeline::{self, Pipeline, WriterOut};
use crate::layer::{LayerIndex, LayerKind, LayerMeta, LayerReader, PageEntry};
use crate::progress;

/// A folded layer written aside (linked under its final name, not yet in the manifest).
#[derive(Debug, Clone)]
pub struct Folded {
    /// The record to list in the manifest in place of `top`'s.
    pub record: LayerRecord,
    /// The layers folded into it, oldest first (`top` last).
    pub folded: Vec<u64>,
    /// Page slots in the source files (dead copies included).
    pub slots_before: u64,
    /// Page slots in the new file (one per data page).
    pub slots_after: u64,
}

/// The layers from `top` down to (not including) `new_parent`, oldest first.
pub(super) fn run_of(
    chain: &Chain,
    m: &Manifest,
    top: u64,
    new_parent: Option<u64>,
) -> Result<Vec<LayerRecord>, StoreError> {
    let mut run = Vec::new();
    let mut cur = Some(top);
    while cur != new_parent {
        let Some(id) = cur else {
            return Err(StoreError::BadCommit {
                chain: chain.name().to_string(),
                id: top,
                reason: format!("layer {new_parent:?} is not an ancestor"),
            });
        };
        let r = chain.record(m, id)?;
        cur = r.parent;
        run.push(r);
    }
    run.reverse();
    Ok(run)
}

/// A file name for a rewrite of `record` that is free: `layer-NNNNNN.rK.xcl`.
fn rewrite_name(chain: &Chain, record: &LayerRecord) -> String {
    let stem = layer_file_name(record.id);
    let stem = stem.trim_end_matches(".xcl");
    let current = record
        .file
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix(".r"))
        .and_then(|r| r.strip_suffix(".xcl"))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    // K comes from the manifest: count on from it without overflow.
    (1..)
        .map_while(|i: u64| current.checked_add(i))
        .map(|k| format!("{stem}.r{k}.xcl"))
        .find(|name| chain.dir().join(name).symlink_metadata().is_err())
        .unwrap_or_default()
}

/// Fold `run` (oldest first, as [`run_of`] returns it) into one new layer file of `chain`.
pub(super) fn fold(chain: &Chain, run: &[LayerRecord]) -> Result<Folded, StoreError> {
    let readers = run
        .iter()
        .map(|r| LayerReader::open_with_key(&chain.layer_path(r), chain.key()))
        .collect::<Result<Vec<_>, _>>()?;
    let top = readers.last().ok_or(StoreError::EmptyChain {
        chain: chain.name().to_string(),
    })?;
    let pfn_count = top.meta().pfn_count;
    // The newest layer of the run that covers each pfn.
    let mut owner = vec![u16::MAX; pfn_count as usize];
    for (i, layer) in readers.iter().enumerate() {
        for pfn in layer.index().covered().filter(|&p| p < pfn_count) {
            owner[pfn as usize] = i as u16;
        }
    }
    let mut index = LayerIndex::new(pfn_count);
    let mut data_pages = 0;
    for (pfn, &o) in owner.iter().enumerate() {
        if let Some(layer) = readers.get(o as usize) {
            match layer.entry(pfn as u64) {
                Some(PageEntry::Data) => data_pages += 1,
                None => {}
                Some(e) => index.set(pfn as u64, e, None),
            }
        }
    }
    let meta = top.meta();
    let frame_pages = meta.frame_pages.clamp(1, crate::layer::MAX_FRAME_PAGES);
    // Decoding runs here; digests and zstd run on the pipeline's workers, one per core.
    let out = std::thread::scope(|s| -> Result<WriterOut, StoreError> {
        let (mut pipe, mut builder) = Pipeline::start(
            s,
            chain.begin_layer()?,
            index,
            frame_pages,
            crate::layer::Encoding::Level(meta.compress_level.max(0)),
            pipeline::default_workers(),
        );
        // Pages stored as data stay data, zero or not (the source's `--evict` choice).
        builder.keep_zero_pages(true);
        let (subject, task) = (chain.name(), progress::Task::Fold);
        progress::start(subject, task, Some(data_pages));
        for (i, layer) in readers.iter().enumerate() {
            layer.for_each_stored_page(
                |pfn| owner.get(pfn as usize) == Some(&(i as u16)),
                |pfn, page| match builder.add_page(pfn, |dst| dst.copy_from_slice(page), None) {
                    Some(chunk) => {
                        progress::advance(subject, task, chunk.pages_covered());
                        pipe.send(chunk).map_err(StoreError::from)
                    }
                    None => Ok(()),
                },
            )?;
        }
        progress::finish(subject, task, data_pages);
        Ok(pipe.finish(builder)?)
    })?;
    let (writer, index) = (out.writer, out.index);
    let slots_after = writer.slots();
    let new_meta = folded_meta(meta, &run[0], run, &index);
    let file = rewrite_name(chain, run.last().unwrap_or(&run[0]));
    let dest: PathBuf = chain.dir().join(&file);
    let bytes = writer.finish(&new_meta, &index, top.state(), top.config(), &dest)?;
    failpoint("fold.written");
    Ok(Folded {
        record: LayerRecord {
            id: new_meta.id,
            parent: new_meta.parent,
            kind: new_meta.kind,
            file,
            created_unix_ms: new_meta.created_unix_ms,
            bytes,
            stats: new_meta.stats.clone(),
            group: new_meta.group.clone(),
        },
        folded: run.iter().map(|r| r.id).collect(),
        slots_before: readers.iter().map(|r| r.slot_count()).sum(),
        slots_after,
    })
}

/// The header of the folded layer: `top`'s, with the parent of the run's bottom layer, the
/// kind that follows from it, and page counts of the new index.
fn folded_meta(
    top: &LayerMeta,
    bottom: &LayerRecord,
    run: &[LayerRecord],
    index: &LayerIndex,
) -> LayerMeta {
    let kind = match bottom.parent {
        None => LayerKind::Base,
        Some(_) if run.iter().any(|r| r.kind == LayerKind::Resync) => LayerKind::Resync,
        Some(_) => LayerKind::Incremental,
    };
    let mut stats = top.stats.clone();
    stats.count_pages(index, kind == LayerKind::Base);
    let ids: Vec<String> = run.iter().map(|r| r.id.to_string()).collect();
    if run.len() > 1 {
        stats.notes.push(format!("folded layers {}", ids.join(",")));
    } else {
        stats.notes.push("compacted (dead slots dropped)".into());
    }
    LayerMeta {
        parent: bottom.parent,
        kind,
        stats,
        ..top.clone()
    }
}
