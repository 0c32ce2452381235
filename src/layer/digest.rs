//! Page digests and frame check codes, by format version.
//!
//! Every stored page has a 64-bit digest (the DIGESTS section) that proves a decoded page is
//! the captured one, and every plain frame a 32-bit check code (FRAMETAB) that names a damaged
//! frame. Format version 5 takes both with xxh64; versions 1-4 and encrypted layers (version
//! 2, whose format is unchanged) with xxh3-64.
//!
//! Why xxh64: the one-vCPU dom0 of the test bed runs under emulation (QEMU TCG), where xxh3's
//! vector code costs about four times xxh64's scalar code per byte (596 against 2,523 MB/s for
//! 4 KiB pages under QEMU 7.2's user-mode emulator with the bed's CPU model); natively xxh64
//! still hashes about 13 GB/s on one core, far above what a capture or a restore moves. Every
//! page is hashed once on each path (capture, restore, verify, the spot check).

use serde::{Deserialize, Serialize};
use xxhash_rust::{xxh3, xxh64};

/// The hash a layer's page digests and frame check codes are taken with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestKind {
    /// xxh3-64: format versions 1 to 4 and encrypted layers. Also what a recorded digest
    /// without a kind means (manifests written before format version 5).
    #[default]
    Xxh3,
    /// xxh64, seed 0: format version 5.
    Xxh64,
}

impl DigestKind {
    /// The hash plain layers are written with now.
    pub const PLAIN: DigestKind = DigestKind::Xxh64;
    /// The hash encrypted layers (format version 2) are written with.
    pub const SEALED: DigestKind = DigestKind::Xxh3;

    /// The hash of layers of format `version`.
    pub fn of_version(version: u32) -> DigestKind {
        if version == super::format::VERSION {
            DigestKind::Xxh64
        } else {
            DigestKind::Xxh3
        }
    }

    /// The digest of `bytes` (a page, or a frame's encoded bytes).
    pub fn hash(self, bytes: &[u8]) -> u64 {
        match self {
            DigestKind::Xxh3 => xxh3::xxh3_64(bytes),
            DigestKind::Xxh64 => xxh64::xxh64(bytes, 0),
        }
    }

    /// A frame's check code (FRAMETAB's `crc`, format versions 4 and 5): the low 32 bits of
    /// the hash of its pages' digests (little-endian u64s, in slot order) for a raw frame,
    /// whose bytes are the pages the digests were just computed over, or of its encoded bytes
    /// for a zstd frame. Versions 1 and 3 used crc32c of the encoded bytes: under emulation
    /// crc32c costs twenty times xxh64 per byte, and a raw frame's bytes were hashed twice.
    pub fn frame_code(self, codec: super::Codec, data: &[u8], digests: &[u64]) -> u32 {
        match codec {
            // Streamed, as the digests' bytes: no buffer per frame.
            super::Codec::Raw => match self {
                DigestKind::Xxh3 => {
                    let mut h = xxh3::Xxh3::new();
                    for d in digests {
                        h.update(&d.to_le_bytes());
                    }
                    h.digest() as u32
                }
                DigestKind::Xxh64 => {
                    let mut h = xxh64::Xxh64::new(0);
                    for d in digests {
                        h.update(&d.to_le_bytes());
                    }
                    h.digest() as u32
                }
            },
            super::Codec::Zstd => self.hash(data) as u32,
        }
    }
}

/// A page digest as a layer records it: the value and the hash it was taken with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageDigest {
    /// The hash.
    pub kind: DigestKind,
    /// The digest.
    pub value: u64,
}

impl PageDigest {
    /// The digest of `slot` in a layer's DIGESTS table `digests`, taken with `kind`.
    pub fn of_slot(kind: DigestKind, digests: &[u64], slot: u64) -> Option<PageDigest> {
        let value = digests.get(usize::try_from(slot).ok()?).copied()?;
        Some(PageDigest { kind, value })
    }

    /// Whether `page` has this digest.
    pub fn matches(&self, page: &[u8]) -> bool {
        self.kind.hash(page) == self.value
    }
}

/// The digest of `page` as plain layers are written now ([`DigestKind::PLAIN`]).
pub fn page_digest(page: &[u8]) -> u64 {
    DigestKind::PLAIN.hash(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_its_hash_and_the_frame_code_covers_the_digests() {
        let page = vec![0x5au8; 4096];
        assert_eq!(DigestKind::Xxh3.hash(&page), xxh3::xxh3_64(&page));
        assert_eq!(DigestKind::Xxh64.hash(&page), xxh64::xxh64(&page, 0));
        assert_ne!(DigestKind::Xxh3.hash(&page), DigestKind::Xxh64.hash(&page));
        let d = PageDigest {
            kind: DigestKind::Xxh64,
            value: page_digest(&page),
        };
        assert!(d.matches(&page));
        assert!(!PageDigest {
            kind: DigestKind::Xxh3,
            ..d
        }
        .matches(&page));
        // Version 4's raw-frame code: xxh3 of the digests' bytes, as the streaming hasher
        // computed it.
        let digests = [1u64, 2, 3];
        let mut h = xxh3::Xxh3::new();
        for x in digests {
            h.update(&x.to_le_bytes());
        }
        assert_eq!(
            DigestKind::Xxh3.frame_code(super::super::Codec::Raw, &[], &digests),
            h.digest() as u32
        );
        assert_eq!(
            DigestKind::of_version(super::super::format::VERSION),
            DigestKind::Xxh64
        );
        assert_eq!(DigestKind::of_version(4), DigestKind::Xxh3);
        assert_eq!(DigestKind::of_version(2), DigestKind::Xxh3);
    }

    #[test]
    fn a_recorded_kind_reads_back_and_none_means_xxh3() {
        #[derive(Deserialize, Serialize)]
        struct Rec {
            #[serde(default)]
            hash: DigestKind,
        }
        let r: Rec = serde_json::from_str("{}").unwrap();
        assert_eq!(r.hash, DigestKind::Xxh3);
        let s = serde_json::to_string(&Rec {
            hash: DigestKind::Xxh64,
        })
        .unwrap();
        assert_eq!(s, r#"{"hash":"xxh64"}"#);
    }
}
