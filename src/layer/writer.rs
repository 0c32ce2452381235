//! Writing a layer file. INTERFACE STUB.

use std::path::{Path, PathBuf};

use super::{Frame, LayerIndex, LayerMeta};
use crate::hv::StateBlob;

/// Errors while writing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerWriteError {
    /// An I/O error on the named file.
    #[error("writing layer {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A layer being written to a temporary file in its chain directory.
pub struct LayerWriter {}

impl LayerWriter {
    /// Start a layer in `dir` (a temp file, 0600, created exclusively).
    pub fn create(dir: &Path) -> Result<Self, LayerWriteError> {
        let _ = dir;
        todo!()
    }
    /// Append the next frame; returns the slot of its first page.
    pub fn push_frame(&mut self, frame: &Frame) -> Result<u64, LayerWriteError> {
        let _ = frame;
        todo!()
    }
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        todo!()
    }
    /// Write index, state, config, meta and trailer; fsync; rename to `dest`; fsync the
    /// directory. Returns the final file size.
    pub fn finish(
        self,
        meta: &LayerMeta,
        index: &LayerIndex,
        state: &[StateBlob],
        config: &[u8],
        dest: &Path,
    ) -> Result<u64, LayerWriteError> {
        let _ = (meta, index, state, config, dest);
        todo!()
    }
}
