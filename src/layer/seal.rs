//! Encryption of layer files (format version 2): XChaCha20-Poly1305 on every frame and section.
//!
//! A key is 32 bytes ([`LayerKey::load`] reads it from a 0600 file). Each encrypted layer has
//! its own random 16-byte *file nonce* in its preamble; the 24-byte AEAD nonce of a piece is
//! that file nonce followed by a 64-bit counter that no other piece of the file uses:
//!
//! ```text
//! frame k         counter = k                      (k < 2^62)
//! section kind s  counter = 2^63 + s
//! key check       nonce   = 24 bytes 0xff (counter 2^64 - 1, never a piece's)
//! ```
//!
//! so a nonce is never used twice under one key (distinct counters inside a file, a fresh
//! 128-bit random file nonce per file). The associated data of every piece starts with the
//! whole preamble (version, flags, cipher, layer id, file nonce), then names the piece: frame
//! index, page count and codec for a frame, kind and codec for a section. A piece moved to
//! another place, another layer or another file fails authentication, and so does every piece
//! if a byte of the preamble changes.
//!
//! The preamble also holds a *key check*: the AEAD tag of an empty message with the associated
//! data `xckpt layer key check` under the nonce of 24 bytes 0xff (counter 2^64 - 1, which no
//! piece uses). It depends on the key only, so a wrong key is told apart from altered data.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::format::{u32_at, u64_at, MAGIC, PREAMBLE_V2_LEN, VERSION_SEALED};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes the AEAD adds to each sealed piece (the Poly1305 tag).
pub const TAG_LEN: usize = 16;
/// Bytes of a file nonce.
pub const FILE_NONCE_LEN: usize = 16;
/// Preamble flag: frames and sections are sealed.
pub const FLAG_SEALED: u32 = 1;
/// Cipher code of XChaCha20-Poly1305.
pub const CIPHER_XCHACHA20POLY1305: u32 = 1;

const SECTION_COUNTER: u64 = 1 << 63;
const KEY_CHECK_NONCE: [u8; 24] = [0xff; 24];
const KEY_CHECK_AD: &[u8] = b"xckpt layer key check";
/// Frames may use counters below this.
pub const MAX_SEALED_FRAMES: u64 = 1 << 62;

/// Why a key file cannot be used. One line each, naming the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Others than the owner may read or write it.
    #[error("key file {path} has mode {mode:04o}; it must be readable by its owner only (chmod 600 {path})")]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Neither 32 raw bytes nor 64 hex digits.
    #[error("key file {path} holds {len} bytes; it must hold 32 raw bytes or 64 hex digits (e.g. `head -c 32 /dev/urandom > {path}`)")]
    Format {
        /// The file.
        path: PathBuf,
        /// Bytes found.
        len: usize,
    },
}

/// A 32-byte layer key, wiped from memory when dropped.
#[derive(Clone)]
pub struct LayerKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerKey(..)")
    }
}

impl LayerKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        LayerKey {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Read a key file: exactly 32 raw bytes, or 64 hex digits (surrounding white space
    /// allowed). The file must not be readable or writable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let md = file.metadata().map_err(io)?;
        let mode = md.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(128));
        // Read one byte past the longest valid file (64 hex digits and white space).
        (&mut file).take(4096).read_to_end(&mut raw).map_err(io)?;
        Self::parse(&raw).ok_or(KeyError::Format {
            path: path.to_path_buf(),
            len: raw.len(),
        })
    }

    fn parse(raw: &[u8]) -> Option<Self> {
        let mut key = [0u8; KEY_LEN];
        if raw.len() == KEY_LEN {
            key.copy_from_slice(raw);
            return Some(Self::from_bytes(key));
        }
        let text = raw.trim_ascii();
        hex::decode_to_slice(text, &mut key).ok()?;
        let k = Self::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Some(k)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_ref().into())
    }
}

/// Why a sealed piece does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The key check failed: another key sealed this file.
    WrongKey,
    /// The piece was altered (or damaged, or moved).
    Tampered,
}

/// The cipher of one sealed layer file: key, preamble and file nonce.
pub struct FileSeal {
    aead: XChaCha20Poly1305,
    preamble: [u8; PREAMBLE_V2_LEN],
}

impl FileSeal {
    /// A seal for a new layer `layer_id` under `key`, with a fresh random file nonce.
    pub fn new(key: &LayerKey, layer_id: u64) -> std::io::Result<Self> {
        let mut nonce = [0u8; FILE_NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self::with_nonce(key, layer_id, nonce))
    }

