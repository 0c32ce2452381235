//! A bitmap over a large, mostly empty space, kept in blocks of [`BLOCK_BITS`] bits that are
//! allocated at their first set bit.
//!
//! A PVH guest's pfns reach 4 GiB for a few hundred MiB of RAM: a layer's index over that
//! space, as seven flat bitmaps, is 896 KiB per layer, almost all zeros, and every pass over it
//! (parse, count, iterate, check) walks all of it. In a PV dom0 each page of fresh memory is
//! also a fault through the hypervisor. Here memory and every pass scale with the blocks in
//! use: an all-zero block is a `None`.

/// Words (of 64 bits) per block.
pub const BLOCK_WORDS: usize = 64;
/// Bits per block (4096: a 16 MiB stretch of guest memory).
pub const BLOCK_BITS: usize = BLOCK_WORDS * 64;

/// Words per entry of the rank directory (512 bits).
pub const RANK_WORDS: usize = 8;

type Block = Box<[u64; BLOCK_WORDS]>;

/// A bitmap of `len` bits; bit `i` is bit `i % 64` of word `i / 64` (as [`crate::hv::PfnBitmap`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockBits {
    len: usize,
    blocks: Vec<Option<Block>>,
}

impl BlockBits {
    /// `len` clear bits (no block allocated).
    pub fn new(len: usize) -> Self {
        let mut bits = BlockBits::default();
        bits.grow(len);
        bits
    }

    /// From the words of a flat bitmap (word `w` holds bits `64w..64w+63`), allocating only
    /// the blocks with a set bit. Words past `len`'s are ignored; bits past `len` in its last
    /// word are the caller's to refuse.
    pub fn from_words(len: usize, words: impl IntoIterator<Item = u64>) -> Self {
        let mut bits = BlockBits::new(len);
        for (w, word) in words.into_iter().take(bits.word_count()).enumerate() {
            if word != 0 {
                bits.block_mut(w / BLOCK_WORDS)[w % BLOCK_WORDS] = word;
            }
        }
        bits
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the bitmap has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of 64-bit words the bits span.
    pub fn word_count(&self) -> usize {
        self.len.div_ceil(64)
    }

    /// Grow to `len` bits, the new ones clear (never shrinks).
    pub fn grow(&mut self, len: usize) {
        if len > self.len {
            self.len = len;
            self.blocks.resize_with(len.div_ceil(BLOCK_BITS), || None);
        }
    }

    /// Bit `i` (false past the end).
    pub fn get(&self, i: usize) -> bool {
        i < self.len && (self.word(i / 64) >> (i % 64)) & 1 == 1
    }

    /// Set bit `i` to `v`. Panics past the end, as a slice index does.
    pub fn set(&mut self, i: usize, v: bool) {
        assert!(i < self.len, "bit {i} of a bitmap of {}", self.len);
        let (b, w, mask) = (i / BLOCK_BITS, i / 64 % BLOCK_WORDS, 1u64 << (i % 64));
        if v {
            self.block_mut(b)[w] |= mask;
        } else if let Some(block) = &mut self.blocks[b] {
            block[w] &= !mask;
        }
    }

    /// Word `w` (zero in a block never written, and past the end).
    pub fn word(&self, w: usize) -> u64 {
        match self.blocks.get(w / BLOCK_WORDS) {
            Some(Some(block)) => block[w % BLOCK_WORDS],
            _ => 0,
        }
    }

    /// Whether block `b` holds a set bit (or did: a block is kept once allocated).
    pub fn has_block(&self, b: usize) -> bool {
        matches!(self.blocks.get(b), Some(Some(_)))
    }

    /// Number of block slots ([`BLOCK_BITS`] bits each) the bits span.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The non-zero words with their numbers, ascending.
    pub fn words(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .filter_map(|(b, block)| Some((b * BLOCK_WORDS, block.as_ref()?)))
            .flat_map(|(first, block)| {
                block
                    .iter()
                    .enumerate()
                    .filter(|&(_, &w)| w != 0)
                    .map(move |(i, &w)| (first + i, w))
            })
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words().map(|(_, w)| w.count_ones() as usize).sum()
    }

    /// The set bits, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words()
            .flat_map(|(w, bits)| Ones(bits).map(move |b| w * 64 + b))
    }

