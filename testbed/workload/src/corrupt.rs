//! Finds the workload's pages inside an uncompressed save image (by [`page::MAGIC`] plus a
//! valid checksum) and optionally flips one byte of one of them, in place.

use crate::page::{self, PAGE_BYTES};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};

/// One workload page found in a file.
pub struct Found {
    /// Byte offset of the page in the file.
    pub offset: u64,
    /// The page's index in the workload buffer.
    pub index: u64,
    /// Its generation.
    pub generation: u64,
}

/// What a scan found: whole workload pages, and torn ones.
#[derive(Default)]
pub struct Pages {
    /// Self-consistent pages.
    pub whole: Vec<Found>,
    /// Header indexes of pages that start with [`page::MAGIC`] but do not verify: a page the
    /// guest was rewriting when it was paused (the body is written before the header), one per
    /// writer at most in a consistent image.
    pub torn: Vec<u64>,
}

/// What [`Pages::counts`] reports for a buffer of a given size.
#[derive(Debug, PartialEq, Eq)]
pub struct Counts {
    /// Indices with a whole copy (any index: the buffer's own pages are all below its size).
    pub distinct: usize,
    /// Indices below the buffer size with a torn copy and no whole one.
    pub torn: usize,
}

impl Pages {
    /// Counts for a workload buffer of `buffer_pages` pages.
    pub fn counts(&self, buffer_pages: u64) -> Counts {
        use std::collections::BTreeSet;
        let distinct: BTreeSet<u64> = self.whole.iter().map(|f| f.index).collect();
        let torn: BTreeSet<u64> = self
            .torn
            .iter()
            .copied()
            .filter(|i| *i < buffer_pages && !distinct.contains(i))
            .collect();
        Counts {
            distinct: distinct.len(),
            torn: torn.len(),
        }
    }
}

/// Finds every workload page in `bytes` (pages may sit at any byte offset: the libxc stream
/// follows the xl header, whose length varies).
pub fn find_pages(bytes: &[u8]) -> Pages {
    let magic = page::MAGIC.to_le_bytes();
    let mut pages = Pages::default();
    let mut i = 0;
    while i + PAGE_BYTES <= bytes.len() {
        match bytes[i..].iter().position(|&b| b == magic[0]) {
            None => break,
            Some(k) => i += k,
        }
        if bytes[i..].starts_with(&magic) {
            if let Some((index, generation)) = page::is_workload_page(&bytes[i..]) {
                pages.whole.push(Found {
                    offset: i as u64,
                    index,
                    generation,
                });
                i += PAGE_BYTES;
                continue;
            }
            // Not whole: record it, but keep looking from the next byte (a stray MAGIC must
            // not hide a whole page that starts within the next 4 KiB).
            let index = u64::from_le_bytes(bytes[i + 8..i + 16].try_into().expect("8 bytes"));
            pages.torn.push(index);
        }
        i += 1;
    }
    pages
}

/// Scans the file at `path` (memory-mapped read-only) and returns every workload page in it.
pub fn scan(path: &str) -> std::io::Result<Pages> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(Pages::default());
    }
    // SAFETY: a fresh read-only private mapping of `len` bytes of an open file; the result is
    // checked for MAP_FAILED before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ptr` maps `len` readable bytes and stays mapped until the munmap below; nobody
    // writes the file while the test bed scans it.
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    let found = find_pages(bytes);
    // SAFETY: unmaps exactly the mapping created above; `bytes` is not used afterwards.
    unsafe { libc::munmap(ptr, len) };
    Ok(found)
}

/// `workload scan FILE PAGES`: prints how many pages of a PAGES-page workload buffer the file
/// holds: `distinct` whole pages by index, and `torn` indices below PAGES that appear only
/// torn (the page the writer was rewriting at the pause). Stale partial copies elsewhere in
/// guest memory (freed frames, other indices) are not counted as torn.
pub fn scan_cmd(path: &str, buffer_pages: u64) -> i32 {
    match scan(path) {
        Ok(pages) => {
            let counts = pages.counts(buffer_pages);
            println!(
                "SCAN file={path} pages={} distinct={} torn={}",
                pages.whole.len(),
                counts.distinct,
                counts.torn
            );
            0
        }
        Err(e) => {
            eprintln!("workload scan: cannot read {path}: {e}");
            1
        }
    }
}

/// `workload corrupt FILE [NTH]`: flips one body byte of the NTH workload page in FILE.
pub fn corrupt_cmd(path: &str, nth: usize) -> i32 {
    let found = match scan(path) {
        Ok(pages) => pages.whole,
        Err(e) => {
            eprintln!("workload corrupt: cannot read {path}: {e}");
            return 1;
        }
    };
    let Some(target) = found.get(nth.min(found.len().saturating_sub(1))) else {
        eprintln!("workload corrupt: no workload page found in {path}");
        return 1;
    };
    let at = target.offset + (PAGE_BYTES as u64) / 2 + 3;
    let flip = || -> std::io::Result<u8> {
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut b)?;
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&[b[0] ^ 0x5A])?;
        f.sync_all()?;
        Ok(b[0])
    };
    match flip() {
        Ok(old) => {
            println!(
                "CORRUPTED file={path} byte_offset={at} page={} gen={} old=0x{old:02x} new=0x{:02x} pages_in_file={}",
                target.index,
                target.generation,
                old ^ 0x5A,
                found.len()
            );
            0
        }
        Err(e) => {
            eprintln!("workload corrupt: cannot write {path} at {at}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pages_at_odd_offsets_and_counts_damaged_ones_as_torn() {
        let mut image = vec![0u8; 37];
        for (index, generation) in [(3u64, 1u64), (9, 4), (12, 2)] {
            let mut words = vec![0u64; page::WORDS];
            page::write(&mut words, index, generation);
            image.extend(words.iter().flat_map(|w| w.to_le_bytes()));
            image.extend_from_slice(&page::MAGIC.to_le_bytes()[..5]);
        }
        let damaged = 37 + 2 * (PAGE_BYTES + 5) + 999;
        image[damaged] ^= 1;
        let pages = find_pages(&image);
        assert_eq!(pages.torn, vec![12]);
        // Page 12 is torn and has no whole copy: torn within a 13-page buffer, a stale copy
        // outside a 12-page one.
        assert_eq!(
            pages.counts(13),
            Counts {
                distinct: 2,
                torn: 1
            }
        );
        assert_eq!(
            pages.counts(12),
            Counts {
                distinct: 2,
                torn: 0
            }
        );
        let got: Vec<(u64, u64, u64)> = pages
            .whole
            .iter()
            .map(|f| (f.offset, f.index, f.generation))
            .collect();
        assert_eq!(got, vec![(37, 3, 1), (37 + PAGE_BYTES as u64 + 5, 9, 4)]);
    }
}
