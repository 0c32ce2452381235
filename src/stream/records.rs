//! Writing records (type, length, body, zero padding to 8 bytes) and counting bytes.

use std::io::{self, Write};

use super::error::StreamWriteError;
use super::format::{padding, REC_HEADER_LEN};

/// A writer that counts the bytes that went through it.
pub struct CountingWriter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const ZEROS: [u8; 8] = [0; 8];

/// Write a record header for a body of `len` bytes (little-endian type and length).
pub fn write_record_header(
    w: &mut impl Write,
    ty: u32,
    len: usize,
) -> Result<(), StreamWriteError> {
    let len32 = u32::try_from(len).map_err(|_| {
        StreamWriteError::TooLarge(format!("record type {ty:#x} would be {len} bytes long"))
    })?;
    let mut hdr = [0u8; REC_HEADER_LEN];
    hdr[..4].copy_from_slice(&ty.to_le_bytes());
    hdr[4..].copy_from_slice(&len32.to_le_bytes());
    w.write_all(&hdr)?;
    Ok(())
}

/// Write the zero padding that follows a body of `len` bytes.
pub fn write_padding(w: &mut impl Write, len: usize) -> Result<(), StreamWriteError> {
    w.write_all(&ZEROS[..padding(len)])?;
    Ok(())
}

/// Write a whole record whose body is the concatenation of `parts`.
pub fn write_record(w: &mut impl Write, ty: u32, parts: &[&[u8]]) -> Result<(), StreamWriteError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    write_record_header(w, ty, len)?;
    for p in parts {
        w.write_all(p)?;
    }
    write_padding(w, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_padded_to_eight() {
        let mut out = Vec::new();
        write_record(&mut out, 3, &[b"abc", b"de"]).unwrap();
        assert_eq!(
            out,
            [3, 0, 0, 0, 5, 0, 0, 0, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]
        );
    }
}