    fn with_nonce(key: &LayerKey, layer_id: u64, nonce: [u8; FILE_NONCE_LEN]) -> Self {
        let mut p = [0u8; PREAMBLE_V2_LEN];
        p[0..8].copy_from_slice(&MAGIC);
        p[8..12].copy_from_slice(&VERSION_SEALED.to_le_bytes());
        p[12..16].copy_from_slice(&FLAG_SEALED.to_le_bytes());
        p[16..20].copy_from_slice(&CIPHER_XCHACHA20POLY1305.to_le_bytes());
        p[24..32].copy_from_slice(&layer_id.to_le_bytes());
        p[32..48].copy_from_slice(&nonce);
        let mut seal = FileSeal {
            aead: key.cipher(),
            preamble: p,
        };
        let check = seal.key_check();
        seal.preamble[48..64].copy_from_slice(&check);
        let crc = crc32c::crc32c(&seal.preamble[..76]);
        seal.preamble[76..80].copy_from_slice(&crc.to_le_bytes());
        seal
    }

    /// Open the seal of an existing file from its (crc-checked) preamble.
    pub fn from_preamble(key: &LayerKey, preamble: &[u8]) -> Result<Self, OpenError> {
        let mut p = [0u8; PREAMBLE_V2_LEN];
        p.copy_from_slice(preamble.get(..PREAMBLE_V2_LEN).ok_or(OpenError::Tampered)?);
        let seal = FileSeal {
            aead: key.cipher(),
            preamble: p,
        };
        if seal.key_check()[..] != p[48..64] {
            return Err(OpenError::WrongKey);
        }
        Ok(seal)
    }

    /// The preamble to write at offset 0.
    pub fn preamble(&self) -> &[u8; PREAMBLE_V2_LEN] {
        &self.preamble
    }

    /// The layer id bound into every piece.
    pub fn layer_id(&self) -> u64 {
        u64_at(&self.preamble, 24)
    }

    /// The AEAD nonce of the piece with `counter`.
    pub fn nonce(&self, counter: u64) -> [u8; 24] {
        let mut n = [0u8; 24];
        n[..FILE_NONCE_LEN].copy_from_slice(&self.preamble[32..48]);
        n[FILE_NONCE_LEN..].copy_from_slice(&counter.to_le_bytes());
        n
    }

    /// The tag of an empty message under the key check nonce: depends on the key only.
    fn key_check(&self) -> [u8; TAG_LEN] {
        let out = self
            .aead
            .encrypt(
                XNonce::from_slice(&KEY_CHECK_NONCE),
                Payload {
                    msg: &[],
                    aad: KEY_CHECK_AD,
                },
            )
            .unwrap_or_default();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(out.get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
        tag
    }

    fn ad(&self, what: &[u8; 4], id: u64, a: u32, b: u32) -> Vec<u8> {
        let mut ad = Vec::with_capacity(PREAMBLE_V2_LEN + 20);
        ad.extend_from_slice(&self.preamble);
        ad.extend_from_slice(what);
        ad.extend_from_slice(&id.to_le_bytes());
        ad.extend_from_slice(&a.to_le_bytes());
        ad.extend_from_slice(&b.to_le_bytes());
        ad
    }

    fn seal(&self, counter: u64, ad: &[u8], msg: &[u8]) -> Vec<u8> {
        let nonce = self.nonce(counter);
        // Encryption fails only for messages beyond 256 GiB; frames are at most 16 MiB.
        self.aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad: ad })
            .expect("message within the AEAD's size limit")
    }

    fn open(&self, counter: u64, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let nonce = self.nonce(counter);
        self.aead
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: sealed,
                    aad: ad,
                },
            )
            .map_err(|_| OpenError::Tampered)
    }

    /// Seal frame `k` (its encoded bytes, `pages` pages, codec code `codec`).
    pub fn seal_frame(&self, k: u64, pages: u32, codec: u32, data: &[u8]) -> Vec<u8> {
        self.seal(k, &self.ad(b"FRM\0", k, pages, codec), data)
    }

    /// Open frame `k`; the inverse of [`FileSeal::seal_frame`].
    pub fn open_frame(
        &self,
        k: u64,
        pages: u32,
        codec: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        if k >= MAX_SEALED_FRAMES {
            return Err(OpenError::Tampered);
        }
        self.open(k, &self.ad(b"FRM\0", k, pages, codec), sealed)
    }

    /// Seal a section's bytes.
    pub fn seal_section(&self, kind: u32, codec: u32, data: &[u8]) -> Vec<u8> {
        let counter = SECTION_COUNTER | kind as u64;
        self.seal(counter, &self.ad(b"SEC\0", kind as u64, codec, 0), data)
    }

    /// Open a section; the inverse of [`FileSeal::seal_section`].
    pub fn open_section(&self, kind: u32, codec: u32, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let counter = SECTION_COUNTER | kind as u64;
        self.open(counter, &self.ad(b"SEC\0", kind as u64, codec, 0), sealed)
    }
}