    /// The rank directory for [`BlockBits::rank`]: the set bits before each group of
    /// [`RANK_WORDS`] words (16 KiB for a million pfns; a block never made adds its groups'
    /// entries without counting).
    pub fn rank_directory(&self) -> Vec<u64> {
        let mut dir = Vec::with_capacity(self.blocks.len() * BLOCK_WORDS / RANK_WORDS);
        let mut acc = 0u64;
        for block in &self.blocks {
            for group in 0..BLOCK_WORDS / RANK_WORDS {
                dir.push(acc);
                if let Some(block) = block {
                    let words = &block[group * RANK_WORDS..(group + 1) * RANK_WORDS];
                    acc += words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
                }
            }
        }
        dir
    }

    /// Number of set bits below bit `i`, with `dir` from [`BlockBits::rank_directory`]: at
    /// most [`RANK_WORDS`] words counted (a resync compares every page by its digest, found
    /// through this).
    pub fn rank(&self, dir: &[u64], i: usize) -> usize {
        let w = i / 64;
        let before = dir.get(w / RANK_WORDS).copied().unwrap_or(0) as usize;
        let Some(Some(block)) = self.blocks.get(i / BLOCK_BITS) else {
            return before;
        };
        let at = w % BLOCK_WORDS;
        let group = at - at % RANK_WORDS;
        let whole: usize = block[group..at]
            .iter()
            .map(|x| x.count_ones() as usize)
            .sum();
        before + whole + (block[at] & ((1u64 << (i % 64)) - 1)).count_ones() as usize
    }

    fn block_mut(&mut self, b: usize) -> &mut [u64; BLOCK_WORDS] {
        self.blocks[b].get_or_insert_with(|| Box::new([0; BLOCK_WORDS]))
    }
}

/// The set bits of one word, ascending.
pub struct Ones(pub u64);

impl Iterator for Ones {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_flat_bitmap() {
        let len = 3 * BLOCK_BITS + 77;
        let mut flat = vec![false; len];
        let mut bits = BlockBits::new(len);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..5_000 {
            // Most of the space stays empty: blocks 0 and 3 only.
            let i = if rng.bool() {
                rng.usize(0..BLOCK_BITS)
            } else {
                rng.usize(3 * BLOCK_BITS..len)
            };
            let v = rng.u8(0..3) > 0;
            flat[i] = v;
            bits.set(i, v);
        }
        assert!(!bits.has_block(1) && !bits.has_block(2));
        let ones: Vec<usize> = (0..len).filter(|&i| flat[i]).collect();
        assert_eq!(bits.iter_ones().collect::<Vec<_>>(), ones);
        assert_eq!(bits.count_ones(), ones.len());
        let dir = bits.rank_directory();
        for (i, &v) in flat.iter().enumerate() {
            assert_eq!(bits.get(i), v, "bit {i}");
            assert_eq!(
                bits.rank(&dir, i),
                ones.partition_point(|&o| o < i),
                "rank {i}"
            );
        }
        let words: Vec<u64> = (0..bits.word_count()).map(|w| bits.word(w)).collect();
        assert_eq!(BlockBits::from_words(len, words), bits);
        assert!(!bits.get(len));
    }

    #[test]
    fn grows_with_new_bits_clear() {
        let mut bits = BlockBits::new(10);
        bits.set(9, true);
        bits.grow(BLOCK_BITS + 1);
        bits.set(BLOCK_BITS, true);
        assert_eq!(bits.iter_ones().collect::<Vec<_>>(), vec![9, BLOCK_BITS]);
        bits.set(9, false);
        assert_eq!(bits.count_ones(), 1);
        assert_eq!(Ones(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
    }
}
