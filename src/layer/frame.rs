//! Page frames: a fixed number of pages compressed as one zstd frame. INTERFACE STUB.

/// How a frame's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Pages stored as they are.
    Raw,
    /// One zstd frame.
    Zstd,
}

/// A compressed frame of pages, ready for [`super::LayerWriter::push_frame`].
#[derive(Debug, Clone)]
pub struct Frame {
    /// Number of pages in the frame.
    pub pages: u32,
    /// Encoding of `data`.
    pub codec: Codec,
    /// Encoded bytes.
    pub data: Vec<u8>,
    /// crc32c of `data`.
    pub crc: u32,
}

/// Compress `pages` (a multiple of 4096 bytes) at `level` (0 = store raw). Falls back to raw
/// when compression does not shrink the data.
pub fn compress_frame(pages: &[u8], level: i32) -> Frame {
    let _ = (pages, level);
    todo!()
}
