//! `restore --group NAME[@N]`: every member created paused, the ones made so far destroyed if
//! one fails, then all unpaused together. Across hosts, disks held by another host follow
//! their domain ([`super::fetch`]).

use std::path::Path;
use std::time::{Duration, Instant};

use super::fetch::{self, Fetch, Mover, Overlay};
use super::{open_point, stream_into_xl, KeyOf, RestoreError, Restored, XlTool};
use crate::group::copies::CopyRecord;
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
    /// From the start of the restore until every member ran.
    pub running_after: Duration,
    /// The disks this host fetched from other hosts, as their copies ended.
    pub copies: Vec<CopyRecord>,
    /// From the start until every disk of every host was local (None: nothing to copy).
    pub local_after: Option<Duration>,
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
    let start = Instant::now();
    let store = Store::open(root)?;
    let point = group_point(&store, root, group, id)?;
    let all: Vec<String> = point.members.iter().map(|m| m.chain.clone()).collect();
    let share = Share {
        store: &store,
        group,
        point: &point,
        chains: &all,
        fetch: None,
    };
    let (mut g, _) = share.restore(key_of, xl, &mut LocalCoordinator)?;
    g.running_after = start.elapsed();
    Ok(g)
}

/// Restore group checkpoint `id` of `group` across the hosts of `r`, from a store every host
/// reaches at `root`: the hub places each member on the host with the member's slot (modulo
/// the number of hosts), every host serves the disk snapshots it holds of members placed
/// elsewhere, creates its own members paused (a disk held elsewhere as a local overlay of its
/// export), and once every host has, all are unpaused; if any host fails, every host destroys
/// what it made. Then each host copies its fetched disks (`mover`) and returns once every
/// disk of every host is local, its servers stopped.
pub fn restore_group_across(
    root: &Path,
    group: &str,
    id: Option<u64>,
    key_of: &mut KeyOf<'_>,
    xl: &dyn XlTool,
    r: &Rendezvous,
    mover: &dyn Mover,
) -> Result<GroupRestored, RestoreError> {
    let start = Instant::now();
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
    let gdir = GroupDir::open(root, group)?;
    let fetch = Fetch {
        restore: &r.job,
        gdir: &gdir,
        mover,
    };
    let served = group_point(&store, root, group, Some(id)).and_then(|point| {
        let servers = fetch::serve_for_others(&store, &point, &mine, key_of, &fetch)?;
        Ok((point, servers))
    });
    let (point, servers) = match served {
        Ok(s) => s,
        Err(e) => {
            coord.abandon(Phase::Served, &error_chain(&e));
            return Err(e);
        }
    };
    if !matches!(coord.barrier(Phase::Served, true), Ok(true)) {
        return Err(aborted(group, id, &coord));
    }
    let share = Share {
        store: &store,
        group,
        point: &point,
        chains: &mine,
        fetch: Some(&fetch),
    };
    let (mut g, overlays) = share.restore(key_of, xl, &mut coord)?;
    g.running_after = start.elapsed();
    // The domains run; now their disks come home, and the sources may go.
    let (copies, failure) = fetch::copy_all(&overlays, &fetch);
    let all_local = coord.barrier(Phase::DisksLocal, failure.is_none());
    fetch::release(servers, Duration::from_secs(1));
    if let Some(why) = failure {
        return Err(RestoreError::GroupDisks {
            group: group.to_string(),
            id,
            reason: why,
        });
    }
    if !matches!(all_local, Ok(true)) {
        return Err(RestoreError::GroupDisks {
            group: group.to_string(),
            id,
            reason: coord
                .why_failed()
                .unwrap_or_else(|| "another host's disk copy failed".into()),
        });
    }
    g.copies = copies;
    g.local_after = Some(start.elapsed());
    Ok(g)
}

/// `e` and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The group was given up by another host: why, as the coordinator heard it.
fn aborted(group: &str, id: u64, coord: &dyn Coordinator) -> RestoreError {
    RestoreError::GroupAborted {
        group: group.to_string(),
        id,
        reason: coord
            .why_failed()
            .unwrap_or_else(|| "another host failed".into()),
    }
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

/// This host's share of a group restore.
struct Share<'a> {
    store: &'a Store,
    group: &'a str,
    point: &'a GroupPoint,
    /// The members this host restores.
    chains: &'a [String],
    /// Where disks held by other hosts come from (None: one host).
    fetch: Option<&'a Fetch<'a>>,
}

impl Share<'_> {
    /// Restore the members named in `chains`, paused; pass barrier `Restored`; unpause them if
    /// every host passed, else destroy them. Returns the overlays of disks to copy.
    fn restore(
        &self,
        key_of: &mut KeyOf<'_>,
        xl: &dyn XlTool,
        coord: &mut dyn Coordinator,
    ) -> Result<(GroupRestored, Vec<Overlay>), RestoreError> {
        let (group, point) = (self.group, self.point);
        let mut made: Vec<Restored> = Vec::new();
        let mut overlays = Vec::new();
        let mut failed = None;
        let members = point
            .members
            .iter()
            .filter(|m| self.chains.contains(&m.chain));
        for member in members {
            match self.member(&member.chain, member.layer, key_of, xl) {
                Ok((r, o)) => {
                    made.push(r);
                    overlays.extend(o);
                }
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
        let go = match &failed {
            Some(e) => {
                // The other hosts hear why (the source's chain names the disk or page).
                coord.abandon(Phase::Restored, &error_chain(e));
                Ok(false)
            }
            None => coord.barrier(Phase::Restored, true),
        };
        if failed.is_some() || !matches!(go, Ok(true)) {
            for r in &made {
                xl.destroy(&r.name);
            }
            return Err(failed.unwrap_or_else(|| match go {
                Err(e) => RestoreError::GroupAborted {
                    group: group.to_string(),
                    id: point.id,
                    reason: e.to_string(),
                },
                _ => aborted(group, point.id, coord),
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
        let g = GroupRestored {
            group: group.to_string(),
            id: point.id,
            members: made,
            running_after: Duration::ZERO,
            copies: Vec::new(),
            local_after: None,
        };
        Ok((g, overlays))
    }

    /// One member, restored paused under its own name; its disks' overlays, if any.
    fn member(
        &self,
        chain: &str,
        layer: u64,
        key_of: &mut KeyOf<'_>,
        xl: &dyn XlTool,
    ) -> Result<(Restored, Vec<Overlay>), RestoreError> {
        let key = key_of(chain).map_err(|source| RestoreError::Key {
            chain: chain.to_string(),
            source,
        })?;
        let point = open_point(self.store, chain, Some(layer), key)?;
        let snaps = &point.image.top().meta().disks;
        let (disks, fetched) = fetch::member_disks(snaps, chain, self.fetch)?;
        let mut opts = super::host_stream_options(None, disks.clone());
        opts.overlays = fetched.clone();
        let stats = stream_into_xl(&point, &opts, true, xl)?;
        let overlays = fetched
            .into_iter()
            .map(|vdev| Overlay {
                domain: chain.to_string(),
                path: disks[&vdev].clone(),
                vdev,
            })
            .collect();
        let r = Restored {
            chain: chain.to_string(),
            id: layer,
            name: chain.to_string(),
            disks,
            stats,
        };
        Ok((r, overlays))
    }
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
