//! Restoring a point of a chain, or a group checkpoint, into running domains through stock
//! `xl restore`: the top of the data path (compose -> stream -> restore).
//!
//! A restore opens the point ([`open_point`]: every layer's header, sections and index are
//! checked against the manifest, then the layers are composed), clones the disks the point's
//! top layer snapshotted ([`disk_clones`]), and streams the image into `xl restore`
//! ([`restore_point`]). The page data is checked while it is streamed: each needed frame is
//! decoded once, by worker threads, and a frame or page that fails its check stops the stream
//! before the damaged page is written, so `xl restore` fails and leaves no domain.
//! [`restore_group`] restores every member of a group checkpoint paused, destroys those already
//! made if one fails, and unpauses them all together.
//!
//! `xl` is reached through [`XlTool`] ([`Xl`] runs the real command), so all of this runs
//! on the sim with a consumer that parses the stream instead.

pub mod fetch;
mod group;
mod memory;
mod xl;

use std::collections::BTreeMap;
use std::error::Error as StdError;

use crate::compose::ComposedImage;
use crate::disk::{DiskError, DiskSnapshot};
use crate::layer::LayerKey;
use crate::store::{ChainVerifyError, Store, StoreError};
use crate::stream::{
    write_save_file, write_save_file_filled, GuestFill, StreamOptions, StreamStats,
    StreamWriteError,
};

pub use group::{restore_group, restore_group_across, GroupRestored};
pub use memory::{pipe_drained, XenMemory};
pub use xl::{size_pipe, Xl, XlTool};

/// Errors of a restore, each naming the chain or group and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store or a chain could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain has no such layer.
    #[error("chain {chain} has no layer {id} (layers: {have}): see `xckpt list {chain}`")]
    NoLayer {
        /// The chain.
        chain: String,
        /// The layer asked for.
        id: u64,
        /// The layers it has.
        have: String,
    },
    /// The chain has no layers at all.
    #[error("chain {chain} has no layers: take one with `xckpt checkpoint {chain}`")]
    NoLayers {
        /// The chain.
        chain: String,
    },
    /// A layer of the point fails its check (header, sections, index, links).
    #[error(transparent)]
    Check(#[from] ChainVerifyError),
    /// The key of an encrypted chain could not be had.
    #[error("the key of chain {chain} (--encrypt)")]
    Key {
        /// The chain.
        chain: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The disk snapshots could not be cloned.
    #[error("restoring the disks of {chain}")]
    Disks {
        /// The chain.
        chain: String,
        /// Why.
        #[source]
        source: Box<DiskError>,
    },
    /// A disk on another host could not be fetched (or has no source).
    #[error("disk {vdev} of {chain}: {reason}; nothing was restored")]
    DiskFetch {
        /// The chain.
        chain: String,
        /// The guest device.
        vdev: String,
        /// Why.
        reason: String,
    },
    /// `xl` could not be run.
    #[error("cannot run {xl:?}: is this a Xen dom0 with xen-utils installed?")]
    Spawn {
        /// The command.
        xl: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stream could not be written (a damaged frame or page, or `xl restore` went away):
    /// `xl restore` got a cut stream and made no domain.
    #[error("streaming {what} into xl restore")]
    Stream {
        /// The point (`chain@id`).
        what: String,
        /// Why.
        #[source]
        source: Box<StreamWriteError>,
    },
    /// A frame or page of a layer failed its check while it was streamed: `xl restore` got a
    /// stream cut before that page.
    #[error(
        "chain {chain}: layer {layer} is damaged; the stream of {what} was stopped before the \
         damaged page: use a point below layer {layer} or re-take a full checkpoint with \
         `xckpt checkpoint --full` (`xckpt verify {chain}` names all damage)"
    )]
    Damaged {
        /// The chain.
        chain: String,
        /// The damaged layer.
        layer: u64,
        /// The point (`chain@id`).
        what: String,
        /// What the check found.
        #[source]
        source: Box<StreamWriteError>,
    },
    /// Waiting for `xl` failed.
    #[error("waiting for xl {verb} of {what}")]
    Wait {
        /// The verb.
        verb: &'static str,
        /// The point or domain.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `xl restore` exited with an error.
    #[error("xl restore of {what} failed ({status}); see its messages above and /var/log/xen/")]
    XlFailed {
        /// The point (`chain@id`).
        what: String,
        /// Its exit status.
        status: String,
    },
    /// `xl unpause` failed for a restored domain.
    #[error("`xl unpause {name}` failed ({status}); run it by hand")]
    Unpause {
        /// The domain.
        name: String,
        /// Its exit status.
        status: String,
    },
    /// The group has no such checkpoint.
    #[error("group {group} has no checkpoint {id} (it has {have})")]
    NoGroupPoint {
        /// The group.
        group: String,
        /// The id asked for.
        id: u64,
        /// The ids it has.
        have: String,
    },
    /// The group has no checkpoints.
    #[error("group {group} has no checkpoints yet")]
    NoGroupPoints {
        /// The group.
        group: String,
    },
    /// A member's layer is gone: nothing was created.
    #[error(
        "group {group}@{id}: member {member}'s layer {layer} is no longer in its chain (pruned \
         or merged away); nothing was created. Restorable checkpoints of {group}: {restorable}"
    )]
    MemberGone {
        /// The group.
        group: String,
        /// The group checkpoint.
        id: u64,
        /// The member.
        member: String,
        /// Its layer.
        layer: u64,
        /// The checkpoints that can still be restored.
        restorable: String,
    },
    /// A member failed; the members restored before it were destroyed.
    #[error(
        "group {group}@{id}: restoring member {member}; the members restored before it were \
         destroyed"
    )]
    Member {
        /// The group.
        group: String,
        /// The group checkpoint.
        id: u64,
        /// The member.
        member: String,
        /// Why.
        #[source]
        source: Box<RestoreError>,
    },
    /// Another host of a group restore failed (or could not be reached); this host's
    /// members were destroyed.
    #[error("group {group}@{id}: {reason}; this host's members were destroyed, none runs")]
    GroupAborted {
        /// The group.
        group: String,
        /// The group checkpoint.
        id: u64,
        /// What happened, naming the host.
        reason: String,
    },
    /// The hosts of a group restore could not meet.
    #[error(transparent)]
    Rendezvous(#[from] crate::group::rendezvous::RendezvousError),
    /// The members run but a disk could not be made local (its domain still reads the
    /// host that serves it, which keeps serving).
    #[error("group {group}@{id}: the members run, but {reason}")]
    GroupDisks {
        /// The group.
        group: String,
        /// The group checkpoint.
        id: u64,
        /// Which disk and why.
        reason: String,
    },
    /// Every member exists but unpausing them failed.
    #[error("group {group}@{id}: the members were restored but not all run")]
    GroupUnpause {
        /// The group.
        group: String,
        /// The group checkpoint.
        id: u64,
        /// Why.
        #[source]
        source: Box<RestoreError>,
    },
}

