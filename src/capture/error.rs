//! Errors of a checkpoint.

use crate::hv::HvError;
use crate::layer::LayerWriteError;
use crate::store::StoreError;

/// Errors of a checkpoint. Each names the domain; none leaves the domain paused.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A hypervisor operation failed.
    #[error(transparent)]
    Hv(#[from] HvError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the layer failed after the domain resumed.
    #[error("domain {domain}: writing the layer failed: {source}; the domain is running, the chain is unchanged and this run's dirty pages are kept for the next checkpoint")]
    Write {
        /// Domain name.
        domain: String,
        /// The cause.
        source: LayerWriteError,
    },
    /// SIGINT/SIGTERM arrived.
    #[error(
        "domain {domain}: checkpoint interrupted; the domain is running and the chain is unchanged"
    )]
    Interrupted {
        /// Domain name.
        domain: String,
    },
    /// A frame that Xen reports populated could not be mapped.
    #[error("domain {domain}: cannot map pfn {pfn:#x}: {source}")]
    Map {
        /// Domain name.
        domain: String,
        /// The frame.
        pfn: u64,
        /// The errno of the mapping.
        source: std::io::Error,
    },
    /// The chain was taken of another domain.
    #[error("chain {chain} belongs to domain uuid {chain_uuid}, but domain {domain} has uuid {uuid}: use another --store, or start the chain again with --full")]
    ForeignChain {
        /// Chain name.
        chain: String,
        /// uuid recorded in the chain.
        chain_uuid: String,
        /// Domain name.
        domain: String,
        /// uuid of the domain now.
        uuid: String,
    },
    /// Taking a disk snapshot failed (the domain was resumed).
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    /// Another member of the group failed, so this member's checkpoint was abandoned.
    #[error("domain {domain}: group checkpoint abandoned: {reason}; the domain is running and its chain is unchanged")]
    GroupAborted {
        /// Domain name.
        domain: String,
        /// What happened elsewhere in the group.
        reason: String,
    },
    /// Saving this run's dirty bits failed too: the next run must resync.
    #[error("domain {domain}: {first}; also could not keep this run's dirty pages ({second}), so the next checkpoint will be a resync")]
    Unrecoverable {
        /// Domain name.
        domain: String,
        /// The original failure.
        first: Box<CaptureError>,
        /// Why the bits could not be kept.
        second: String,
    },
}
