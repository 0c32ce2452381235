//! The store: one chain directory per domain, holding layers and a manifest. INTERFACE STUB.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compose::ComposedImage;
use crate::hv::{DomainIdentity, StateBlob};
use crate::layer::{CaptureStats, LayerIndex, LayerKind, LayerMeta, LayerReader, LayerWriter};

/// Errors of store operations, naming the chain and file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on the named path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One layer as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Layer id.
    pub id: u64,
    /// Parent layer id.
    pub parent: Option<u64>,
    /// Base, incremental or resync.
    pub kind: LayerKind,
    /// File name inside the chain directory.
    pub file: String,
    /// Creation time, ms since epoch.
    pub created_unix_ms: u64,
    /// File size.
    pub bytes: u64,
    /// Capture figures.
    pub stats: CaptureStats,
}

/// Log-dirty tracking state kept between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingState {
    /// Log-dirty was left on after the last layer.
    pub armed: bool,
    /// The domain incarnation it was armed on.
    pub identity: DomainIdentity,
    /// The layer the dirty bits are relative to.
    pub since_layer: u64,
}

/// The chain's manifest (`manifest.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// The domain of the chain.
    pub domain: Option<DomainIdentity>,
    /// Layers, oldest first.
    pub layers: Vec<LayerRecord>,
    /// Tracking state, if any.
    pub tracking: Option<TrackingState>,
}

/// The store root.
pub struct Store {}

impl Store {
    /// Open (and create, 0700) the store at `root`. Refuses a symlink.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let _ = root;
        todo!()
    }
    /// The chain of domain `name` (validated: no path separators, no `..`).
    pub fn chain(&self, name: &str) -> Result<Chain, StoreError> {
        let _ = name;
        todo!()
    }
    /// Names of all chains.
    pub fn chains(&self) -> Result<Vec<String>, StoreError> {
        todo!()
    }
}

/// One domain's chain directory.
pub struct Chain {}

impl Chain {
    /// The chain's name.
    pub fn name(&self) -> &str {
        todo!()
    }
    /// Read the manifest (an empty one if the chain is new).
    pub fn manifest(&self) -> Result<Manifest, StoreError> {
        todo!()
    }
    /// Start writing a new layer in this chain.
    pub fn begin_layer(&self) -> Result<LayerWriter, StoreError> {
        todo!()
    }
    /// Finish `writer` as layer `meta.id` and add it to the manifest, atomically.
    pub fn commit_layer(
        &self,
        writer: LayerWriter,
        meta: &LayerMeta,
        index: &LayerIndex,
        state: &[StateBlob],
        config: &[u8],
    ) -> Result<LayerRecord, StoreError> {
        let _ = (writer, meta, index, state, config);
        todo!()
    }
    /// Replace the tracking state in the manifest, atomically.
    pub fn set_tracking(&self, tracking: Option<TrackingState>) -> Result<(), StoreError> {
        let _ = tracking;
        todo!()
    }
    /// Open layer `id`.
    pub fn open_layer(&self, id: u64) -> Result<LayerReader, StoreError> {
        let _ = id;
        todo!()
    }
    /// Compose the image at layer `upto` (the newest if None).
    pub fn compose(&self, upto: Option<u64>) -> Result<ComposedImage, StoreError> {
        let _ = upto;
        todo!()
    }
}
