//! Verifying a chain: every listed layer opens and verifies, parent links lead back to a
//! base, and the manifest agrees with the layer headers.

use std::path::PathBuf;

use super::{Chain, LayerRecord, StoreError};
use crate::layer::{LayerFigures, LayerKind, LayerReadError};

/// Result of verifying one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Layer id.
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// Base, incremental or resync.
    pub kind: LayerKind,
    /// Its figures (dead slots included).
    pub figures: LayerFigures,
}

/// Result of verifying a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainReport {
    /// The chain.
    pub chain: String,
    /// The layer verification stopped at (the top of the image).
    pub top: u64,
    /// The layers from the base up to `top`, in order.
    pub path: Vec<u64>,
    /// Every listed layer up to `top` that was checked, oldest first.
    pub layers: Vec<LayerReport>,
}

/// Why a chain does not verify. Each names the chain and the bad layer and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ChainVerifyError {
    /// The manifest or chain directory could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer file is missing or damaged.
    #[error(
        "chain {chain}: layer {id} is damaged: {source}; re-take a full checkpoint with --full"
    )]
    Layer {
        /// The chain.
        chain: String,
        /// The layer.
        id: u64,
        /// What the reader found.
        source: LayerReadError,
    },
    /// The manifest and a layer's header disagree.
    #[error("chain {chain}: layer {id} ({path}) disagrees with the manifest: {reason}; re-take a full checkpoint with --full")]
    Mismatch {
        /// The chain.
        chain: String,
        /// The layer.
        id: u64,
        /// The file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// Parent links do not lead back to a base.
    #[error("chain {chain}: layer {id} needs layer {parent}, which is not in the chain; re-take a full checkpoint with --full")]
    BrokenLink {
        /// The chain.
        chain: String,
        /// The layer whose parent is missing.
        id: u64,
        /// The missing parent.
        parent: u64,
    },
    /// The bottom of the chain is not a base layer.
    #[error("chain {chain}: layer {id} has no parent but is not a base layer; re-take a full checkpoint with --full")]
    NoBase {
        /// The chain.
        chain: String,
        /// The layer.
        id: u64,
    },
}

impl Chain {
    /// Verify every listed layer up to `upto` (the newest if None): each opens and all its
    /// frames and digests check, its header matches the manifest, and the parent links from
    /// `upto` lead back to a base.
    pub fn verify(&self, upto: Option<u64>) -> Result<ChainReport, ChainVerifyError> {
        let m = self.manifest()?;
        let top = self.resolve_top(&m, upto)?;
        let mut layers = Vec::new();
        for r in m.layers.iter().filter(|r| r.id <= top.id) {
            layers.push(self.verify_layer(r)?);
        }
        let mut path = vec![top.id];
        let mut cur = top;
        while let Some(parent) = cur.parent {
            let chain = self.name().to_string();
            let next = m.layer(parent).ok_or(ChainVerifyError::BrokenLink {
                chain,
                id: cur.id,
                parent,
            })?;
            if next.id >= cur.id {
                let reason = format!("parent {} is not older", next.id);
                let path = self.layer_path(&cur);
                return Err(ChainVerifyError::Mismatch {
                    chain: self.name().into(),
                    id: cur.id,
                    path,
                    reason,
                });
            }
            path.push(next.id);
            cur = next.clone();
        }
        if cur.kind != LayerKind::Base {
            return Err(ChainVerifyError::NoBase {
                chain: self.name().to_string(),
                id: cur.id,
            });
        }
        path.reverse();
        Ok(ChainReport {
            chain: self.name().to_string(),
            top: *path.last().unwrap_or(&0),
            path,
            layers,
        })
    }

    fn verify_layer(&self, r: &LayerRecord) -> Result<LayerReport, ChainVerifyError> {
        let path = self.layer_path(r);
        let layer_err = |source| ChainVerifyError::Layer {
            chain: self.name().to_string(),
            id: r.id,
            source,
        };
        let reader =
            crate::layer::LayerReader::open_with_key(&path, self.key()).map_err(layer_err)?;
        reader.verify().map_err(layer_err)?;
        let meta = reader.meta();
        let reason = if meta.id != r.id {
            format!("header id {}", meta.id)
        } else if meta.parent != r.parent {
            format!("header parent {:?}, manifest {:?}", meta.parent, r.parent)
        } else if meta.kind != r.kind {
            format!("header kind {:?}, manifest {:?}", meta.kind, r.kind)
        } else if reader.file_bytes() != r.bytes {
            format!("{} bytes, manifest says {}", reader.file_bytes(), r.bytes)
        } else {
            return Ok(LayerReport {
                id: r.id,
                path,
                kind: r.kind,
                figures: reader.figures(),
            });
        };
        Err(ChainVerifyError::Mismatch {
            chain: self.name().to_string(),
            id: r.id,
            path,
            reason,
        })
    }
}
