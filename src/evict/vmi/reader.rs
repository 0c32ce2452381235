//! Bounded reads of guest-physical memory: the introspection's only way into the guest.
//!
//! Every read is charged against a [`Budget`] (pages and a deadline), so a hostile guest cannot
//! make the scan run long or read much: when the budget is spent the scan stops with
//! [`VmiError::Budget`] and the capture goes on without introspection.

use std::time::{Duration, Instant};

use crate::hv::{GuestMemory, PAGE_SIZE};

use super::VmiError;

/// Guest-physical frames, read-only.
pub trait PhysMem {
    /// Frames the guest has (pfns `0..frames()`).
    fn frames(&self) -> u64;
    /// Read `pfns` into `out` (`PAGE_SIZE` bytes each), and once more into `again` if given,
    /// after the whole first pass. Returns, per frame, whether it could be read.
    fn read(
        &self,
        pfns: &[u64],
        out: &mut [u8],
        again: Option<&mut [u8]>,
    ) -> Result<Vec<bool>, VmiError>;
}

/// A domain's memory through the hypervisor traits (the copy path's mapping).
pub struct HvMem<'a> {
    /// The domain.
    pub dom: &'a dyn GuestMemory,
    /// Its pfn count.
    pub frames: u64,
}

impl PhysMem for HvMem<'_> {
    fn frames(&self) -> u64 {
        self.frames
    }

    fn read(
        &self,
        pfns: &[u64],
        out: &mut [u8],
        mut again: Option<&mut [u8]>,
    ) -> Result<Vec<bool>, VmiError> {
        let mut ok = vec![false; pfns.len()];
        for (c, batch) in pfns.chunks(256).enumerate() {
            let base = c * 256;
            let mapped = self.dom.map_batch(batch)?;
            for (i, slot) in ok[base..base + batch.len()].iter_mut().enumerate() {
                if let Ok(p) = mapped.page(i) {
                    p.copy_to(&mut out[(base + i) * PAGE_SIZE..][..PAGE_SIZE]);
                    *slot = true;
                }
            }
            if let Some(b) = again.as_deref_mut() {
                for i in 0..batch.len() {
                    if let Ok(p) = mapped.page(i) {
                        p.copy_to(&mut b[(base + i) * PAGE_SIZE..][..PAGE_SIZE]);
                    }
                }
            }
        }
        Ok(ok)
    }
}

/// A plain byte image of guest memory (tests, and tools reading a dump).
pub struct ImageMem(pub Vec<u8>);

impl PhysMem for ImageMem {
    fn frames(&self) -> u64 {
        (self.0.len() / PAGE_SIZE) as u64
    }

    fn read(
        &self,
        pfns: &[u64],
        out: &mut [u8],
        again: Option<&mut [u8]>,
    ) -> Result<Vec<bool>, VmiError> {
        let mut ok = Vec::with_capacity(pfns.len());
        for (i, &p) in pfns.iter().enumerate() {
            let src = usize::try_from(p)
                .ok()
                .and_then(|p| p.checked_mul(PAGE_SIZE))
                .and_then(|s| self.0.get(s..s.checked_add(PAGE_SIZE)?));
            if let Some(src) = src {
                out[i * PAGE_SIZE..][..PAGE_SIZE].copy_from_slice(src);
            }
            ok.push(src.is_some());
        }
        if let Some(b) = again {
            b[..out.len()].copy_from_slice(out);
        }
        Ok(ok)
    }
}

/// How much the introspection may read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall time for the whole scan.
    pub time: Duration,
    /// Guest pages read in all (each pass counts).
    pub pages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(20),
            pages: 1 << 20,
        }
    }
}

/// Reads charged against [`Limits`].
pub struct Reader<'m> {
    mem: &'m dyn PhysMem,
    deadline: Instant,
    pages_left: u64,
    /// Pages read so far.
    pub pages_read: u64,
}

impl<'m> Reader<'m> {
    /// A reader of `mem` within `limits`.
    pub fn new(mem: &'m dyn PhysMem, limits: Limits) -> Self {
        Reader {
            mem,
            deadline: Instant::now() + limits.time,
            pages_left: limits.pages,
            pages_read: 0,
        }
    }

    /// Frames the guest has.
    pub fn frames(&self) -> u64 {
        self.mem.frames()
    }

    fn charge(&mut self, pages: u64) -> Result<(), VmiError> {
        if Instant::now() > self.deadline {
            return Err(VmiError::Budget("out of time".into()));
        }
        self.pages_left = self
            .pages_left
            .checked_sub(pages)
            .ok_or_else(|| VmiError::Budget(format!("more than {} pages", self.pages_read)))?;
        self.pages_read += pages;
        Ok(())
    }

    /// Read frames (see [`PhysMem::read`]); frames past the guest's end read as missing.
    pub fn frames_into(
        &mut self,
        pfns: &[u64],
        out: &mut [u8],
        again: Option<&mut [u8]>,
    ) -> Result<Vec<bool>, VmiError> {
        let passes = if again.is_some() { 2 } else { 1 };
        self.charge(pfns.len() as u64 * passes)?;
        let n = self.frames();
        if pfns.iter().all(|&p| p < n) {
            return self.mem.read(pfns, out, again);
        }
        // Never ask the back-end for a frame the guest does not have.
        let inside: Vec<u64> = pfns.iter().map(|&p| if p < n { p } else { 0 }).collect();
        let mut ok = self.mem.read(&inside, out, again)?;
        for (o, &p) in ok.iter_mut().zip(pfns) {
            *o &= p < n;
        }
        Ok(ok)
    }

    /// `len` bytes at guest-physical `phys`; None if any of it is outside the guest or unreadable.
    pub fn bytes(&mut self, phys: u64, len: usize) -> Result<Option<Vec<u8>>, VmiError> {
        let Some(end) = phys.checked_add(len as u64) else {
            return Ok(None);
        };
        if len == 0 || end > self.frames().saturating_mul(PAGE_SIZE as u64) {
            return Ok(None);
        }
        let first = phys / PAGE_SIZE as u64;
        let last = (end - 1) / PAGE_SIZE as u64;
        let pfns: Vec<u64> = (first..=last).collect();
        let mut buf = vec![0u8; pfns.len() * PAGE_SIZE];
        let ok = self.frames_into(&pfns, &mut buf, None)?;
        if ok.iter().any(|o| !o) {
            return Ok(None);
        }
        let off = (phys % PAGE_SIZE as u64) as usize;
        buf.drain(..off);
        buf.truncate(len);
        Ok(Some(buf))
    }

    /// A little-endian u64 at `phys`.
    pub fn u64_at(&mut self, phys: u64) -> Result<Option<u64>, VmiError> {
        Ok(self
            .bytes(phys, 8)?
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))))
    }
}
