//! Reading a point of a chain as one memory image: the newest copy of each pfn across the
//! layers up to N.
//!
//! [`ComposedImage`] opens layer N and follows parent links back to the base, so any layer of a
//! chain can be composed. At open it builds a table with, per pfn, the newest layer that covers
//! it (two bytes per pfn, in blocks of 4096 pfns made only where one is populated), so
//! [`Image::page_state`] is O(1). A pfn no layer covers is unpopulated: the base covers every
//! populated pfn.

use std::path::{Path, PathBuf};
use std::thread::Scope;

mod feed;
pub use feed::{FeedOptions, PageFeed, PageRef, PageSource};

use crate::hv::{GuestType, Pfn, PfnBitmap, StateBlob};
use crate::layer::blockbits::Ones;
use crate::layer::{
    EvictPolicy, LayerKey, LayerKind, LayerReadError, LayerReader, PageDigest, PageEntry,
};

/// The resolved state of one pfn in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Not populated: restore leaves it unpopulated.
    Unpopulated,
    /// All zeros.
    Zero,
    /// Evicted by a policy: restores as zeros.
    Evicted(EvictPolicy),
    /// Stored data, in the given layer (index into the composed layers, 0 = base).
    Data(usize),
}

/// A memory image plus the VM state to go with it: what a restore consumes.
pub trait Image: Sync {
    /// Size of the pfn space.
    fn pfn_count(&self) -> u64;
    /// PV, PVH or HVM.
    fn guest_type(&self) -> GuestType;
    /// Number of vCPUs.
    fn vcpus(&self) -> u32;
    /// The state of `pfn`.
    fn page_state(&self, pfn: Pfn) -> PageState;
    /// Read `pfn` into `buf` (4096 bytes); zeros for anything but data.
    fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError>;
    /// CPU and platform state of the top layer.
    fn state_blobs(&self) -> &[StateBlob];
    /// The domain config blob of the top layer.
    fn config(&self) -> &[u8];
    /// A source of the data pages in ascending pfn order, decoding with workers in `scope`;
    /// None: read them one by one with [`Image::read_page`] (see [`ReadPages`]).
    fn pages<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Option<Box<dyn PageSource + 'env>> {
        let _ = scope;
        None
    }
    /// The populated pfns as a bitmap, if the image keeps one (then a walk over a sparse pfn
    /// space skips the holes a word at a time); None: ask [`Image::page_state`] of each pfn.
    fn populated(&self) -> Option<&PfnBitmap> {
        None
    }
}

/// The fallback [`PageSource`]: each page read through [`Image::read_page`] into its own buffer.
pub struct ReadPages<'a>(pub &'a dyn Image);

impl PageSource for ReadPages<'_> {
    fn page(&mut self, pfn: Pfn) -> Result<PageRef, LayerReadError> {
        let mut page = vec![0u8; crate::hv::PAGE_SIZE];
        self.0.read_page(pfn, &mut page)?;
        Ok(PageRef::owned(page))
    }
}

/// Errors while composing layers.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A layer could not be read.
    #[error(transparent)]
    Read(#[from] LayerReadError),
    /// A layer's parent is not available.
    #[error("layer {path} needs parent layer {parent}, which is missing: re-take a full checkpoint with --full")]
    MissingParent {
        /// The child layer.
        path: PathBuf,
        /// The missing parent's id.
        parent: u64,
    },
    /// Two layers do not link up (wrong parent, other domain, or a loop).
    #[error("layer {path} does not continue layer {below}: {reason}")]
    BadLink {
        /// The upper layer.
        path: PathBuf,
        /// The lower layer's id.
        below: u64,
        /// What disagrees.
        reason: String,
    },
    /// The bottom layer is not a base.
    #[error("layer {path} is the bottom of the chain but is not a base layer")]
    NoBase {
        /// The bottom layer.
        path: PathBuf,
    },
    /// No layers given.
    #[error("nothing to compose: the chain has no layers")]
    Empty,
    /// More layers than the pfn table can name.
    #[error(
        "{count} layers in one chain exceed the limit of {MAX_LAYERS}; take a new base with --full"
    )]
    TooMany {
        /// The number of layers.
        count: usize,
    },
}

/// The most layers one image can compose.
pub const MAX_LAYERS: usize = u16::MAX as usize - 1;
const NONE: u16 = u16::MAX;

/// Layers 0..=N of a chain, opened and linked but not composed: what a few lookups need (the
/// spot check of an incremental samples 64 pages), without the owner table a
/// [`ComposedImage`] builds with a pass over every pfn (a million for a PVH guest, whose pfns
/// reach 4 GiB). Each lookup looks from the top layer down.
pub struct LayerStack {
    layers: Vec<LayerReader>,
}