/// Whether a v2 preamble says it is sealed with a cipher this version knows.
pub fn preamble_cipher_ok(p: &[u8]) -> bool {
    p.len() >= PREAMBLE_V2_LEN
        && u32_at(p, 12) == FLAG_SEALED
        && u32_at(p, 16) == CIPHER_XCHACHA20POLY1305
        && u32_at(p, 20) == 0
        && p[64..76].iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    fn key(b: u8) -> LayerKey {
        LayerKey::from_bytes([b; KEY_LEN])
    }

    #[test]
    fn nonces_are_unique_in_a_file_and_across_files() {
        let a = FileSeal::new(&key(1), 5).unwrap();
        let b = FileSeal::new(&key(1), 5).unwrap();
        let mut seen = HashSet::new();
        for s in [&a, &b] {
            for k in 0..10_000 {
                assert!(seen.insert(s.nonce(k)), "frame {k} nonce reused");
            }
            for kind in 1..=6 {
                assert!(
                    seen.insert(s.nonce(SECTION_COUNTER | kind)),
                    "section nonce"
                );
            }
            assert_eq!(s.nonce(u64::MAX)[16..], KEY_CHECK_NONCE[16..]);
        }
        // Same plaintext, same place, same key: different ciphertext in another file.
        assert_ne!(
            a.seal_frame(0, 1, 0, &[7; 64]),
            b.seal_frame(0, 1, 0, &[7; 64])
        );
    }

    #[test]
    fn pieces_are_bound_to_their_place() {
        let s = FileSeal::new(&key(2), 9).unwrap();
        let f = s.seal_frame(3, 2, 1, b"frame bytes");
        assert_eq!(s.open_frame(3, 2, 1, &f).unwrap(), b"frame bytes");
        assert_eq!(s.open_frame(4, 2, 1, &f), Err(OpenError::Tampered));
        assert_eq!(s.open_frame(3, 1, 1, &f), Err(OpenError::Tampered));
        assert_eq!(s.open_frame(3, 2, 0, &f), Err(OpenError::Tampered));
        let sec = s.seal_section(1, 0, b"{}");
        assert_eq!(s.open_section(1, 0, &sec).unwrap(), b"{}");
        assert_eq!(s.open_section(2, 0, &sec), Err(OpenError::Tampered));
        // Another layer id (same key, same file nonce) does not open it either.
        let nonce: [u8; 16] = s.preamble()[32..48].try_into().unwrap();
        let other = FileSeal::with_nonce(&key(2), 10, nonce);
        assert_eq!(other.open_frame(3, 2, 1, &f), Err(OpenError::Tampered));
        // The preamble round-trips with the right key only.
        let again = FileSeal::from_preamble(&key(2), s.preamble()).unwrap();
        assert_eq!(again.open_frame(3, 2, 1, &f).unwrap(), b"frame bytes");
        assert_eq!(again.layer_id(), 9);
        assert!(matches!(
            FileSeal::from_preamble(&key(3), s.preamble()),
            Err(OpenError::WrongKey)
        ));
        assert!(preamble_cipher_ok(s.preamble()));
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, bytes: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let raw = put("raw", &[0xab; 32], 0o600);
        let hex = put("hex", format!("{}\n", "ab".repeat(32)).as_bytes(), 0o400);
        let a = LayerKey::load(&raw).unwrap();
        let b = LayerKey::load(&hex).unwrap();
        assert_eq!(*a.bytes, *b.bytes);
        let loose = put("loose", &[1; 32], 0o644);
        let e = LayerKey::load(&loose).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        let short = put("short", &[1; 31], 0o600);
        let e = LayerKey::load(&short).unwrap_err().to_string();
        assert!(e.contains("31 bytes") && e.contains("64 hex digits"), "{e}");
        let nothex = put("nothex", "zz".repeat(32).as_bytes(), 0o600);
        assert!(matches!(
            LayerKey::load(&nothex),
            Err(KeyError::Format { .. })
        ));
        let e = LayerKey::load(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().starts_with("key file "), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
        assert_eq!(format!("{a:?}"), "LayerKey(..)");
    }
}
