//! The guest kernel an introspection found, kept in the chain's directory between checkpoints
//! (`vmi-kernel.json`, mode 0600), so that the next scan of the same boot proves it in a few
//! page reads ([`vmi::Symbols::Known`]) instead of searching the image, its kallsyms and its
//! BTF again. A guest that rebooted fails the proof, and the search runs as the first time.
//!
//! Nothing here is trusted: a memo that does not parse is ignored, and one that parses is only
//! a guess the scan checks against guest memory. Encrypted chains keep no memo: kernel
//! addresses (KASLR) would lie in plaintext beside the encrypted layers.

use std::path::Path;

use super::vmi::KnownKernel;

const FILE: &str = "vmi-kernel.json";
/// The memo's format: bumped when [`KnownKernel`] changes meaning.
const FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Memo {
    format: u32,
    kernel: KnownKernel,
}

/// The kernel kept in `dir`, if a usable memo is there.
pub fn load(dir: &Path) -> Option<KnownKernel> {
    let bytes = crate::fileio::read_nofollow(&dir.join(FILE)).ok()?;
    let memo: Memo = serde_json::from_slice(&bytes).ok()?;
    (memo.format == FORMAT).then_some(memo.kernel)
}

/// Keep `kernel` in `dir`, atomically (a fresh 0600 file renamed over the old one).
pub fn save(dir: &Path, kernel: &KnownKernel) -> std::io::Result<()> {
    let memo = Memo {
        format: FORMAT,
        kernel: kernel.clone(),
    };
    let bytes = serde_json::to_vec(&memo).map_err(std::io::Error::other)?;
    crate::fileio::replace_private(dir, FILE, &bytes)
}

/// Drop the memo in `dir` (a kernel that is no longer there).
pub fn forget(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn kernel() -> KnownKernel {
        KnownKernel {
            banner: "Linux version 6.1.0-56-amd64 (x)".into(),
            symbols: [("linux_banner".to_string(), 0xffff_ffff_8220_0100)].into(),
            delta: 0x1200_0000,
            root: 0x1_2340_0000,
            layout: crate::evict::vmi::layout::PageLayout {
                size: 64,
                flags: 0,
                compound_head: Some(8),
                private: 40,
                mapcount: 48,
                refcount: 52,
            },
            source: "the guest's kallsyms".into(),
        }
    }

    #[test]
    fn a_kept_kernel_reads_back_and_anything_else_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        save(dir.path(), &kernel()).unwrap();
        assert_eq!(load(dir.path()), Some(kernel()));
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another format, or garbage: ignored (the scan searches again).
        let other = serde_json::json!({ "format": FORMAT + 1, "kernel": kernel() });
        std::fs::write(dir.path().join(FILE), other.to_string()).unwrap();
        assert_eq!(load(dir.path()), None);
        std::fs::write(dir.path().join(FILE), b"{\"format\":1").unwrap();
        assert_eq!(load(dir.path()), None);
        forget(dir.path());
        assert!(!dir.path().join(FILE).exists());
    }
}