/// The key of a chain, by its name (None: the chain is not encrypted).
pub type KeyOf<'a> =
    dyn FnMut(&str) -> Result<Option<LayerKey>, Box<dyn StdError + Send + Sync>> + 'a;

/// An opened point: the composed image of layer `id` of `chain`.
pub struct Point {
    /// The chain.
    pub chain: String,
    /// The layer.
    pub id: u64,
    /// The image (all layers from the base up to `id`).
    pub image: ComposedImage,
}

impl Point {
    /// `chain@id`.
    pub fn what(&self) -> String {
        format!("{}@{}", self.chain, self.id)
    }
}

/// Open layer `layer` of `chain` (the newest if None): resolve the id, check every layer up to
/// it (headers, sections, index, links to a base; not the page data, which the stream checks as
/// it decodes), and compose.
pub fn open_point(
    store: &Store,
    chain: &str,
    layer: Option<u64>,
    key: Option<LayerKey>,
) -> Result<Point, RestoreError> {
    let c = store.chain(chain)?.with_key(key);
    let m = c.manifest()?;
    let id = match layer {
        Some(id) if m.layers.iter().any(|l| l.id == id) => id,
        Some(id) => {
            let have: Vec<String> = m.layers.iter().map(|l| l.id.to_string()).collect();
            return Err(RestoreError::NoLayer {
                chain: chain.to_string(),
                id,
                have: have.join(", "),
            });
        }
        None => m
            .layers
            .last()
            .map(|l| l.id)
            .ok_or(RestoreError::NoLayers {
                chain: chain.to_string(),
            })?,
    };
    Ok(Point {
        chain: chain.to_string(),
        id,
        image: c.compose_checked(Some(id))?,
    })
}

