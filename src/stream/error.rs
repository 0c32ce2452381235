//! Errors of writing and parsing a save file.

use crate::hv::{GuestType, Pfn};
use crate::layer::LayerReadError;

/// Why a save stream could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StreamWriteError {
    /// The guest type cannot be expressed as a stream.
    #[error("cannot write a Xen save stream for a {0:?} guest")]
    Unsupported(GuestType),
    /// A PV guest's frames could not be normalised (mfn -> pfn) for the stream.
    #[error("the PV guest's state cannot be written as a stream: {0}; the checkpoint is inconsistent (take a new one)")]
    Pv(crate::pv::PvError),
    /// A state blob the restore needs is absent from the image.
    #[error("the image has no {0} state blob, so `xl restore` could not rebuild the domain: was the checkpoint taken with the Xen back-end?")]
    MissingState(&'static str),
    /// A state blob is malformed (wrong size or content).
    #[error("the {what} state blob is malformed ({reason}); the checkpoint is damaged or came from an incompatible back-end")]
    BadState {
        /// Which blob.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The domain config does not fit the image.
    #[error("the domain config does not fit: {0}")]
    BadConfig(String),
    /// The domain config could not be rewritten.
    #[error("the domain config does not fit: {0}")]
    Config(#[from] crate::libxl::config::ConfigRewriteError),
    /// Reading a page of the image failed.
    #[error("reading pfn {pfn:#x} of the image: {source}")]
    ReadPage {
        /// The pfn.
        pfn: Pfn,
        /// The cause.
        source: LayerReadError,
    },
    /// The image does not fit the format (pfn beyond 2^52, record over 4 GiB).
    #[error("the image cannot be expressed as a Xen stream: {0}")]
    TooLarge(String),
    /// Writing the memory of the domain `xl restore` was building failed: the stream was cut
    /// there, so `xl restore` made no domain.
    #[error("writing the memory of domain {name} (the pages from pfn {pfn:#x}) while `xl restore` built it: {source}; the restore was stopped and left no domain")]
    Fill {
        /// The domain.
        name: String,
        /// The first pfn of the batch.
        pfn: Pfn,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing to the output failed (for a pipe into `xl restore`: it exited early, see its log).
    #[error("writing the save stream failed: {0} (if this feeds `xl restore`, check its output and /var/log/xen)")]
    Io(#[from] std::io::Error),
}

/// An error reported by a [`crate::stream::StreamSink`].
pub type SinkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a save file could not be parsed. `offset` is the byte offset in the file where the
/// offending item starts.
#[derive(Debug, thiserror::Error)]
pub enum StreamParseError {
    /// Reading failed or the file ended early.
    #[error("reading the save file at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The cause (`UnexpectedEof` for a truncated file).
        source: std::io::Error,
    },
    /// A header does not identify the expected format.
    #[error("not an xl save file (bad {what} at byte {offset}): is this really the output of `xl save`?")]
    BadMagic {
        /// Which header field.
        what: &'static str,
        /// Where.
        offset: u64,
    },
    /// A feature of the file is not supported (big-endian, legacy v1 stream, PV guest...).
    #[error("unsupported save file at byte {offset}: {what}")]
    Unsupported {
        /// What.
        what: String,
        /// Where.
        offset: u64,
    },
    /// A record or field is malformed.
    #[error("malformed save file at byte {offset}: {what}")]
    Malformed {
        /// What is wrong.
        what: String,
        /// Where.
        offset: u64,
    },
    /// The sink refused an item.
    #[error("importing the save file at byte {offset}: {source}")]
    Sink {
        /// Where.
        offset: u64,
        /// The sink's error.
        source: SinkError,
    },
}

impl StreamParseError {
    /// Build a [`StreamParseError::Malformed`].
    pub(crate) fn malformed(offset: u64, what: impl Into<String>) -> Self {
        StreamParseError::Malformed {
            what: what.into(),
            offset,
        }
    }

    /// Build a [`StreamParseError::Unsupported`].
    pub(crate) fn unsupported(offset: u64, what: impl Into<String>) -> Self {
        StreamParseError::Unsupported {
            what: what.into(),
            offset,
        }
    }
}
