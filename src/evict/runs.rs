//! The run-length text the guest agent publishes its free pages in (docs/eviction.md).
//!
//! ```text
//! chunk  = run ("," run)*            at most 1900 bytes, under xenstore's 2048-byte value quota
//! run    = gap ":" len               lowercase hex; gap from the end of the previous run
//!                                    (the first from pfn 0), across chunks
//! ```
//! `"a:3,2:1"` is pfns 0xa..0xd and 0xf.

/// A bad run text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad free-page run {0:?} in the agent's report (want GAP:LEN in hex)")]
pub struct BadRun(pub String);

/// Decode `chunks` (in order) into `(start, len)` runs.
pub fn decode<'a>(chunks: impl IntoIterator<Item = &'a str>) -> Result<Vec<(u64, u64)>, BadRun> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for chunk in chunks {
        for run in chunk.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = || BadRun(run.to_string());
            let (g, l) = run.split_once(':').ok_or_else(bad)?;
            let gap = u64::from_str_radix(g, 16).map_err(|_| bad())?;
            let len = u64::from_str_radix(l, 16).map_err(|_| bad())?;
            let start = at.checked_add(gap).ok_or_else(bad)?;
            at = start.checked_add(len).ok_or_else(bad)?;
            if len > 0 {
                out.push((start, len));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_gaps_across_chunks_and_refuses_garbage() {
        assert_eq!(
            decode(["a:3,2:1", "10:2"]).unwrap(),
            vec![(0xa, 3), (0xf, 1), (0x20, 2)]
        );
        assert_eq!(decode([""]).unwrap(), vec![]);
        assert_eq!(decode(["a3"]), Err(BadRun("a3".into())));
        assert_eq!(decode(["x:1"]), Err(BadRun("x:1".into())));
        assert!(decode(["ffffffffffffffff:2"]).is_err());
    }
}
