//! Which layer a run takes: base, incremental, or resync when tracking was lost.

use super::pending::{self, Pending};
use super::{CaptureError, CaptureOptions};
use crate::compose::{ComposedImage, Image, PageState};
use crate::hv::{Checkpointable, DomainInfo, Pfn, PfnBitmap};
use crate::layer::pipeline::Baseline;
use crate::layer::LayerKind;
use crate::store::{Chain, Manifest};

/// The layer a run takes.
#[derive(Debug)]
pub enum Plan {
    /// A full layer: every populated page.
    Base {
        /// Layer id.
        id: u64,
    },
    /// Pages dirtied since `parent`, plus bits kept from a failed run.
    Incremental {
        /// Layer id.
        id: u64,
        /// Parent layer.
        parent: u64,
        /// Bits a failed run fetched but did not store.
        pending: Option<PfnBitmap>,
    },
    /// Tracking was lost: read all memory, store what differs from the chain at `parent`.
    Resync {
        /// Layer id.
        id: u64,
        /// Parent layer.
        parent: u64,
        /// Why tracking cannot be trusted.
        reason: String,
    },
}

impl Plan {
    /// The new layer's id.
    pub fn next_id(&self) -> u64 {
        match self {
            Plan::Base { id } | Plan::Incremental { id, .. } | Plan::Resync { id, .. } => *id,
        }
    }
    /// The new layer's parent.
    pub fn parent(&self) -> Option<u64> {
        match self {
            Plan::Base { .. } => None,
            Plan::Incremental { parent, .. } | Plan::Resync { parent, .. } => Some(*parent),
        }
    }
    /// The new layer's kind.
    pub fn kind(&self) -> LayerKind {
        match self {
            Plan::Base { .. } => LayerKind::Base,
            Plan::Incremental { .. } => LayerKind::Incremental,
            Plan::Resync { .. } => LayerKind::Resync,
        }
    }
    /// Whether round 0 reads every pfn.
    pub fn full_scan(&self) -> bool {
        !matches!(self, Plan::Incremental { .. })
    }
    /// Why the layer is a resync.
    pub fn resync_reason(&self) -> Option<String> {
        match self {
            Plan::Resync { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }
    /// Remarks for the layer's summary.
    pub fn notes(&self) -> Vec<String> {
        match self {
            Plan::Resync { reason, .. } => vec![format!("resync: {reason}")],
            Plan::Incremental {
                pending: Some(p), ..
            } => {
                vec![format!(
                    "{} dirty pages kept from a failed run were included",
                    p.count_ones()
                )]
            }
            _ => Vec::new(),
        }
    }
    /// The content a resync compares against.
    pub fn baseline(&self, chain: &Chain) -> Result<Option<Box<dyn Baseline>>, CaptureError> {
        match self {
            Plan::Resync { parent, .. } => {
                Ok(Some(Box::new(ChainBaseline(chain.compose(Some(*parent))?))))
            }
            _ => Ok(None),
        }
    }
}

/// Decide the plan for this run.
pub fn plan<D: Checkpointable + ?Sized>(
    dom: &D,
    chain: &Chain,
    info: &DomainInfo,
    manifest: &Manifest,
    opts: &CaptureOptions,
) -> Result<Plan, CaptureError> {
    let last = manifest.layers.last();
    let id = last.map_or(1, |l| l.id + 1);
    if let Some(d) = &manifest.domain {
        if d.uuid != info.identity.uuid && !opts.full && last.is_some() {
            return Err(CaptureError::ForeignChain {
                chain: chain.name().to_string(),
                chain_uuid: d.uuid.clone(),
                domain: info.identity.name.clone(),
                uuid: info.identity.uuid.clone(),
            });
        }
    }
    let Some(last) = last else {
        return Ok(Plan::Base { id });
    };
    if opts.full {
        return Ok(Plan::Base { id });
    }
    let parent = last.id;
    if let Some(reason) = tracking_lost(dom, manifest, info, parent)? {
        return Ok(Plan::Resync { id, parent, reason });
    }
    Ok(match pending::load(chain.dir(), info.pfn_count) {
        Pending::None => Plan::Incremental {
            id,
            parent,
            pending: None,
        },
        Pending::Bits(bits) => Plan::Incremental {
            id,
            parent,
            pending: Some(bits),
        },
        Pending::Unusable(why) => Plan::Resync {
            id,
            parent,
            reason: why,
        },
    })
}

/// Why the dirty bits since layer `head` cannot be trusted, if they cannot.
fn tracking_lost<D: Checkpointable + ?Sized>(
    dom: &D,
    manifest: &Manifest,
    info: &DomainInfo,
    head: u64,
) -> Result<Option<String>, CaptureError> {
    let Some(t) = &manifest.tracking else {
        return Ok(Some("tracking was not armed after the last layer".into()));
    };
    let now = &info.identity;
    Ok(if !t.armed {
        Some("tracking was turned off (xckpt untrack)".into())
    } else if t.in_flight {
        Some("a previous checkpoint was killed after fetching dirty pages it did not keep".into())
    } else if t.identity.domid != now.domid || t.identity.instance != now.instance {
        Some(format!(
            "the domain was re-created or migrated since layer {} (domid {} -> {})",
            t.since_layer, t.identity.domid, now.domid
        ))
    } else if t.since_layer != head {
        Some(format!(
            "tracking refers to layer {}, but the chain's head is layer {head}",
            t.since_layer
        ))
    } else if !dom.logdirty_enabled()? {
        Some(format!(
            "log-dirty was turned off since layer {head} (another tool, a migration or a save)"
        ))
    } else {
        None
    })
}

/// A composed chain as the content a resync compares against.
struct ChainBaseline(ComposedImage);

impl Baseline for ChainBaseline {
    fn same(&self, pfn: Pfn, data: Option<&[u8]>) -> bool {
        if pfn >= self.0.pfn_count() {
            return false;
        }
        match (self.0.page_state(pfn), data) {
            (PageState::Unpopulated, None) => true,
            (PageState::Unpopulated, Some(_)) | (_, None) => false,
            (PageState::Zero | PageState::Evicted(_), Some(d)) => d.iter().all(|&b| b == 0),
            // The digest stored at capture decides without decoding the chain's frame.
            (PageState::Data(_), Some(d)) => self.0.page_digest(pfn).is_some_and(|r| r.matches(d)),
        }
    }
}
