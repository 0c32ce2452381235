//! Page content: part pseudo-random bytes, part repeated text, cheap to generate.
//!
//! A page is 16 chunks of 256 bytes. Each chunk starts with pseudo-random words and ends with a
//! slice of a fixed text at a pseudo-random offset, so pages compress like real memory (text
//! matches, random literals) and every `(pfn, generation)` gives different bytes.

use crate::hv::PAGE_SIZE;

use super::config::ContentSpec;

const CHUNK: usize = 256;

const TEXT: &[u8] =
    b"Nov 22 03:14:15 guest kernel: [  42.123456] eth0: link up, 1000Mbps, full-duplex \
/usr/lib/x86_64-linux-gnu/libc.so.6 /usr/bin/python3 GET /index.html HTTP/1.1 200 OK \
Content-Type: text/html; charset=utf-8 <div class=\"row\"><span>hello world</span></div> \
SELECT id, name, value FROM settings WHERE owner = 'admin' ORDER BY id; systemd[1]: Started \
Session 3 of user root. The quick brown fox jumps over the lazy dog. 0123456789abcdef \
{\"id\": 1234, \"status\": \"active\", \"tags\": [\"alpha\", \"beta\"]} export PATH=/usr/local/bin \
Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt. ";

/// Generates page content for one sim from its seed and [`ContentSpec`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentGen {
    seed: u64,
    random_bytes: usize,
    zero_threshold: u64,
}

/// wyrand step: a fast 64-bit generator.
#[inline]
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    ((t >> 64) as u64) ^ (t as u64)
}

/// A well-mixed hash of a few words.
#[inline]
pub(crate) fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut s = a ^ b.rotate_left(21) ^ c.rotate_left(42);
    wyrand(&mut s);
    wyrand(&mut s)
}

impl ContentGen {
    pub(crate) fn new(seed: u64, spec: &ContentSpec) -> Self {
        let random = ((1.0 - spec.compressibility) * CHUNK as f64).round() as usize;
        ContentGen {
            seed,
            random_bytes: (random / 8 * 8).min(CHUNK),
            zero_threshold: (spec.zero_fraction * u64::MAX as f64) as u64,
        }
    }

    /// Fill `buf` (one page) with the content of `pfn` at `generation`. Returns false (and
    /// zeroes `buf`) when this `(pfn, generation)` is a zero page.
    pub(crate) fn fill(&self, pfn: u64, generation: u64, buf: &mut [u8]) -> bool {
        debug_assert_eq!(buf.len(), PAGE_SIZE);
        let mut state = mix(self.seed, pfn, generation);
        if self.zero_threshold > 0 && wyrand(&mut state) < self.zero_threshold {
            buf.fill(0);
            return false;
        }
        for chunk in buf.chunks_exact_mut(CHUNK) {
            let (rand, text) = chunk.split_at_mut(self.random_bytes);
            for w in rand.chunks_exact_mut(8) {
                w.copy_from_slice(&wyrand(&mut state).to_le_bytes());
            }
            if !text.is_empty() {
                let off = (wyrand(&mut state) % (TEXT.len() - text.len()) as u64) as usize;
                text.copy_from_slice(&TEXT[off..off + text.len()]);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let g = ContentGen::new(
            7,
            &ContentSpec {
                compressibility: 0.6,
                zero_fraction: 0.0,
            },
        );
        let (mut a, mut b, mut c) = (vec![0; PAGE_SIZE], vec![0; PAGE_SIZE], vec![0; PAGE_SIZE]);
        assert!(g.fill(3, 1, &mut a));
        g.fill(3, 1, &mut b);
        g.fill(3, 2, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn compresses_two_to_three_times() {
        let g = ContentGen::new(
            9,
            &ContentSpec {
                compressibility: 0.6,
                zero_fraction: 0.0,
            },
        );
        let mut data = vec![0u8; 64 * PAGE_SIZE];
        for (i, p) in data.chunks_exact_mut(PAGE_SIZE).enumerate() {
            g.fill(i as u64, 5, p);
        }
        let z = zstd::bulk::compress(&data, 1).unwrap();
        let ratio = data.len() as f64 / z.len() as f64;
        assert!((1.8..3.5).contains(&ratio), "ratio {ratio}");
    }
}
