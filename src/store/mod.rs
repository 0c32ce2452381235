//! The store: one chain directory per domain, holding layers and a manifest.
//!
//! ```text
//! /var/lib/xckpt/                 0700, never a symlink
//!   <domain name>/                0700, one chain per domain
//!     manifest.json               0600, replaced atomically (temp, fsync, rename, dir fsync)
//!     layer-000001.xcl            0600, a base layer
//!     layer-000002.xcl            0600, an incremental on top of it
//!     lock                        flock'ed by the process writing the chain
//! ```
//!
//! The manifest is the truth: a layer file it does not list (a crash after the layer was
//! renamed into place but before the manifest was replaced) is removed when the chain is
//! opened, as are temporary files, unless another process holds the chain's lock.

mod chain;
mod fold;
pub(crate) mod lock;
pub(crate) mod manifest;
mod retention;
mod rewrite;
mod verify;

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compose::ComposeError;
use crate::hv::DomainIdentity;
use crate::layer::{
    CaptureStats, DigestKind, LayerKind, LayerReadError, LayerWriteError, PageDigest,
};

pub use chain::{Chain, LayerContent};
pub use fold::Folded;
pub use lock::ChainLock;
pub use retention::RetentionPolicy;
pub use rewrite::{RewriteError, RewriteReport, RewrittenLayer};
pub use verify::{ChainReport, ChainVerifyError, LayerReport, PointReport};

/// Where the store lives unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/xckpt";
/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Longest chain (domain) name.
pub const MAX_NAME_LEN: usize = 64;

/// Errors of store operations, naming the chain and file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on the named path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store root or a chain directory is a symlink.
    #[error("{path} is a symlink; refusing to use it (point --store at a real directory)")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The store root or a chain directory is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A domain name that cannot be a chain directory.
    #[error("invalid domain name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The manifest cannot be parsed.
    #[error("manifest {path} is damaged: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The manifest is not the JSON it should be (or could not be written as JSON).
    #[error("manifest {path} is damaged: {source}")]
    ManifestJson {
        /// The manifest.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The manifest has a format this version does not read.
    #[error("manifest {path} has format {found}; this xckpt reads format {MANIFEST_FORMAT}")]
    ManifestFormat {
        /// The manifest.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
    /// The chain has no such layer.
    #[error("chain {chain} has no layer {id} (see `xckpt list {chain}`)")]
    NoSuchLayer {
        /// The chain.
        chain: String,
        /// The layer id asked for.
        id: u64,
    },
    /// The chain has no layers yet.
    #[error("chain {chain} has no layers yet: take a checkpoint first")]
    EmptyChain {
        /// The chain.
        chain: String,
    },
    /// A new layer's id or parent does not fit the chain.
    #[error("chain {chain}: cannot add layer {id}: {reason}")]
    BadCommit {
        /// The chain.
        chain: String,
        /// The new layer's id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// Another process holds the chain's lock.
    #[error("chain {chain} is locked by another xckpt process (waited {waited_ms} ms on {path})")]
    Locked {
        /// The chain.
        chain: String,
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The chain's newest layer is encrypted and no key was given for a new layer.
    #[error("chain {chain} is encrypted: give its key with --encrypt KEYFILE (a plain layer would store pages in the clear)")]
    NeedKey {
        /// The chain.
        chain: String,
    },
    /// Writing a layer failed.
    #[error(transparent)]
    Write(#[from] LayerWriteError),
    /// Reading a layer failed.
    #[error(transparent)]
    Read(#[from] LayerReadError),
    /// Composing layers failed.
    #[error(transparent)]
    Compose(#[from] ComposeError),
}

pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
    if source.raw_os_error() == Some(libc::ELOOP) {
        return StoreError::Symlink {
            path: path.to_path_buf(),
        };
    }
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Open the directory `dir` itself, refusing a symlink (`O_DIRECTORY | O_NOFOLLOW`).
pub(crate) fn open_dir_nofollow(dir: &Path) -> Result<std::os::fd::OwnedFd, StoreError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP => StoreError::Symlink {
            path: dir.to_path_buf(),
        },
        rustix::io::Errno::NOTDIR if dir.is_symlink() => StoreError::Symlink {
            path: dir.to_path_buf(),
        },
        rustix::io::Errno::NOTDIR => StoreError::NotADirectory {
            path: dir.to_path_buf(),
        },
        e => io(dir, e.into()),
    })
}

/// One layer as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Layer id.
    pub id: u64,
    /// Parent layer id.
    pub parent: Option<u64>,
    /// Base, incremental or resync.
    pub kind: LayerKind,
    /// File name inside the chain directory.
    pub file: String,
    /// Creation time, ms since epoch.
    pub created_unix_ms: u64,
    /// File size.
    pub bytes: u64,
    /// Capture figures.
    pub stats: CaptureStats,
    /// The group checkpoint this layer is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::layer::GroupTag>,
}

/// Log-dirty tracking state kept between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingState {
    /// Log-dirty was left on after the last layer.
    pub armed: bool,
    /// The domain incarnation it was armed on.
    pub identity: DomainIdentity,
    /// The layer the dirty bits are relative to.
    pub since_layer: u64,
    /// A run fetched (and so cleared) dirty bits and has not yet stored them or kept them in
    /// `pending-dirty.bits`. Still set when the next run starts, it means that run was killed:
    /// the bits are lost and the next layer must be a resync.
    #[serde(default)]
    pub in_flight: bool,
    /// A sample of the pages layer `since_layer` stores as data, with their digests, drawn
    /// when it was committed: the next incremental's spot check reads these pages from the
    /// domain and opens no layer (capture::spot). Empty on an encrypted chain, whose page
    /// digests stay inside its sealed layers, and in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spot: Vec<SpotPage>,
}

/// A page of a spot-check sample: its pfn and the digest of its stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotPage {
    /// The pfn.
    pub pfn: u64,
    /// The digest of the page's data as the layer stores it.
    pub digest: u64,
    /// The hash of `digest`, the layer's ([`crate::layer::DigestKind`]); absent (xxh3) in
    /// manifests written before format version 5.
    #[serde(default)]
    pub hash: DigestKind,
}

