//! Verifying a chain: every listed layer opens and verifies, parent links lead back to a
//! base, and the manifest agrees with the layer headers. The deep check also composes every
//! point and checks each of its data pages against the digest stored at capture.

use std::path::PathBuf;

use super::{Chain, LayerRecord, StoreError};
use crate::compose::{ComposeError, ComposedImage, Image, PageState};
use crate::layer::{page_digest, LayerFigures, LayerKind, LayerReadError, LayerReader};
use crate::progress;

/// Result of verifying one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Layer id.
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// Base, incremental or resync.
    pub kind: LayerKind,
    /// Its figures (dead slots included).
    pub figures: LayerFigures,
}

/// Result of verifying a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainReport {
    /// The chain.
    pub chain: String,
    /// The layer verification stopped at (the top of the image).
    pub top: u64,
    /// The layers from the base up to `top`, in order.
    pub path: Vec<u64>,
    /// Every listed layer up to `top` that was checked, oldest first.
    pub layers: Vec<LayerReport>,
    /// With the deep check: every point up to `top` composed and checked, oldest first.
    pub points: Vec<PointReport>,
}

/// One point composed and checked by the deep verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PointReport {
    /// The point (its top layer).
    pub id: u64,
    /// Layers composed, base first.
    pub path: Vec<u64>,
    /// Data pages read and checked against their stored digest.
    pub data: u64,
    /// Zero pages.
    pub zero: u64,
    /// Evicted pages (restored as zeros).
    pub evicted: u64,
    /// Unpopulated pfns.
    pub unpopulated: u64,
}

/// Why a chain does not verify. Each names the chain and the bad layer and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ChainVerifyError {
    /// The manifest or chain directory could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer file is missing or damaged.
    #[error(
        "chain {chain}: layer {id} is damaged: {error}; points that build on layer {id} cannot be restored: re-take a full checkpoint with `xckpt checkpoint --full`"
    )]
    Layer {
        /// The chain.
        chain: String,
        /// The layer.
        id: u64,
        /// What the reader found (in the message, not a `source`, so it is printed once).
        error: LayerReadError,
    },
    /// The manifest and a layer's header disagree.
    #[error("chain {chain}: layer {id} ({path}) disagrees with the manifest: {reason}; re-take a full checkpoint with --full")]
    Mismatch {
        /// The chain.
        chain: String,
        /// The layer.
        id: u64,
        /// The file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// Parent links do not lead back to a base.
    #[error("chain {chain}: layer {id} needs layer {parent}, which is not in the chain; re-take a full checkpoint with --full")]
    BrokenLink {
        /// The chain.
        chain: String,
        /// The layer whose parent is missing.
        id: u64,
        /// The missing parent.
        parent: u64,
    },
    /// A point does not compose.
    #[error("chain {chain}: point {id} does not compose: {error}; re-take a full checkpoint with --full")]
    Compose {
        /// The chain.
        chain: String,
        /// The point.
        id: u64,
        /// Why (in the message, not a `source`, so it is printed once).
        error: ComposeError,
    },
    /// A page of a composed point does not match the digest stored at capture.
    #[error("chain {chain}: point {id}: pfn {pfn:#x} from layer {layer} has digest {found:#018x}, {expected:#018x} was stored at capture; layer {layer} is damaged: re-take a full checkpoint with --full")]
    PageDigest {
        /// The chain.
        chain: String,
        /// The point.
        id: u64,
        /// The page.
        pfn: u64,
        /// The layer the page was read from.
        layer: u64,
        /// Stored digest.
        expected: u64,
        /// Digest of the data read.
        found: u64,
    },
    /// The bottom of the chain is not a base layer.
    #[error("chain {chain}: layer {id} has no parent but is not a base layer; re-take a full checkpoint with --full")]
    NoBase {
        /// The chain.
        chain: String,
        /// The layer.
        id: u64,
    },
}

