//! The page format: every 4 KiB page of the workload's buffer carries a header and a body
//! derived from (page index, generation), so any changed byte is detected.
//!
//! ```text
//! word 0      MAGIC            (locates workload pages inside a save image)
//! word 1      page index
//! word 2      generation       (which write of the page this is)
//! word 3      checksum of words 4..512
//! words 4..   seed(index, generation) + i * STEP   (i = word number)
//! ```

/// Bytes per page.
pub const PAGE_BYTES: usize = 4096;
/// 64-bit words per page.
pub const WORDS: usize = PAGE_BYTES / 8;
/// Marker in word 0 of every workload page ("XCKPTWL1", little endian).
pub const MAGIC: u64 = u64::from_le_bytes(*b"XCKPTWL1");
/// Index of the first body word.
const BODY: usize = 4;
const STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// Seed of a page body: a mix of its index and generation.
fn seed(index: u64, generation: u64) -> u64 {
    let mut x =
        index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ generation.wrapping_mul(0x1656_67B1_9E37_79F9);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Checksum step over one body word (position-dependent so swapped words are caught).
#[inline(always)]
fn fold(sum: u64, word: u64, i: usize) -> u64 {
    sum.wrapping_add(word.wrapping_mul((2 * i as u64) | 1))
        .rotate_left(1)
}

/// Writes page `index` at `generation` into `page`.
pub fn write(page: &mut [u64], index: u64, generation: u64) {
    let mut value = seed(index, generation);
    let mut sum = 0u64;
    for (i, w) in page.iter_mut().enumerate().skip(BODY) {
        *w = value;
        sum = fold(sum, value, i);
        value = value.wrapping_add(STEP);
    }
    page[0] = MAGIC;
    page[1] = index;
    page[2] = generation;
    page[3] = sum;
}

/// What is wrong with a page, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Word 0 is not [`MAGIC`].
    Magic,
    /// The header names another page index.
    Index(u64),
    /// The header generation differs from the one the workload last wrote.
    Generation(u64),
    /// Body word `.0` differs from the value derived from (index, generation).
    Body(usize),
    /// The stored checksum does not match the body.
    Checksum,
}

/// Checks page `index`, expected at `generation`, in one pass over the body.
pub fn verify(page: &[u64], index: u64, generation: u64) -> Result<(), Fault> {
    if page[0] != MAGIC {
        return Err(Fault::Magic);
    }
    if page[1] != index {
        return Err(Fault::Index(page[1]));
    }
    if page[2] != generation {
        return Err(Fault::Generation(page[2]));
    }
    let mut value = seed(index, generation);
    let mut sum = 0u64;
    let mut first_bad = None;
    for (i, &w) in page.iter().enumerate().skip(BODY) {
        if w != value && first_bad.is_none() {
            first_bad = Some(i);
        }
        sum = fold(sum, w, i);
        value = value.wrapping_add(STEP);
    }
    match first_bad {
        Some(i) => Err(Fault::Body(i)),
        None if sum != page[3] => Err(Fault::Checksum),
        None => Ok(()),
    }
}

/// True if `bytes` (one page, any alignment) is a self-consistent workload page.
pub fn is_workload_page(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < PAGE_BYTES {
        return None;
    }
    let words: Vec<u64> = bytes[..PAGE_BYTES]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .collect();
    let (index, generation) = (words[1], words[2]);
    verify(&words, index, generation)
        .ok()
        .map(|()| (index, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_page_verifies_and_any_flip_is_caught() {
        let mut page = vec![0u64; WORDS];
        write(&mut page, 7, 3);
        assert_eq!(verify(&page, 7, 3), Ok(()));
        assert_eq!(verify(&page, 7, 4), Err(Fault::Generation(3)));
        for byte in [0usize, 8, 16, 24, 32, 2048, 4095] {
            let mut bad = page.clone();
            let (w, b) = (byte / 8, byte % 8);
            bad[w] ^= 1u64 << (8 * b);
            assert!(
                verify(&bad, 7, 3).is_err(),
                "flip at byte {byte} not caught"
            );
        }
    }

    #[test]
    fn locator_accepts_only_consistent_pages() {
        let mut page = vec![0u64; WORDS];
        write(&mut page, 42, 9);
        let mut bytes: Vec<u8> = page.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(is_workload_page(&bytes), Some((42, 9)));
        bytes[100] ^= 0x10;
        assert_eq!(is_workload_page(&bytes), None);
    }
}
