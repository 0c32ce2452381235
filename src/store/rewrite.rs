//! `merge` and `prune`: keep a set of points of a chain and drop the others, crash-safely.
//!
//! Every kept layer whose parent is dropped is rewritten ([`super::fold`]) with the pages of the
//! dropped layers below it, down to the nearest kept ancestor (or as a new base), so each kept
//! point composes to exactly the image it composed to before. Layer ids do not change, so the
//! tracking state (dirty bits since the newest layer) stays valid; the newest layer is always
//! kept for that reason.
//!
//! The swap is crash-safe, under the chain lock:
//!
//! 1. each rewritten layer is written aside (temp file, fsync, linked as `layer-NNNNNN.rK.xcl`,
//!    directory fsync) while the manifest still lists the old files;
//! 2. the manifest is replaced atomically (temp, fsync, rename, directory fsync): this is the
//!    instant the chain changes;
//! 3. only then are the files of dropped and replaced layers removed (failpoint
//!    `rewrite.remove` before each). A crash before 2 leaves the old chain plus unlisted files;
//!    a crash after 2 leaves the new chain plus unlisted files. Unlisted files are removed when
//!    the chain is next opened.

use std::collections::BTreeSet;

use super::fold::{fold, run_of, Folded};
use super::{io, manifest, ChainLock, StoreError};
use super::{Chain, Manifest};
use crate::failpoint::failpoint;
use crate::fileio::sync_dir;

/// Errors of `merge` and `prune`. Nothing is lost on any of them: the chain is as it was, or
/// (after the manifest was replaced) as asked.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// Reading the chain or writing a rewritten layer failed (e.g. a full disk).
    #[error("chain {chain}: {source}; no point of the chain was lost")]
    Store {
        /// The chain.
        chain: String,
        /// The cause.
        source: StoreError,
    },
    /// The newest layer would be dropped.
    #[error("chain {chain}: layer {id} is the newest and the next checkpoint builds on it; it is always kept")]
    NewestDropped {
        /// The chain.
        chain: String,
        /// The newest layer.
        id: u64,
    },
    /// A layer to keep is not in the chain.
    #[error("chain {chain} has no layer {id} (see `xckpt list {chain}`)")]
    NoSuchLayer {
        /// The chain.
        chain: String,
        /// The id.
        id: u64,
    },
    /// The chain has no layers.
    #[error("chain {chain} has no layers: nothing to merge or prune")]
    Empty {
        /// The chain.
        chain: String,
    },
    /// The new manifest is in place but an old file could not be removed.
    #[error(
        "chain {chain}: done, but {source}; the file is removed the next time the chain is opened"
    )]
    Cleanup {
        /// The chain.
        chain: String,
        /// The cause.
        source: StoreError,
    },
}

/// What a rewrite did.
#[derive(Debug, Clone, Default)]
pub struct RewriteReport {
    /// Layers kept (ids), oldest first.
    pub kept: Vec<u64>,
    /// Layers dropped (their pages folded into a kept child, or gone with no kept descendant).
    pub dropped: Vec<u64>,
    /// The rewritten layers.
    pub rewritten: Vec<RewrittenLayer>,
    /// Bytes of layer files before and after.
    pub bytes_before: u64,
    /// Bytes of layer files after.
    pub bytes_after: u64,
}

/// One rewritten layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewrittenLayer {
    /// Its id.
    pub id: u64,
    /// Its new parent.
    pub parent: Option<u64>,
    /// The layers folded into it, oldest first (itself last).
    pub folded: Vec<u64>,
    /// Its new file.
    pub file: String,
    /// Page slots before (all folded files, dead copies included) and after.
    pub slots_before: u64,
    /// Page slots after.
    pub slots_after: u64,
}

impl From<&Folded> for RewrittenLayer {
    fn from(f: &Folded) -> Self {
        RewrittenLayer {
            id: f.record.id,
            parent: f.record.parent,
            folded: f.folded.clone(),
            file: f.record.file.clone(),
            slots_before: f.slots_before,
            slots_after: f.slots_after,
        }
    }
}

impl Chain {
    /// Squash layer `upto` and everything below it into one base layer with id `upto` (and
    /// drop every other layer older than `upto`). `upto` is rewritten even when it is already
    /// a base, which compacts it (one copy of each page). Points above `upto` are unchanged.
    pub fn merge(&self, lock: &ChainLock, upto: u64) -> Result<RewriteReport, RewriteError> {
        let m = self.manifest().map_err(|e| self.rw_err(e))?;
        if m.layer(upto).is_none() {
            return Err(RewriteError::NoSuchLayer {
                chain: self.name().into(),
                id: upto,
            });
        }
        let keep: BTreeSet<u64> = m
            .layers
            .iter()
            .map(|r| r.id)
            .filter(|&id| id >= upto)
            .collect();
        self.retain(lock, &keep, Some(upto))
    }

