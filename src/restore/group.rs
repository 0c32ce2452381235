//! `restore --group NAME[@N]`: every member created paused, the ones made so far destroyed if
//! one fails, then all unpaused together.

use std::path::Path;

use super::{disk_clones, open_point, stream_into_xl, KeyOf, RestoreError, Restored, XlTool};
use crate::group::rendezvous::{Rendezvous, TcpCoordinator, Welcome};
use crate::group::{Coordinator, GroupDir, GroupPoint, LocalCoordinator, Phase};
use crate::store::Store;

/// A restored group checkpoint.
#[derive(Debug, Clone)]
pub struct GroupRestored {
    /// The group.
    pub group: String,
    /// The group checkpoint.
    pub id: u64,
    /// The members, in the group's order (running).
    pub members: Vec<Restored>,
}

/// Restore group checkpoint `id` of `group` (the newest if None) from the store at `root`.
/// Refuses before creating anything if a member's layer is gone; if a member fails, destroys
/// the members made before it.
pub fn restore_group(
    root: &Path,
    group: &str,
    id: Option<u64>,
    key_of: &mut KeyOf<'_>,
    xl: &dyn XlTool,
) -> Result<GroupRestored, RestoreError> {
    let store = Store::open(root)?;
    let point = group_point(&store, root, group, id)?;
    let all: Vec<String> = point.members.iter().map(|m| m.chain.clone()).collect();
    restore_share(
        &store,
        group,
        &point,
        &all,
        key_of,
        xl,
        &mut LocalCoordinator,
    )
}

/// Restore group checkpoint `id` of `group` across the hosts of `r`, from a store every host
/// reaches at `root`: the hub places each member on the host with the member's slot (modulo
/// the number of hosts), every host creates its members paused, and once every host has, all
/// are unpaused; if any host fails, every host destroys what it made.
pub fn restore_group_across(
    root: &Path,
    group: &str,
    id: Option<u64>,
    key_of: &mut KeyOf<'_>,
    xl: &dyn XlTool,
    r: &Rendezvous,
) -> Result<GroupRestored, RestoreError> {
    let store = Store::open(root)?;
    let mut coord = if r.hub {
        TcpCoordinator::listen(r, group)?.meet(Vec::new(), |_| {
            let point = group_point(&store, root, group, id).map_err(|e| e.to_string())?;
            Ok(Welcome {
                id: point.id,
                assign: place(&point, r.size),
            })
        })?
    } else {
        TcpCoordinator::join(r, group, Vec::new())?
    };
    let id = coord.welcome().id;
    let mine = coord.assigned(r.slot).to_vec();
    let point = match group_point(&store, root, group, Some(id)) {
        Ok(p) => p,
        Err(e) => {
            let _ = coord.barrier(Phase::Restored, false);
            return Err(e);
        }
    };
    restore_share(&store, group, &point, &mine, key_of, xl, &mut coord)
}

/// Per slot, the chains its host restores: each member where its slot says (a group taken on
/// one host: slot 0), modulo `size` hosts.
fn place(point: &GroupPoint, size: u32) -> Vec<Vec<String>> {
    let mut by_slot = vec![Vec::new(); size.max(1) as usize];
    for m in &point.members {
        by_slot[(m.slot.unwrap_or(0) % size.max(1)) as usize].push(m.chain.clone());
    }
    by_slot
}

/// Restore the members of `point` named in `chains`, paused; pass barrier `Restored`; unpause
/// them if every host passed, else destroy them.
fn restore_share(
    store: &Store,
    group: &str,
    point: &GroupPoint,
    chains: &[String],
    key_of: &mut KeyOf<'_>,
    xl: &dyn XlTool,
    coord: &mut dyn Coordinator,
) -> Result<GroupRestored, RestoreError> {
    let mut made: Vec<Restored> = Vec::new();
    let mut failed = None;
    for member in point.members.iter().filter(|m| chains.contains(&m.chain)) {
        match restore_member(store, &member.chain, member.layer, key_of, xl) {
            Ok(r) => made.push(r),
            Err(source) => {
                failed = Some(RestoreError::Member {
                    group: group.to_string(),
                    id: point.id,
                    member: member.chain.clone(),
                    source: Box::new(source),
                });
                break;
            }
        }
    }
    let go = coord.barrier(Phase::Restored, failed.is_none());
    if failed.is_some() || !matches!(go, Ok(true)) {
        for r in &made {
            xl.destroy(&r.name);
        }
        return Err(failed.unwrap_or_else(|| RestoreError::GroupAborted {
            group: group.to_string(),
            id: point.id,
            reason: match go {
                Err(e) => e.to_string(),
                _ => coord
                    .why_failed()
                    .unwrap_or_else(|| "another host failed".into()),
            },
        }));
    }
    // Every member exists, paused: let them all run at once.
    let names: Vec<String> = made.iter().map(|r| r.name.clone()).collect();
    xl.unpause(&names)
        .map_err(|source| RestoreError::GroupUnpause {
            group: group.to_string(),
            id: point.id,
            source: Box::new(source),
        })?;
    Ok(GroupRestored {
        group: group.to_string(),
        id: point.id,
        members: made,
    })
}

/// One member, restored paused under its own name.
fn restore_member(
    store: &Store,
    chain: &str,
    layer: u64,
    key_of: &mut KeyOf<'_>,
    xl: &dyn XlTool,
) -> Result<Restored, RestoreError> {
    let key = key_of(chain).map_err(|source| RestoreError::Key {
        chain: chain.to_string(),
        source,
    })?;
    let point = open_point(store, chain, Some(layer), key)?;
    let disks = disk_clones(&point.image.top().meta().disks, chain)?;
    let opts = super::host_stream_options(None, disks.clone());
    let stats = stream_into_xl(&point, &opts, true, xl)?;
    Ok(Restored {
        chain: chain.to_string(),
        id: layer,
        name: chain.to_string(),
        disks,
        stats,
    })
}

/// The group checkpoint to restore, every member's layer still present.
fn group_point(
    store: &Store,
    root: &Path,
    group: &str,
    id: Option<u64>,
) -> Result<GroupPoint, RestoreError> {
    let m = GroupDir::open(root, group)?.manifest()?;
    let ids = |points: &mut dyn Iterator<Item = &GroupPoint>| {
        points
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let point = m.point(id).cloned().ok_or_else(|| match id {
        Some(id) => RestoreError::NoGroupPoint {
            group: group.to_string(),
            id,
            have: ids(&mut m.points.iter()),
        },
        None => RestoreError::NoGroupPoints {
            group: group.to_string(),
        },
    })?;
    // A prune or merge of a member chain may have dropped its layer: refuse before creating
    // anything.
    if let Some(gone) = point.missing(store)?.first() {
        let mut ok = m
            .points
            .iter()
            .filter(|p| p.missing(store).is_ok_and(|v| v.is_empty()));
        let restorable = ids(&mut ok);
        return Err(RestoreError::MemberGone {
            group: group.to_string(),
            id: point.id,
            member: gone.chain.clone(),
            layer: gone.layer,
            restorable: if restorable.is_empty() {
                "none".to_string()
            } else {
                restorable
            },
        });
    }
    Ok(point)
}