impl Chain {
    /// Verify every listed layer up to `upto` (the newest if None): each opens and all its
    /// frames and digests check, its header matches the manifest, and the parent links from
    /// `upto` lead back to a base.
    pub fn verify(&self, upto: Option<u64>) -> Result<ChainReport, ChainVerifyError> {
        self.verify_with(upto, true, false)
            .map(|(report, _)| report)
    }

    /// [`Chain::verify`] without decoding any frame: each layer up to `upto` opens (trailer,
    /// table, preamble, sections, index checked), its header matches the manifest, and the
    /// links lead back to a base. A restore checks the page data as it decodes it.
    pub fn verify_headers(&self, upto: Option<u64>) -> Result<ChainReport, ChainVerifyError> {
        self.verify_with(upto, false, false)
            .map(|(report, _)| report)
    }

    /// [`Chain::verify_headers`], then the point `upto` composed from the layers it opened
    /// (each file is opened and its sections read once): what a restore or an export streams.
    pub fn compose_checked(&self, upto: Option<u64>) -> Result<ComposedImage, ChainVerifyError> {
        let (report, mut opened) = self.verify_with(upto, false, true)?;
        let mut layers = Vec::with_capacity(report.path.len());
        for id in &report.path {
            let at = opened.iter().position(|l| l.meta().id == *id);
            // verify_listed opened every listed layer up to the top, so every layer of the
            // path is there; a missing one is a broken link all the same.
            let l = at
                .map(|i| opened.swap_remove(i))
                .ok_or(ChainVerifyError::BrokenLink {
                    chain: self.name().to_string(),
                    id: report.top,
                    parent: *id,
                })?;
            layers.push(l);
        }
        ComposedImage::from_layers(layers).map_err(|error| ChainVerifyError::Compose {
            chain: self.name().to_string(),
            id: report.top,
            error,
        })
    }

    /// Verify the layers up to `upto` (their frames too if `frames`); with `keep`, the readers
    /// opened are returned, for a caller that reads the point next.
    fn verify_with(
        &self,
        upto: Option<u64>,
        frames: bool,
        keep: bool,
    ) -> Result<(ChainReport, Vec<LayerReader>), ChainVerifyError> {
        let mut tries = 0;
        loop {
            let m = self.manifest()?;
            match self.verify_listed(&m, upto, frames, keep) {
                Err(ChainVerifyError::Layer { error, .. })
                    if self.lost_race(&error, &m, &mut tries) => {}
                r => return r,
            }
        }
    }

    fn verify_listed(
        &self,
        m: &super::Manifest,
        upto: Option<u64>,
        frames: bool,
        keep: bool,
    ) -> Result<(ChainReport, Vec<LayerReader>), ChainVerifyError> {
        let top = self.resolve_top(m, upto)?;
        let mut layers = Vec::new();
        let mut opened = Vec::new();
        for r in m.layers.iter().filter(|r| r.id <= top.id) {
            let (report, reader) = self.verify_layer(r, frames)?;
            layers.push(report);
            if keep {
                opened.push(reader);
            }
        }
        let mut path = vec![top.id];
        let mut cur = top;
        while let Some(parent) = cur.parent {
            let chain = self.name().to_string();
            let next = m.layer(parent).ok_or(ChainVerifyError::BrokenLink {
                chain,
                id: cur.id,
                parent,
            })?;
            if next.id >= cur.id {
                let reason = format!("parent {} is not older", next.id);
                let path = self.layer_path(&cur);
                return Err(ChainVerifyError::Mismatch {
                    chain: self.name().into(),
                    id: cur.id,
                    path,
                    reason,
                });
            }
            path.push(next.id);
            cur = next.clone();
        }
        if cur.kind != LayerKind::Base {
            return Err(ChainVerifyError::NoBase {
                chain: self.name().to_string(),
                id: cur.id,
            });
        }
        path.reverse();
        let report = ChainReport {
            chain: self.name().to_string(),
            top: *path.last().unwrap_or(&0),
            path,
            layers,
            points: Vec::new(),
        };
        Ok((report, opened))
    }