impl LayerStack {
    /// Open layer `top` and its ancestors (see [`ComposedImage::open_with_key`]).
    pub fn open_with_key(
        top: &Path,
        key: Option<&LayerKey>,
        mut layer_path: impl FnMut(u64) -> Option<PathBuf>,
    ) -> Result<Self, ComposeError> {
        let mut layers = vec![LayerReader::open_with_key(top, key)?];
        while let Some(parent) = layers.last().and_then(|l| l.meta().parent) {
            if layers.len() > MAX_LAYERS {
                return Err(ComposeError::TooMany {
                    count: layers.len(),
                });
            }
            let child = layers
                .last()
                .map(|l| l.path().to_path_buf())
                .unwrap_or_default();
            let path = layer_path(parent).ok_or(ComposeError::MissingParent {
                path: child,
                parent,
            })?;
            layers.push(LayerReader::open_with_key(&path, key)?);
        }
        layers.reverse();
        check_links(&layers)?;
        Ok(LayerStack { layers })
    }

    /// Size of the pfn space (the top layer's).
    pub fn pfn_count(&self) -> u64 {
        self.layers.last().map_or(0, |l| l.meta().pfn_count)
    }

    /// The index of the newest layer that covers `pfn`, if any.
    fn owner(&self, pfn: Pfn) -> Option<usize> {
        self.layers.iter().rposition(|l| l.entry(pfn).is_some())
    }

    /// The state of `pfn` (as [`Image::page_state`]).
    pub fn page_state(&self, pfn: Pfn) -> PageState {
        state_in(&self.layers, self.owner(pfn), pfn)
    }

    /// The recorded digest of `pfn`'s page when it is stored data (as
    /// [`ComposedImage::page_digest`]).
    pub fn page_digest(&self, pfn: Pfn) -> Option<PageDigest> {
        self.layers[self.owner(pfn)?].page_digest(pfn)
    }
}

/// The state of `pfn` as layer `owner` of `layers` records it (None: no layer covers it).
fn state_in(layers: &[LayerReader], owner: Option<usize>, pfn: Pfn) -> PageState {
    let Some(i) = owner else {
        return PageState::Unpopulated;
    };
    match layers[i].entry(pfn) {
        Some(PageEntry::Data) => PageState::Data(i),
        Some(PageEntry::Zero) => PageState::Zero,
        Some(PageEntry::Evicted(p)) => PageState::Evicted(p),
        Some(PageEntry::Unpopulated) | None => PageState::Unpopulated,
    }
}

/// Per populated pfn, the newest layer covering it, in blocks of [`OWNER_BLOCK`] pfns that
/// exist only where a layer records a pfn populated: the holes of a sparse pfn space cost
/// nothing. A pfn without an owner is unpopulated.
struct Owners {
    len: usize,
    blocks: Vec<Option<Box<[u16]>>>,
}

/// Pfns per block of [`Owners`] (a multiple of 64: filled a bitmap word at a time).
const OWNER_BLOCK: usize = 4096;

impl Owners {
    fn new(len: usize) -> Self {
        let mut blocks = Vec::new();
        blocks.resize_with(len.div_ceil(OWNER_BLOCK), || None);
        Owners { len, blocks }
    }

    fn get(&self, pfn: Pfn) -> Option<usize> {
        let i = usize::try_from(pfn).ok().filter(|&i| i < self.len)?;
        match self.blocks[i / OWNER_BLOCK].as_deref()?[i % OWNER_BLOCK] {
            NONE => None,
            o => Some(o as usize),
        }
    }

    /// Record layer `layer` as the owner of every pfn `index` covers (below the table's end)
    /// and records populated, and clear the owner of those it records unpopulated: a bitmap
    /// word at a time, and a block is made only for a populated pfn (a base records every
    /// pfn of a PVH guest's mostly-hole space unpopulated).
    fn mark(&mut self, index: &crate::layer::LayerIndex, layer: u16) {
        for (w, covered, unpop) in index.covered_words(self.len) {
            let (b, at) = (w * 64 / OWNER_BLOCK, w * 64 % OWNER_BLOCK);
            let populated = covered & !unpop;
            let block = match &mut self.blocks[b] {
                Some(block) => block,
                None if populated == 0 => continue,
                slot @ None => slot.insert(vec![NONE; OWNER_BLOCK].into()),
            };
            if populated == u64::MAX {
                block[at..at + 64].fill(layer);
                continue;
            }
            for k in Ones(populated) {
                block[at + k] = layer;
            }
            for k in Ones(unpop) {
                block[at + k] = NONE;
            }
        }
    }
}

/// Layers 0..=N of a chain, composed.
pub struct ComposedImage {
    layers: Vec<LayerReader>,
    owner: Owners,
    /// The pfns whose state is not [`PageState::Unpopulated`].
    populated: PfnBitmap,
}

impl ComposedImage {
    /// Open layer `top` and its ancestors; `layer_path` maps a layer id to its file (None if
    /// the chain does not have it).
    pub fn open(
        top: &Path,
        layer_path: impl FnMut(u64) -> Option<PathBuf>,
    ) -> Result<Self, ComposeError> {
        Self::open_with_key(top, None, layer_path)
    }

