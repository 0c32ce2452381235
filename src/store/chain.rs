//! One domain's chain directory: layers, manifest, lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::manifest::{self, MANIFEST_TEMP_PREFIX};
use super::{ensure_private_dir, io, is_layer_name, layer_file_name, lock, ChainLock};
use super::{LayerRecord, Manifest};
use super::{StoreError, TrackingState};
use crate::compose::{ComposeError, ComposedImage, LayerStack};
use crate::hv::StateBlob;
use crate::layer::{
    LayerIndex, LayerKey, LayerMeta, LayerReadError, LayerReader, LayerWriter, TEMP_PREFIX,
};

/// One domain's chain directory.
pub struct Chain {
    name: String,
    dir: PathBuf,
    removed: Vec<String>,
    key: Option<LayerKey>,
}

impl Chain {
    /// Open the chain `name` at `dir` (the name is already validated). Removes leftovers of
    /// interrupted writes unless another process holds the chain's lock.
    pub(super) fn open(name: &str, dir: PathBuf) -> Result<Chain, StoreError> {
        let mut chain = Chain {
            name: name.to_string(),
            dir,
            removed: Vec::new(),
            key: None,
        };
        match chain.dir.symlink_metadata() {
            Ok(_) => drop(super::open_dir_nofollow(&chain.dir)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(chain),
            Err(e) => return Err(io(&chain.dir, e)),
        }
        if let Some(_held) = lock::try_lock(&chain.dir)? {
            chain.removed = chain.clean()?;
        }
        Ok(chain)
    }

    /// Remove temp files and layer files the manifest does not list. Returns their names.
    /// Removes nothing when the manifest cannot be read (verify reports that).
    fn clean(&self) -> Result<Vec<String>, StoreError> {
        let Ok(manifest) = self.manifest() else {
            return Ok(Vec::new());
        };
        let listed: Vec<String> = manifest.layers.into_iter().map(|r| r.file).collect();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut removed = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| io(&self.dir, e))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let temp = name.starts_with(TEMP_PREFIX) || name.starts_with(MANIFEST_TEMP_PREFIX);
            let stray_layer = is_layer_name(&name) && !listed.contains(&name);
            if temp || stray_layer {
                std::fs::remove_file(ent.path()).map_err(|e| io(&ent.path(), e))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Use `key` for this chain: new layers are encrypted with it, and encrypted layers are
    /// read with it (plain layers are read either way).
    pub fn with_key(mut self, key: Option<LayerKey>) -> Self {
        self.key = key;
        self
    }

    /// The key layers are read and written with, if any.
    pub fn key(&self) -> Option<&LayerKey> {
        self.key.as_ref()
    }

    /// Open the layer file at `path` with the chain's key.
    pub fn read_layer_file(&self, path: &Path) -> Result<LayerReader, StoreError> {
        Ok(LayerReader::open_with_key(path, self.key.as_ref())?)
    }

    /// The chain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chain's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files removed when the chain was opened (leftovers of interrupted writes).
    pub fn removed_leftovers(&self) -> &[String] {
        &self.removed
    }

    /// The path of a file of the chain.
    pub fn layer_path(&self, record: &LayerRecord) -> PathBuf {
        self.dir.join(&record.file)
    }

    /// Take the chain's exclusive lock (creating the chain directory), waiting up to `wait`.
    /// Writers hold it from the start of a capture until the layer is committed.
    pub fn lock_exclusive(&self, wait: Duration) -> Result<ChainLock, StoreError> {
        ensure_private_dir(&self.dir)?;
        lock::lock(&self.dir, &self.name, wait)
    }

    /// Read the manifest (an empty one if the chain is new).
    pub fn manifest(&self) -> Result<Manifest, StoreError> {
        manifest::read(&self.dir)
    }

    /// Start writing a new layer in this chain (creating the chain directory, 0700). With a
    /// key ([`Chain::with_key`]) the layer is encrypted and must be committed as the next id
    /// (the newest listed id + 1). Without one, a chain whose newest layer is encrypted is
    /// refused: a plain layer on top would store its pages in the clear.
    pub fn begin_layer(&self) -> Result<LayerWriter, StoreError> {
        ensure_private_dir(&self.dir)?;
        let m = self.manifest()?;
        let Some(key) = &self.key else {
            if let Some(last) = m.last() {
                // An unreadable head is for verify to report; only a sealed one refuses here.
                if crate::layer::is_sealed_file(&self.layer_path(last)).unwrap_or(false) {
                    return Err(StoreError::NeedKey {
                        chain: self.name.clone(),
                    });
                }
            }
            return Ok(LayerWriter::create(&self.dir)?);
        };
        let next = m.last().map_or(1, |l| l.id + 1);
        Ok(LayerWriter::create_with_key(&self.dir, Some((key, next)))?)
    }

    /// Finish `writer` as layer `meta.id` and add it to the manifest, atomically. The id must
    /// be above every listed layer's, and the parent (if any) must be listed.
    pub fn commit_layer(
        &self,
        writer: LayerWriter,
        meta: &LayerMeta,
        index: &LayerIndex,
        state: &[StateBlob],
        config: &[u8],
    ) -> Result<LayerRecord, StoreError> {
        let content = LayerContent {
            index,
            state,
            config,
        };
        self.commit_layer_tracked(writer, meta, content, None)
    }

    /// [`Self::commit_layer`] of `content`, and with `tracking` (`Some`) the chain's tracking
    /// state replaced in the same manifest write: one manifest write per checkpoint.
    pub fn commit_layer_tracked(
        &self,
        writer: LayerWriter,
        meta: &LayerMeta,
        content: LayerContent<'_>,
        tracking: Option<Option<TrackingState>>,
    ) -> Result<LayerRecord, StoreError> {
        let LayerContent {
            index,
            state,
            config,
        } = content;
        let mut m = self.manifest()?;
        self.check_commit(&m, meta)?;
        let file = layer_file_name(meta.id);
        let bytes = writer.finish(meta, index, state, config, &self.dir.join(&file))?;
        let record = LayerRecord {
            id: meta.id,
            parent: meta.parent,
            kind: meta.kind,
            file,
            created_unix_ms: meta.created_unix_ms,
            bytes,
            stats: meta.stats.clone(),
            group: meta.group.clone(),
        };
        m.layers.push(record.clone());
        m.domain = Some(meta.domain.clone());
        if let Some(t) = tracking {
            m.tracking = t;
        }
        manifest::write(&self.dir, &m)?;
        Ok(record)
    }

    fn check_commit(&self, m: &Manifest, meta: &LayerMeta) -> Result<(), StoreError> {
        let reason = match (m.last(), meta.parent) {
            (Some(last), _) if meta.id <= last.id => format!("id must be above {}", last.id),
            (_, Some(p)) if m.layer(p).is_none() => format!("parent {p} is not in the chain"),
            _ => return Ok(()),
        };
        Err(StoreError::BadCommit {
            chain: self.name.clone(),
            id: meta.id,
            reason,
        })
    }

    /// Replace the tracking state in the manifest, atomically.
    pub fn set_tracking(&self, tracking: Option<TrackingState>) -> Result<(), StoreError> {
        ensure_private_dir(&self.dir)?;
        let mut m = self.manifest()?;
        m.tracking = tracking;
        manifest::write(&self.dir, &m)
    }

    pub(super) fn record(&self, m: &Manifest, id: u64) -> Result<LayerRecord, StoreError> {
        m.layer(id).cloned().ok_or(StoreError::NoSuchLayer {
            chain: self.name.clone(),
            id,
        })
    }

    /// Open layer `id`.
    pub fn open_layer(&self, id: u64) -> Result<LayerReader, StoreError> {
        let m = self.manifest()?;
        let r = self.record(&m, id)?;
        self.read_layer_file(&self.layer_path(&r))
    }

    /// The id of layer `upto`, or of the newest layer if None.
    pub(super) fn resolve_top(
        &self,
        m: &Manifest,
        upto: Option<u64>,
    ) -> Result<LayerRecord, StoreError> {
        match upto {
            Some(id) => self.record(m, id),
            None => m.last().cloned().ok_or(StoreError::EmptyChain {
                chain: self.name.clone(),
            }),
        }
    }

    /// Compose the image at layer `upto` (the newest if None).
    ///
    /// A reader that lost a race with `merge`/`prune` (a file removed between reading the
    /// manifest and opening it) reads the new manifest and tries again.
    pub fn compose(&self, upto: Option<u64>) -> Result<ComposedImage, StoreError> {
        self.open_point(upto, |top, key, path| {
            ComposedImage::open_with_key(top, key, path)
        })
    }

    /// The layers of point `upto` (latest if None), opened but not composed: for a few
    /// lookups (see [`LayerStack`]).
    pub fn layers(&self, upto: Option<u64>) -> Result<LayerStack, StoreError> {
        self.open_point(upto, |top, key, path| {
            LayerStack::open_with_key(top, key, path)
        })
    }

    /// Open point `upto` with `open` (top layer, key, parent lookup), retrying a read that lost
    /// a race with `merge`/`prune`.
    fn open_point<T, F>(&self, upto: Option<u64>, open: F) -> Result<T, StoreError>
    where
        F: Fn(&Path, Option<&LayerKey>, &dyn Fn(u64) -> Option<PathBuf>) -> Result<T, ComposeError>,
    {
        let mut tries = 0;
        loop {
            let m = self.manifest()?;
            let top = self.resolve_top(&m, upto)?;
            let result = open(&self.layer_path(&top), self.key(), &|id| {
                m.layer(id).map(|r| self.layer_path(r))
            });
            match result {
                Err(ComposeError::Read(e)) if self.lost_race(&e, &m, &mut tries) => continue,
                r => return Ok(r?),
            }
        }
    }

    /// Whether reading failed because a file listed by `m` was removed by a writer that has
    /// replaced the manifest since (so the read is worth retrying), counting `tries`.
    pub(super) fn lost_race(&self, e: &LayerReadError, m: &Manifest, tries: &mut u32) -> bool {
        let vanished = matches!(e, LayerReadError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound);
        *tries += 1;
        vanished && *tries <= READ_TRIES && self.manifest().is_ok_and(|now| now != *m)
    }
}

/// How often a reader retries after losing a race with `merge`/`prune`.
const READ_TRIES: u32 = 3;

/// What a layer holds besides its frames: the page index, the VM state and the config.
#[derive(Clone, Copy)]
pub struct LayerContent<'a> {
    /// The page index.
    pub index: &'a LayerIndex,
    /// VM state blobs.
    pub state: &'a [StateBlob],
    /// The domain's config.
    pub config: &'a [u8],
}