    /// [`Chain::verify`], then compose every point up to `upto` and check every data page of
    /// each against the digest stored at capture.
    pub fn verify_deep(&self, upto: Option<u64>) -> Result<ChainReport, ChainVerifyError> {
        let mut report = self.verify(upto)?;
        let ids: Vec<u64> = report.layers.iter().map(|l| l.id).collect();
        for id in ids {
            report.points.push(self.verify_point(id)?);
        }
        Ok(report)
    }

    fn verify_point(&self, id: u64) -> Result<PointReport, ChainVerifyError> {
        let chain = self.name().to_string();
        let image = self.compose(Some(id)).map_err(|e| match e {
            StoreError::Compose(error) => ChainVerifyError::Compose {
                chain: chain.clone(),
                id,
                error,
            },
            other => ChainVerifyError::Store(other),
        })?;
        let mut p = PointReport {
            id,
            path: image.layers().iter().map(|l| l.meta().id).collect(),
            ..PointReport::default()
        };
        let layer_id = |image: &ComposedImage, i: usize| image.layers()[i].meta().id;
        let task = progress::Task::Verify(id);
        progress::start(&chain, task, Some(image.pfn_count()));
        let mut seen = 0u64;
        let result = image.for_each_page(|pfn, state, data| {
            seen += 1;
            if seen % 1024 == 0 {
                progress::advance(&chain, task, 1024);
            }
            match (state, data) {
                (PageState::Data(i), Some(page)) => {
                    let (expected, found) = match image.page_digest(pfn) {
                        Some(d) => (d.value, d.kind.hash(page)),
                        None => (0, page_digest(page)),
                    };
                    if found != expected {
                        return Err(PointError::Digest(
                            pfn,
                            layer_id(&image, i),
                            expected,
                            found,
                        ));
                    }
                    p.data += 1;
                }
                (PageState::Zero, _) => p.zero += 1,
                (PageState::Evicted(_), _) => p.evicted += 1,
                _ => p.unpopulated += 1,
            }
            Ok(())
        });
        progress::finish(&chain, task, image.pfn_count());
        match result {
            Ok(()) => Ok(p),
            Err(PointError::Digest(pfn, layer, expected, found)) => {
                Err(ChainVerifyError::PageDigest {
                    chain,
                    id,
                    pfn,
                    layer,
                    expected,
                    found,
                })
            }
            Err(PointError::Read(source)) => Err(ChainVerifyError::Compose {
                chain,
                id,
                error: ComposeError::Read(source),
            }),
        }
    }

    fn verify_layer(
        &self,
        r: &LayerRecord,
        frames: bool,
    ) -> Result<(LayerReport, LayerReader), ChainVerifyError> {
        let path = self.layer_path(r);
        let layer_err = |error| ChainVerifyError::Layer {
            chain: self.name().to_string(),
            id: r.id,
            error,
        };
        let reader = LayerReader::open_with_key(&path, self.key()).map_err(layer_err)?;
        if frames {
            reader.verify().map_err(layer_err)?;
        }
        let meta = reader.meta();
        let reason = if meta.id != r.id {
            format!("header id {}", meta.id)
        } else if meta.parent != r.parent {
            format!("header parent {:?}, manifest {:?}", meta.parent, r.parent)
        } else if meta.kind != r.kind {
            format!("header kind {:?}, manifest {:?}", meta.kind, r.kind)
        } else if reader.file_bytes() != r.bytes {
            format!("{} bytes, manifest says {}", reader.file_bytes(), r.bytes)
        } else {
            let report = LayerReport {
                id: r.id,
                path,
                kind: r.kind,
                figures: reader.figures(),
            };
            return Ok((report, reader));
        };
        Err(ChainVerifyError::Mismatch {
            chain: self.name().to_string(),
            id: r.id,
            path,
            reason,
        })
    }
}

/// Why a page of a composed point failed the deep check.
enum PointError {
    Read(LayerReadError),
    /// pfn, layer, expected, found.
    Digest(u64, u64, u64, u64),
}

impl From<LayerReadError> for PointError {
    fn from(e: LayerReadError) -> Self {
        PointError::Read(e)
    }
}
