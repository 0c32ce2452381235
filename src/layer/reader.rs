//! Reading and verifying a layer file. INTERFACE STUB.

use std::path::{Path, PathBuf};

use super::{LayerIndex, LayerMeta, PageEntry};
use crate::hv::{Pfn, StateBlob};

/// Errors while reading a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerReadError {
    /// An I/O error on the named file.
    #[error("reading layer {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An open, validated layer file.
pub struct LayerReader {}

impl LayerReader {
    /// Open and validate trailer, section checksums, magic and version.
    pub fn open(path: &Path) -> Result<Self, LayerReadError> {
        let _ = path;
        todo!()
    }
    /// The header.
    pub fn meta(&self) -> &LayerMeta {
        todo!()
    }
    /// The page index.
    pub fn index(&self) -> &LayerIndex {
        todo!()
    }
    /// What this layer says about `pfn` (None: not covered).
    pub fn entry(&self, pfn: Pfn) -> Option<PageEntry> {
        let _ = pfn;
        todo!()
    }
    /// Read `pfn`'s data into `buf` (4096 bytes). Zero-fills for zero/evicted/unpopulated.
    pub fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError> {
        let _ = (pfn, buf);
        todo!()
    }
    /// VM state blobs.
    pub fn state(&self) -> &[StateBlob] {
        todo!()
    }
    /// The domain config blob.
    pub fn config(&self) -> &[u8] {
        todo!()
    }
    /// Check every frame's checksum and decompression.
    pub fn verify(&self) -> Result<(), LayerReadError> {
        todo!()
    }
    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        todo!()
    }
}