impl SpotPage {
    /// The recorded digest.
    pub fn recorded(&self) -> PageDigest {
        PageDigest {
            kind: self.hash,
            value: self.digest,
        }
    }
}

/// The chain's manifest (`manifest.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// The domain of the chain.
    pub domain: Option<DomainIdentity>,
    /// Layers, oldest first.
    pub layers: Vec<LayerRecord>,
    /// Tracking state, if any.
    pub tracking: Option<TrackingState>,
}

impl Manifest {
    /// The record of layer `id`.
    pub fn layer(&self, id: u64) -> Option<&LayerRecord> {
        self.layers.iter().find(|r| r.id == id)
    }
    /// The newest layer.
    pub fn last(&self) -> Option<&LayerRecord> {
        self.layers.last()
    }
}

/// Now, in microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// The file name of layer `id`.
pub fn layer_file_name(id: u64) -> String {
    format!("layer-{id:06}.xcl")
}

/// `layer-<digits>.xcl`, or `layer-<digits>.r<digits>.xcl` (a layer rewritten by merge/prune).
pub(crate) fn is_layer_name(name: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name
        .strip_prefix("layer-")
        .and_then(|r| r.strip_suffix(".xcl"))
    else {
        return false;
    };
    match rest.split_once(".r") {
        Some((id, rev)) => digits(id) && digits(rev),
        None => digits(rest),
    }
}

/// The sub-directories of `dir` whose names are valid chain (or group) names, sorted; none
/// if `dir` does not exist.
pub(crate) fn named_dirs(dir: &Path) -> Result<Vec<String>, StoreError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir, e)),
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io(dir, e))?;
        let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if let (true, Some(name)) = (is_dir, ent.file_name().to_str()) {
            if validate_name(name).is_ok() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Check a domain name for use as a chain directory: `[A-Za-z0-9_.-]`, 1 to 64 characters,
/// no leading dot (which also excludes `.` and `..`).
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 64 characters");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Make sure `dir` is a real directory with mode 0700, creating it if needed. Returns a
/// warning when its permissions had to be tightened.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<Option<String>, StoreError> {
    let created = match dir.symlink_metadata() {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io(dir, e))?;
            true
        }
        Err(e) => return Err(io(dir, e)),
    };
    // Check and fix the mode through a descriptor of the directory itself, so a symlink
    // swapped in after the check cannot redirect the chmod.
    let fd = open_dir_nofollow(dir)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io(dir, e.into()))?;
    let mode = st.st_mode & 0o7777;
    if mode == 0o700 || (!created && mode & 0o077 == 0) {
        return Ok(None);
    }
    let private = rustix::fs::Mode::from_raw_mode(0o700);
    rustix::fs::fchmod(&fd, private).map_err(|e| io(dir, e.into()))?;
    // `recursive` applied the umask to a new directory: no warning for that.
    Ok((!created).then(|| format!("{} had mode {mode:04o}; set it to 0700", dir.display())))
}

/// The store root.
pub struct Store {
    root: PathBuf,
    warnings: Vec<String>,
}

impl Store {
    /// Open (and create, 0700) the store at `root`. Refuses a symlink; tightens looser
    /// permissions to 0700 (see [`Store::warnings`]).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let warnings = ensure_private_dir(root)?.into_iter().collect();
        Ok(Store {
            root: root.to_path_buf(),
            warnings,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Things fixed while opening (loose permissions), for the user.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The chain of domain `name` (validated: see [`validate_name`]). The directory is created
    /// when the first layer is written; leftovers of interrupted writes are removed.
    pub fn chain(&self, name: &str) -> Result<Chain, StoreError> {
        validate_name(name)?;
        Chain::open(name, self.root.join(name))
    }

    /// Names of all chains.
    pub fn chains(&self) -> Result<Vec<String>, StoreError> {
        named_dirs(&self.root)
    }
}