/// Writable clones of the point's disk snapshots, for its restore (vdev -> path); a snapshot
/// held by another host is refused (only a group restore across hosts fetches it).
pub fn disk_clones(
    disks: &[DiskSnapshot],
    chain: &str,
) -> Result<BTreeMap<String, String>, RestoreError> {
    fetch::member_disks(disks, chain, None).map(|(paths, _)| paths)
}

/// How to restore one point.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore under this name (and a fresh uuid).
    pub rename: Option<String>,
    /// Leave the domain paused.
    pub paused: bool,
}

/// A restored point.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The chain.
    pub chain: String,
    /// The layer.
    pub id: u64,
    /// The domain's name.
    pub name: String,
    /// The disks cloned for it (vdev -> path).
    pub disks: BTreeMap<String, String>,
    /// What was streamed.
    pub stats: StreamStats,
}

/// The options of a stream this host writes into its own `xl restore`: the libxc domain header
/// names the Xen it runs on (`xl restore` logs it as "domain from Xen 4.NN"), where known.
fn host_stream_options(
    rename: Option<String>,
    disk_paths: BTreeMap<String, String>,
) -> StreamOptions {
    let mut opts = StreamOptions {
        rename,
        disk_paths,
        ..Default::default()
    };
    if let Some(v) = xen_sys::version::hypervisor_version() {
        opts.xen_version = (v.major, v.minor);
    }
    opts
}

/// `xckpt restore CHAIN[@N]`: open the point, clone its disks, stream it into `xl restore`.
pub fn restore_point(
    store: &Store,
    chain: &str,
    layer: Option<u64>,
    key: Option<LayerKey>,
    opts: &RestoreOptions,
    xl: &dyn XlTool,
) -> Result<Restored, RestoreError> {
    let clock = crate::usage::PhaseClock::start();
    let point = open_point(store, chain, layer, key)?;
    let open = clock.read();
    let disks = disk_clones(&point.image.top().meta().disks, chain)?;
    let stream = host_stream_options(opts.rename.clone(), disks.clone());
    let mut stats = stream_into_xl(&point, &stream, opts.paused, xl)?;
    (stats.timings.open_ms, stats.timings.usage.open) = open;
    Ok(Restored {
        chain: chain.to_string(),
        id: point.id,
        name: opts.rename.clone().unwrap_or_else(|| chain.to_string()),
        disks,
        stats,
    })
}

/// Stream `point` into `xl restore` (paused if asked).
pub fn stream_into_xl(
    point: &Point,
    opts: &StreamOptions,
    paused: bool,
    xl: &dyn XlTool,
) -> Result<StreamStats, RestoreError> {
    let what = point.what();
    let r = xl.restore(paused, &what, &mut |out, fill| {
        write_save_file_filled(&point.image, opts, &mut &mut *out, fill)
    });
    name_damage(point, r)
}

/// Write `point` as an `xl` save file into `out` (`xckpt export`).
pub fn write_point(
    point: &Point,
    opts: &StreamOptions,
    out: &mut impl std::io::Write,
) -> Result<StreamStats, RestoreError> {
    let r = write_save_file(&point.image, opts, out).map_err(|source| RestoreError::Stream {
        what: point.what(),
        source: Box::new(source),
    });
    name_damage(point, r)
}

/// A page that failed its check while streaming, named by its layer.
fn name_damage(
    point: &Point,
    r: Result<StreamStats, RestoreError>,
) -> Result<StreamStats, RestoreError> {
    match r {
        Err(RestoreError::Stream { what, source }) => {
            let layer = match *source {
                StreamWriteError::ReadPage { pfn, .. } => point.image.owner(pfn),
                _ => None,
            }
            .map(|i| point.image.layers()[i].meta().id);
            Err(match layer {
                Some(layer) => RestoreError::Damaged {
                    chain: point.chain.clone(),
                    layer,
                    what,
                    source,
                },
                None => RestoreError::Stream { what, source },
            })
        }
        r => r,
    }
}

/// The writer of a stream, as [`XlTool::restore`] calls it: the stream goes into the writer;
/// with a [`GuestFill`], an HVM or PVH guest's memory is written into the domain instead.
pub type WriteStream<'a> = dyn FnMut(
        &mut dyn std::io::Write,
        Option<&mut dyn GuestFill>,
    ) -> Result<StreamStats, StreamWriteError>
    + 'a;
