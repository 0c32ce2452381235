//! One answer to xckpt: scan, optionally drop the clean page cache and scan again, publish.

use xenstore_rs::Xs;

use crate::{free, meminfo};

/// A run of frames: (first pfn, count).
type Run = (u64, u64);

/// Bytes of run text per xenstore node (oxenstored's default value quota is 2048).
const CHUNK_BYTES: usize = 1900;
/// Nodes per list at most (the guest's default quota is 1000 nodes).
const MAX_CHUNKS: usize = 300;

/// Scan, publish the report under `data/xckpt/report/`, and return the reply's fields.
pub fn answer(xs: &impl Xs, drop_cache: bool) -> Result<String, String> {
    let before = meminfo::read()?;
    let first = free::scan()?;
    let (free_runs, cache_runs, after) = if drop_cache {
        std::fs::write("/proc/sys/vm/drop_caches", "1")
            .map_err(|e| format!("cannot write /proc/sys/vm/drop_caches: {e}"))?;
        let second = free::scan()?;
        let after = meminfo::read()?;
        let (f, c) = split(&first.runs, &second.runs);
        (f, c, Some(after))
    } else {
        (first.runs, Vec::new(), None)
    };
    let _ = xs.rm("data/xckpt/report");
    let nf = publish(xs, "free", &free_runs)?;
    let nc = publish(xs, "cache", &cache_runs)?;
    let mut line = format!(
        "free_chunks={nf} cache_chunks={nc} total_kib={} free_kib={} cache_kib={} orders={}",
        before.total_kib, before.free_kib, before.cache_kib, first.orders
    );
    if let Some(a) = after {
        line += &format!(
            " after_free_kib={} after_cache_kib={}",
            a.free_kib, a.cache_kib
        );
    }
    Ok(line)
}

/// Frames free in both scans, and frames free only after the drop (freed from the cache).
fn split(before: &[Run], after: &[Run]) -> (Vec<Run>, Vec<Run>) {
    let end = after
        .iter()
        .chain(before)
        .map(|r| r.0 + r.1)
        .max()
        .unwrap_or(0) as usize;
    let bits = |runs: &[(u64, u64)]| {
        let mut b = vec![false; end];
        for &(s, l) in runs {
            b[s as usize..(s + l) as usize].fill(true);
        }
        b
    };
    let (b, a) = (bits(before), bits(after));
    let both: Vec<bool> = (0..end).map(|i| a[i] && b[i]).collect();
    let only_after: Vec<bool> = (0..end).map(|i| a[i] && !b[i]).collect();
    (to_runs(&both), to_runs(&only_after))
}

fn to_runs(bits: &[bool]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, _) in bits.iter().enumerate().filter(|(_, &b)| b) {
        match runs.last_mut() {
            Some((s, l)) if *s + *l == i as u64 => *l += 1,
            _ => runs.push((i as u64, 1)),
        }
    }
    runs
}

/// The run text chunks of `runs`; if they would need more than `max` chunks, the shortest
/// runs are left out (reporting fewer free pages is always safe).
pub fn encode(runs: &[(u64, u64)], max: usize) -> Vec<String> {
    let mut min_len = 1u64;
    loop {
        let mut chunks = vec![String::new()];
        let mut at = 0u64;
        for &(s, l) in runs.iter().filter(|r| r.1 >= min_len) {
            let run = format!("{:x}:{:x}", s - at, l);
            at = s + l;
            let cur = chunks.last_mut().unwrap();
            if cur.len() + run.len() + 1 > CHUNK_BYTES {
                chunks.push(run);
            } else {
                if !cur.is_empty() {
                    cur.push(',');
                }
                cur.push_str(&run);
            }
        }
        if chunks.len() <= max {
            return chunks;
        }
        min_len *= 2;
    }
}

fn publish(xs: &impl Xs, kind: &str, runs: &[(u64, u64)]) -> Result<usize, String> {
    if runs.is_empty() {
        return Ok(0);
    }
    let chunks = encode(runs, MAX_CHUNKS);
    for (i, c) in chunks.iter().enumerate() {
        let path = format!("data/xckpt/report/{kind}/{i}");
        xs.write(&path, c)
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(chunks.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_gaps_in_hex_chunks_and_drops_short_runs_past_the_cap() {
        assert_eq!(encode(&[(10, 3), (15, 1)], 10), vec!["a:3,2:1"]);
        let many: Vec<(u64, u64)> = (0..2000)
            .map(|i| (i * 4, if i % 2 == 0 { 1 } else { 2 }))
            .collect();
        let all = encode(&many, 1000);
        assert!(all.len() > 1 && all.iter().all(|c| c.len() <= CHUNK_BYTES));
        let capped = encode(&many, 3);
        assert!(capped.len() <= 3);
        assert!(capped[0].starts_with("4:2,"), "{}", capped[0]);
    }

    #[test]
    fn splits_free_from_freed_by_the_drop() {
        let (f, c) = split(&[(0, 4), (10, 2)], &[(0, 6), (11, 1)]);
        assert_eq!(f, vec![(0, 4), (11, 1)]);
        assert_eq!(c, vec![(4, 2)]);
    }
}
