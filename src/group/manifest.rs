//! The group manifest: which layer of which chain makes up each group checkpoint.
//!
//! ```text
//! <store>/.groups/<group>/        0700 (a dot: never listed as a chain)
//!   manifest.json                 0600, replaced atomically like a chain's manifest
//!   lock                          flock'ed by the process checkpointing the group
//! ```
//!
//! A group checkpoint is listed only once every member's layer is committed; a failed one
//! leaves no point (members that did commit keep an ordinary layer, tagged with the group).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{self, ChainLock, Store, StoreError};

/// The group manifest's format.
pub const GROUP_FORMAT: u32 = 1;

/// One member of a group checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The domain's name, also its chain's name.
    pub chain: String,
    /// The member's layer.
    pub layer: u64,
    /// The member's pause to resume, microseconds.
    pub downtime_us: u64,
    /// Disk snapshots in the layer.
    pub disks: usize,
    /// The slot (Slurm task rank) of the host that ran it, in a group across hosts; a restore
    /// across hosts places it on the host of the same slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
}

/// One group checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPoint {
    /// Group checkpoint id (`restore --group NAME@ID`).
    pub id: u64,
    /// The instant every member was stopped, ms since the Unix epoch.
    pub instant_unix_ms: u64,
    /// First to last member stopped, microseconds.
    pub skew_us: u64,
    /// The members, in the order given.
    pub members: Vec<GroupMember>,
}

impl GroupPoint {
    /// The members whose layer is no longer in their chain (a prune or merge dropped it, or
    /// the chain is gone): the point can be restored only if this is empty.
    pub fn missing<'a>(&'a self, store: &Store) -> Result<Vec<&'a GroupMember>, StoreError> {
        let chains = store.chains()?;
        let mut missing = Vec::new();
        for m in &self.members {
            let present = chains.contains(&m.chain)
                && store.chain(&m.chain)?.manifest()?.layer(m.layer).is_some();
            if !present {
                missing.push(m);
            }
        }
        Ok(missing)
    }
}

/// `manifest.json` of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupManifest {
    /// Format version.
    pub format: u32,
    /// The group's name.
    pub name: String,
    /// Group checkpoints, oldest first.
    pub points: Vec<GroupPoint>,
}

impl GroupManifest {
    /// What makes a manifest read from disk unusable: point ids that do not rise (or leave no
    /// id for the next point), or a member that names no valid chain.
    fn fault(&self) -> Option<String> {
        let mut prev = 0u64;
        for p in &self.points {
            if p.id <= prev || p.id == u64::MAX {
                return Some(format!(
                    "point {} is listed after point {prev}: ids must rise, below {}",
                    p.id,
                    u64::MAX
                ));
            }
            prev = p.id;
            if let Some(m) = p
                .members
                .iter()
                .find(|m| store::validate_name(&m.chain).is_err())
            {
                return Some(format!(
                    "point {} names chain {:?}, not a valid chain name",
                    p.id, m.chain
                ));
            }
        }
        None
    }

    /// The id the next group checkpoint gets.
    pub fn next_id(&self) -> u64 {
        self.points.last().map_or(1, |p| p.id + 1)
    }

    /// Point `id`, or the newest without one.
    pub fn point(&self, id: Option<u64>) -> Option<&GroupPoint> {
        match id {
            Some(id) => self.points.iter().find(|p| p.id == id),
            None => self.points.last(),
        }
    }
}

/// A group's directory in a store.
pub struct GroupDir {
    name: String,
    dir: PathBuf,
}

impl GroupDir {
    /// The group `name` in the store at `root` (the name is checked like a chain name).
    pub fn open(root: &Path, name: &str) -> Result<GroupDir, StoreError> {
        store::validate_name(name)?;
        Ok(GroupDir {
            name: name.to_string(),
            dir: root.join(".groups").join(name),
        })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lock the group against another group checkpoint of it (creating the directory 0700).
    pub fn lock(&self, wait: Duration) -> Result<ChainLock, StoreError> {
        store::ensure_private_dir(&self.dir)?;
        store::lock::lock(&self.dir, &self.name, wait)
    }

    /// The manifest (an empty one for a new group).
    pub fn manifest(&self) -> Result<GroupManifest, StoreError> {
        let path = self.dir.join(store::manifest::MANIFEST);
        let read = store::manifest::read_json(&path, GROUP_FORMAT, |m: &GroupManifest| m.format)?;
        let Some(m) = read else {
            return Ok(GroupManifest {
                format: GROUP_FORMAT,
                name: self.name.clone(),
                points: Vec::new(),
            });
        };
        if let Some(reason) = m.fault() {
            return Err(StoreError::Manifest { path, reason });
        }
        Ok(m)
    }

    /// The groups of the store at `root`, sorted.
    pub fn list(root: &Path) -> Result<Vec<String>, StoreError> {
        store::named_dirs(&root.join(".groups"))
    }

    /// Add `point` to the manifest, atomically.
    pub fn record(&self, point: GroupPoint) -> Result<(), StoreError> {
        store::ensure_private_dir(&self.dir)?;
        let mut m = self.manifest()?;
        m.points.push(point);
        store::manifest::write_json(&self.dir, store::manifest::MANIFEST, &m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_points_in_order_and_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupDir::open(dir.path(), "job1").unwrap();
        let _lock = g.lock(Duration::ZERO).unwrap();
        assert_eq!(g.manifest().unwrap().next_id(), 1);
        let point = |id| GroupPoint {
            id,
            instant_unix_ms: 1000 + id,
            skew_us: 5,
            members: vec![GroupMember {
                chain: "a".into(),
                layer: id,
                downtime_us: 10,
                disks: 0,
                slot: None,
            }],
        };
        g.record(point(1)).unwrap();
        g.record(point(2)).unwrap();
        let m = g.manifest().unwrap();
        assert_eq!(m.next_id(), 3);
        assert_eq!(m.point(None).unwrap().id, 2);
        assert_eq!(m.point(Some(1)).unwrap().instant_unix_ms, 1001);
        assert!(m.point(Some(9)).is_none());
        assert!(GroupDir::open(dir.path(), "../x").is_err());
        // The group directory is not a chain.
        let store = store::Store::open(dir.path()).unwrap();
        assert!(store.chains().unwrap().is_empty());
    }
}
