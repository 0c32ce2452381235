//! `workload burst FILE MIB`: each time FILE changes (xckpt-agent --notify writes it after a
//! report), allocate MIB MiB at once, fill it with pages derived from the report's nonce and
//! print `BURST n=N hash=H`; then print `BURST-CHECK n=N hash=H` every second with the hash
//! recomputed from memory. Pages allocated right after a report were likely reported free:
//! after a restore, the first BURST-CHECK must equal the last BURST before the checkpoint.

use std::time::Duration;

fn hash(buf: &[u64]) -> u64 {
    // FNV-1a over words: enough to tell any changed page.
    buf.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &w| {
        (h ^ w).wrapping_mul(0x1000_0000_01b3)
    })
}

fn fill(buf: &mut [u64], seed: u64) {
    let mut x = seed | 1;
    for w in buf.iter_mut() {
        // xorshift64: distinct, non-zero words on every page.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *w = x;
    }
}

/// Run until killed.
pub fn burst(file: &str, mib: usize) -> i32 {
    let words = mib << 17;
    let mut region: Vec<u64> = Vec::new();
    let mut seen = std::fs::read_to_string(file).unwrap_or_default();
    let mut n = 0u64;
    let mut last = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = std::fs::read_to_string(file).unwrap_or_default();
        if now != seen && !now.is_empty() {
            seen = now;
            n += 1;
            drop(std::mem::take(&mut region));
            let mut fresh = vec![0u64; words];
            let seed = seen
                .trim()
                .bytes()
                .fold(n, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
            fill(&mut fresh, seed);
            region = fresh;
            println!("BURST n={n} hash={:016x} mib={mib}", hash(&region));
        }
        if !region.is_empty() && last.elapsed() >= Duration::from_secs(1) {
            last = std::time::Instant::now();
            println!("BURST-CHECK n={n} hash={:016x}", hash(&region));
        }
    }
}