    /// [`ComposedImage::open`] with the key of encrypted layers.
    pub fn open_with_key(
        top: &Path,
        key: Option<&LayerKey>,
        layer_path: impl FnMut(u64) -> Option<PathBuf>,
    ) -> Result<Self, ComposeError> {
        ComposedImage::from_layers(LayerStack::open_with_key(top, key, layer_path)?.layers)
    }

    /// Compose already opened layers, base first. Checks that each layer's parent is the one
    /// below it, that all are of one domain, and that the bottom one is a base.
    pub fn from_layers(layers: Vec<LayerReader>) -> Result<Self, ComposeError> {
        check_links(&layers)?;
        let top = layers.last().ok_or(ComposeError::Empty)?;
        let pfn_count = top.meta().pfn_count as usize;
        let mut owner = Owners::new(pfn_count);
        let mut populated = PfnBitmap::repeat(false, pfn_count);
        for (i, layer) in layers.iter().enumerate() {
            owner.mark(layer.index(), i as u16);
            layer.index().overlay_populated(&mut populated);
        }
        Ok(ComposedImage {
            layers,
            owner,
            populated,
        })
    }

    /// The composed layers, base first.
    pub fn layers(&self) -> &[LayerReader] {
        &self.layers
    }

    /// The top layer (layer N).
    pub fn top(&self) -> &LayerReader {
        &self.layers[self.layers.len() - 1]
    }

    /// The index (into [`Self::layers`]) of the layer `pfn` is read from; None where no
    /// layer covers it or the newest that does records it unpopulated.
    pub fn owner(&self, pfn: Pfn) -> Option<usize> {
        self.owner.get(pfn)
    }

    /// The recorded digest of `pfn`'s page when it is stored data, with the hash of the layer
    /// that holds it; lets a resync compare pages without decoding frames.
    pub fn page_digest(&self, pfn: Pfn) -> Option<PageDigest> {
        self.layers[self.owner(pfn)?].page_digest(pfn)
    }

    /// Visit every pfn of the image exactly once, decoding each needed frame once: first every
    /// pfn that is not data (in pfn order, with `None`), then the data pages layer by layer in
    /// the order they are stored (with the page). Stops at the first error `f` returns.
    pub fn for_each_page<E: From<LayerReadError>>(
        &self,
        mut f: impl FnMut(Pfn, PageState, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        for pfn in 0..self.owner.len as Pfn {
            let state = self.page_state(pfn);
            if !matches!(state, PageState::Data(_)) {
                f(pfn, state, None)?;
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer.for_each_stored_page(
                |pfn| self.owner(pfn) == Some(i),
                |pfn, page| f(pfn, PageState::Data(i), Some(page)),
            )?;
        }
        Ok(())
    }
}

fn check_links(layers: &[LayerReader]) -> Result<(), ComposeError> {
    if layers.len() > MAX_LAYERS {
        return Err(ComposeError::TooMany {
            count: layers.len(),
        });
    }
    let base = layers.first().ok_or(ComposeError::Empty)?;
    if base.meta().parent.is_some() || base.meta().kind != LayerKind::Base {
        return Err(ComposeError::NoBase {
            path: base.path().to_path_buf(),
        });
    }
    for pair in layers.windows(2) {
        let (below, above) = (pair[0].meta(), pair[1].meta());
        let reason = if above.parent != Some(below.id) {
            format!("its parent is {:?}", above.parent)
        } else if above.id <= below.id {
            format!("its id {} is not above {}", above.id, below.id)
        } else if above.domain.uuid != below.domain.uuid {
            format!("domain {} is not {}", above.domain.uuid, below.domain.uuid)
        } else {
            continue;
        };
        return Err(ComposeError::BadLink {
            path: pair[1].path().to_path_buf(),
            below: below.id,
            reason,
        });
    }
    Ok(())
}

impl Image for ComposedImage {
    fn pfn_count(&self) -> u64 {
        self.owner.len as u64
    }
    fn guest_type(&self) -> GuestType {
        self.top().meta().guest_type
    }
    fn vcpus(&self) -> u32 {
        self.top().meta().vcpus
    }
    fn page_state(&self, pfn: Pfn) -> PageState {
        state_in(&self.layers, self.owner(pfn), pfn)
    }
    fn populated(&self) -> Option<&PfnBitmap> {
        Some(&self.populated)
    }
    fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError> {
        match self.owner(pfn) {
            Some(i) => self.layers[i].read_page(pfn, buf),
            None => self.top().read_page(Pfn::MAX, buf),
        }
    }
    fn state_blobs(&self) -> &[StateBlob] {
        self.top().state()
    }
    fn config(&self) -> &[u8] {
        self.top().config()
    }
    fn pages<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
    ) -> Option<Box<dyn PageSource + 'env>> {
        Some(Box::new(self.feed(scope, FeedOptions::default())))
    }
}
