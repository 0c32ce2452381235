//! Reading untrusted stream bytes: exact reads with offsets in errors, and bodies whose
//! memory grows only with the bytes actually present (never from a length field alone).

use std::io::{self, Read};

use super::error::{SinkError, StreamParseError};
use super::format::{padding, REC_HEADER_LEN, REC_LENGTH_MAX};

/// A reader that knows its offset.
pub struct Input<'r, R: Read> {
    inner: &'r mut R,
    offset: u64,
}

/// A record header.
#[derive(Debug, Clone, Copy)]
pub struct RecHeader {
    /// Record type.
    pub ty: u32,
    /// Body length (without padding).
    pub len: u32,
    /// Offset of the record header.
    pub at: u64,
}

impl<'r, R: Read> Input<'r, R> {
    /// Wrap `inner`, at offset 0.
    pub fn new(inner: &'r mut R) -> Self {
        Input { inner, offset: 0 }
    }

    /// The offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn io(&self, source: io::Error) -> StreamParseError {
        StreamParseError::Io {
            offset: self.offset,
            source,
        }
    }

    /// Fill `buf` or fail.
    pub fn exact(&mut self, buf: &mut [u8]) -> Result<(), StreamParseError> {
        self.inner.read_exact(buf).map_err(|e| self.io(e))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], StreamParseError> {
        let mut b = [0u8; N];
        self.exact(&mut b)?;
        Ok(b)
    }

    /// A little-endian u32.
    pub fn u32_le(&mut self) -> Result<u32, StreamParseError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// `len` bytes into a new vector, which grows only as bytes arrive.
    pub fn bytes(&mut self, len: u64) -> Result<Vec<u8>, StreamParseError> {
        let mut v = Vec::new();
        let got = (&mut *self.inner)
            .take(len)
            .read_to_end(&mut v)
            .map_err(|e| self.io(e))?;
        self.offset += got as u64;
        if (got as u64) < len {
            return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(v)
    }

    /// Skip `len` bytes.
    pub fn skip(&mut self, len: u64) -> Result<(), StreamParseError> {
        let got =
            io::copy(&mut (&mut *self.inner).take(len), &mut io::sink()).map_err(|e| self.io(e))?;
        self.offset += got;
        if got < len {
            return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// A record header; the length is checked against [`REC_LENGTH_MAX`].
    pub fn rec_header(&mut self) -> Result<RecHeader, StreamParseError> {
        let at = self.offset;
        let b: [u8; REC_HEADER_LEN] = self.array()?;
        let ty = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(b[4..].try_into().expect("4 bytes"));
        if len > REC_LENGTH_MAX {
            return Err(StreamParseError::malformed(
                at,
                format!("record type {ty:#x} claims {len} bytes, over the 128 MiB limit"),
            ));
        }
        Ok(RecHeader { ty, len, at })
    }

    /// The body of `rec` (without padding). The padding after it is skipped, not checked:
    /// the specs say padding "must be ignored during restore".
    pub fn body(&mut self, rec: &RecHeader) -> Result<Vec<u8>, StreamParseError> {
        let v = self.bytes(u64::from(rec.len))?;
        self.skip(padding(rec.len as usize) as u64)?;
        Ok(v)
    }

    /// Skip the body and padding of `rec`.
    pub fn skip_body(&mut self, rec: &RecHeader) -> Result<(), StreamParseError> {
        let len = rec.len as usize;
        self.skip((len + padding(len)) as u64)
    }

    /// Wrap a sink error with the current offset.
    pub fn sink(&self, source: SinkError) -> StreamParseError {
        StreamParseError::Sink {
            offset: self.offset,
            source,
        }
    }
}