    /// Keep exactly the layers `keep` (which must include the newest) and drop the others,
    /// folding dropped layers into their kept descendants; also rewrite layer `compact` (if
    /// given) even when its parent is kept, which drops its dead page copies. Every kept point
    /// composes to the same image before and after.
    pub fn retain(
        &self,
        _lock: &ChainLock,
        keep: &BTreeSet<u64>,
        compact: Option<u64>,
    ) -> Result<RewriteReport, RewriteError> {
        let chain = self.name().to_string();
        let m = self.manifest().map_err(|e| self.rw_err(e))?;
        let newest = m.last().ok_or(RewriteError::Empty {
            chain: chain.clone(),
        })?;
        if !keep.contains(&newest.id) {
            return Err(RewriteError::NewestDropped {
                chain,
                id: newest.id,
            });
        }
        if let Some(&id) = keep.iter().find(|&&id| m.layer(id).is_none()) {
            return Err(RewriteError::NoSuchLayer { chain, id });
        }
        // Step 1: write every rewritten layer aside.
        let mut written: Vec<Folded> = Vec::new();
        let result = self.write_aside(&m, keep, compact, &mut written);
        if let Err(e) = result {
            for f in &written {
                let _ = std::fs::remove_file(self.dir().join(&f.record.file));
            }
            return Err(self.rw_err(e));
        }
        // Step 2: the new manifest.
        let mut new = m.clone();
        new.layers = m
            .layers
            .iter()
            .filter(|r| keep.contains(&r.id))
            .map(|r| {
                written
                    .iter()
                    .find(|f| f.record.id == r.id)
                    .map_or_else(|| r.clone(), |f| f.record.clone())
            })
            .collect();
        if let Err(e) = manifest::write(self.dir(), &new) {
            // The rename may have happened (a failed directory sync): remove only files the
            // manifest on disk does not list.
            let on_disk = self.manifest().unwrap_or(new.clone());
            for f in written
                .iter()
                .filter(|f| !on_disk.layers.contains(&f.record))
            {
                let _ = std::fs::remove_file(self.dir().join(&f.record.file));
            }
            return Err(self.rw_err(e));
        }
        // Step 3: remove what the manifest no longer lists.
        let listed: BTreeSet<&str> = new.layers.iter().map(|r| r.file.as_str()).collect();
        let mut cleanup = Ok(());
        for r in m
            .layers
            .iter()
            .filter(|r| !listed.contains(r.file.as_str()))
        {
            failpoint("rewrite.remove");
            let path = self.layer_path(r);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound && cleanup.is_ok() {
                    cleanup = Err(io(&path, e));
                }
            }
        }
        let synced = sync_dir(self.dir()).map_err(|e| io(self.dir(), e));
        cleanup
            .and(synced)
            .map_err(|source| RewriteError::Cleanup {
                chain: self.name().into(),
                source,
            })?;
        Ok(RewriteReport {
            kept: new.layers.iter().map(|r| r.id).collect(),
            dropped: m
                .layers
                .iter()
                .map(|r| r.id)
                .filter(|id| !keep.contains(id))
                .collect(),
            rewritten: written.iter().map(RewrittenLayer::from).collect(),
            bytes_before: m
                .layers
                .iter()
                .fold(0, |a: u64, r| a.saturating_add(r.bytes)),
            bytes_after: new
                .layers
                .iter()
                .fold(0, |a: u64, r| a.saturating_add(r.bytes)),
        })
    }

    /// Step 1 of [`Chain::retain`]: fold each kept layer whose parent is dropped (and
    /// `compact`) into a new file. Files written so far are pushed to `written`.
    fn write_aside(
        &self,
        m: &Manifest,
        keep: &BTreeSet<u64>,
        compact: Option<u64>,
        written: &mut Vec<Folded>,
    ) -> Result<(), StoreError> {
        for r in m.layers.iter().filter(|r| keep.contains(&r.id)) {
            // The nearest kept ancestor.
            let mut new_parent = r.parent;
            while let Some(p) = new_parent.filter(|p| !keep.contains(p)) {
                new_parent = self.record(m, p)?.parent;
            }
            if new_parent == r.parent && compact != Some(r.id) {
                continue;
            }
            let run = run_of(self, m, r.id, new_parent)?;
            written.push(fold(self, &run)?);
        }
        Ok(())
    }

    /// Rewrite layer `id` alone (its parent kept) when at least `min_dead` of its page slots
    /// are dead copies (pages re-sent by a later pre-copy round of the same capture). Returns
    /// None when the layer is compact enough. Every point composes as before.
    pub fn compact_dead(
        &self,
        lock: &ChainLock,
        id: u64,
        min_dead: f64,
    ) -> Result<Option<RewriteReport>, RewriteError> {
        let f = self.open_layer(id).map_err(|e| self.rw_err(e))?.figures();
        if f.slots == 0 || (f.dead_slots as f64) < min_dead * f.slots as f64 {
            return Ok(None);
        }
        let m = self.manifest().map_err(|e| self.rw_err(e))?;
        let keep: BTreeSet<u64> = m.layers.iter().map(|r| r.id).collect();
        self.retain(lock, &keep, Some(id)).map(Some)
    }

    fn rw_err(&self, source: StoreError) -> RewriteError {
        RewriteError::Store {
            chain: self.name().to_string(),
            source,
        }
    }
}
