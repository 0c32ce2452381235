//! Dirty bits that a failed run fetched (and so cleared in the hypervisor) but did not store.
//!
//! They are kept in `pending-dirty.bits` in the chain directory and OR-ed into the next run, so a
//! failed write never loses a dirtied page. Layout: magic `XCKPTPD1`, pfn count (u64 LE), the
//! bitmap words (u64 LE), crc32c of everything before it (u32 LE).

use std::path::{Path, PathBuf};

use crate::hv::PfnBitmap;

const MAGIC: &[u8; 8] = b"XCKPTPD1";
const FILE: &str = "pending-dirty.bits";

fn path(chain_dir: &Path) -> PathBuf {
    chain_dir.join(FILE)
}

/// What was found on disk.
#[derive(Debug)]
pub enum Pending {
    /// No pending bits.
    None,
    /// Bits to OR into this run.
    Bits(PfnBitmap),
    /// A pending file exists but is unusable: the next layer must be a resync.
    Unusable(String),
}

/// OR `bits` into the pending file (creating it), atomically.
pub fn save(chain_dir: &Path, bits: &PfnBitmap) -> std::io::Result<()> {
    let mut all = bits.clone();
    if let Pending::Bits(old) = load(chain_dir, bits.len() as u64) {
        all |= old;
    }
    let mut buf = Vec::with_capacity(20 + all.as_raw_slice().len() * 8);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(all.len() as u64).to_le_bytes());
    for w in all.as_raw_slice() {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    // A fresh file, so its mode is 0600 whatever a leftover had.
    crate::fileio::replace_private(chain_dir, FILE, &buf)?;
    crate::fileio::sync_dir(chain_dir)
}

/// Read the pending bits for a domain of `pfn_count` pfns.
pub fn load(chain_dir: &Path, pfn_count: u64) -> Pending {
    let read = crate::fileio::read_nofollow(&path(chain_dir));
    let buf = match read {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Pending::None,
        Err(e) => return Pending::Unusable(format!("{}: {e}", path(chain_dir).display())),
    };
    match parse(&buf, pfn_count) {
        Some(bits) => Pending::Bits(bits),
        None => Pending::Unusable(format!("{} is damaged or for another pfn count", FILE)),
    }
}

fn parse(buf: &[u8], pfn_count: u64) -> Option<PfnBitmap> {
    let body_len = buf.len().checked_sub(4)?;
    let (body, crc) = buf.split_at(body_len);
    if body.len() < 16 || &body[..8] != MAGIC || crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    let n = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let words = &body[16..];
    if n != pfn_count || words.len() as u64 != n.div_ceil(64) * 8 {
        return None;
    }
    let raw: Vec<u64> = words
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
        .collect();
    let mut bits = PfnBitmap::from_vec(raw);
    bits.truncate(n as usize);
    Some(bits)
}

/// Forget the pending bits (after a layer that covers them was committed).
pub fn clear(chain_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(chain_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_or_load_clear() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = PfnBitmap::repeat(false, 130);
        a.set(3, true);
        save(dir.path(), &a).unwrap();
        let mut b = PfnBitmap::repeat(false, 130);
        b.set(129, true);
        save(dir.path(), &b).unwrap();
        match load(dir.path(), 130) {
            Pending::Bits(bits) => assert_eq!(bits.iter_ones().collect::<Vec<_>>(), vec![3, 129]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(dir.path(), 131), Pending::Unusable(_)));
        let p = path(dir.path());
        let mut raw = std::fs::read(&p).unwrap();
        raw[17] ^= 1;
        std::fs::write(&p, raw).unwrap();
        assert!(matches!(load(dir.path(), 130), Pending::Unusable(_)));
        clear(dir.path()).unwrap();
        assert!(matches!(load(dir.path(), 130), Pending::None));
    }
}
