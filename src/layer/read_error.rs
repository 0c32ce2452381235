//! The errors of reading a layer, in the order [`super::LayerReader::open`] checks them. Their
//! own file, below both the reader and its checks, which raise them.

use std::path::PathBuf;

use super::format::VERSION;
use crate::hv::PAGE_SIZE;

/// Errors while reading a layer. Each names the file; open-time variants come in check order.
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
    /// Too small to hold a preamble and a trailer.
    #[error("layer {path} is only {size} bytes: not a layer, or cut short")]
    TooSmall {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// No trailer: the write was torn (the process died before finishing the layer).
    #[error(
        "layer {path} has no trailer (found {found:02x?}): it was never finished or was cut short"
    )]
    Torn {
        /// The file.
        path: PathBuf,
        /// The bytes where the trailer magic should be.
        found: [u8; 8],
    },
    /// The trailer's own checksum does not match.
    #[error(
        "layer {path}: trailer checksum {found:#010x} != {expected:#010x}: the file is damaged"
    )]
    TrailerChecksum {
        /// The file.
        path: PathBuf,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The trailer records another file size (truncated or extended file).
    #[error("layer {path} is {actual} bytes but its trailer says {recorded}: the file was cut or appended to")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size in the trailer.
        recorded: u64,
        /// Size on disk.
        actual: u64,
    },
    /// The section table's checksum does not match.
    #[error("layer {path}: section table checksum {found:#010x} != {expected:#010x}: the file is damaged")]
    TableChecksum {
        /// The file.
        path: PathBuf,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The file does not start with the layer magic.
    #[error("{path} is not an xckpt layer (magic {found:02x?})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Unsupported format version.
    #[error("layer {path} has format version {found}; this xckpt reads versions 1, 3, 4 and {VERSION} (plain) and 2 (encrypted)")]
    BadVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The preamble's checksum does not match.
    #[error(
        "layer {path}: preamble checksum {found:#010x} != {expected:#010x}: the file is damaged"
    )]
    PreambleChecksum {
        /// The file.
        path: PathBuf,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// Frames, sections, table and trailer do not tile the file as the format requires.
    #[error("layer {path}: bad layout: {reason}")]
    BadLayout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A section's checksum does not match.
    #[error("layer {path}: {section} section checksum {found:#010x} != {expected:#010x}: the file is damaged")]
    SectionChecksum {
        /// The file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// META is not a valid header.
    #[error("layer {path}: META section is not a valid header: {reason}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// Parse error or disagreement.
        reason: String,
    },
    /// A section's structure is invalid.
    #[error("layer {path}: {section} section is malformed: {reason}")]
    BadSection {
        /// The file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The page index is inconsistent.
    #[error("layer {path}: page index is inconsistent: {reason}")]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A frame's bytes do not match their checksum.
    #[error("layer {path}: frame {frame} checksum {found:#010x} != {expected:#010x}: page data is damaged")]
    FrameChecksum {
        /// The file.
        path: PathBuf,
        /// Frame number.
        frame: u64,
        /// Recorded.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// A frame does not decode.
    #[error("layer {path}: frame {frame} does not decode: {reason}")]
    FrameDecode {
        /// The file.
        path: PathBuf,
        /// Frame number.
        frame: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// A decoded page does not match its digest.
    #[error(
        "layer {path}: page in slot {slot} has digest {found:#018x}, {expected:#018x} recorded"
    )]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// Slot number.
        slot: u64,
        /// Recorded.
        expected: u64,
        /// Computed.
        found: u64,
    },
    /// The layer is encrypted and no key was given.
    #[error("layer {path} is encrypted: give its key with --encrypt KEYFILE")]
    NeedKey {
        /// The file.
        path: PathBuf,
    },
    /// The layer was encrypted with another key.
    #[error("layer {path} was encrypted with another key: give the key it was written with (--encrypt KEYFILE)")]
    WrongKey {
        /// The file.
        path: PathBuf,
    },
    /// A sealed piece fails authentication: the file was altered.
    #[error(
        "layer {path}: {what} fails authentication: the encrypted file was altered or damaged"
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// The piece (preamble, a section, frame N).
        what: String,
    },
    /// The caller's buffer is not one page.
    #[error("layer {path}: page buffer of {len} bytes, {PAGE_SIZE} needed")]
    BadBuffer {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}
