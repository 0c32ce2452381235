//! Disks on their way to another host after a group restore (`disk::nbd`): one record per
//! disk in the shared store, which every host and `xckpt list --group` read.
//!
//! ```text
//! <store>/.groups/<group>/copies/<chain>-<vdev>.json   0600, replaced atomically
//! ```
//!
//! The host that holds the snapshot writes the record when its export serves (`to` and
//! `state` empty); the host that restores the domain fills them in as the copy runs, until it
//! is complete or failed.

use serde::{Deserialize, Serialize};

use super::manifest::GroupDir;
use crate::disk::nbd::{CopyState, Export};
use crate::store::{self, StoreError};

/// The record format.
pub const COPY_FORMAT: u32 = 1;

/// One disk of a restored member, copied from the host that holds its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    /// The record format ([`COPY_FORMAT`]).
    pub format: u32,
    /// The restore it belongs to (the Slurm job step of the restore across hosts).
    pub restore: String,
    /// The member's chain.
    pub chain: String,
    /// The guest device.
    pub vdev: String,
    /// The host that serves the snapshot.
    pub from: String,
    /// The export it serves.
    pub export: Export,
    /// The host that restores the member (None until it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Where the copy stands (None: served, not copying yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CopyState>,
    /// When the export started serving, ms since the Unix epoch.
    pub since_unix_ms: u64,
    /// When the record was last written.
    pub updated_unix_ms: u64,
}

impl CopyRecord {
    /// A new record: `export` of `chain`'s `vdev` serves from `from`, for `restore`.
    pub fn served(
        restore: &str,
        chain: &str,
        vdev: &str,
        from: &str,
        export: Export,
    ) -> CopyRecord {
        let now = store::unix_ms();
        CopyRecord {
            format: COPY_FORMAT,
            restore: restore.to_string(),
            chain: chain.to_string(),
            vdev: vdev.to_string(),
            from: from.to_string(),
            export,
            to: None,
            state: None,
            since_unix_ms: now,
            updated_unix_ms: now,
        }
    }

    /// One line for `list --group`.
    pub fn describe(&self) -> String {
        let to = self.to.as_deref().unwrap_or("?");
        let took = |t: u64| (t.saturating_sub(self.since_unix_ms)) as f64 / 1000.0;
        let state = match &self.state {
            None => "served, not copying yet".to_string(),
            Some(CopyState::Copying { done, len }) => format!(
                "copying {:.0}% ({} of {} MiB)",
                if *len == 0 {
                    0.0
                } else {
                    *done as f64 * 100.0 / *len as f64
                },
                done >> 20,
                len >> 20
            ),
            Some(CopyState::Complete) => format!(
                "local after {:.1} s; {} is no longer needed",
                took(self.updated_unix_ms),
                self.from
            ),
            Some(CopyState::Failed { why }) => format!("FAILED: {why}"),
        };
        format!(
            "disk {} of {}: {} -> {to}: {state}",
            self.vdev, self.chain, self.from
        )
    }
}

impl GroupDir {
    fn copies_dir(&self) -> std::path::PathBuf {
        self.dir().join("copies")
    }

    /// Write (or replace) the record of `r.chain`'s `r.vdev`, stamped with the time now.
    pub fn write_copy(&self, r: &mut CopyRecord) -> Result<(), StoreError> {
        let dir = self.copies_dir();
        store::ensure_private_dir(self.dir())?;
        store::ensure_private_dir(&dir)?;
        r.updated_unix_ms = store::unix_ms();
        store::manifest::write_json(&dir, &copy_file(&r.chain, &r.vdev), r)
    }

    /// The record of `chain`'s `vdev`, if any.
    pub fn copy(&self, chain: &str, vdev: &str) -> Result<Option<CopyRecord>, StoreError> {
        let path = self.copies_dir().join(copy_file(chain, vdev));
        store::manifest::read_json(&path, COPY_FORMAT, |r: &CopyRecord| r.format)
    }

    /// Every record, by chain and vdev.
    pub fn copies(&self) -> Result<Vec<CopyRecord>, StoreError> {
        let dir = self.copies_dir();
        let names = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(store::io(&dir, e)),
        };
        let mut out = Vec::new();
        for n in names {
            let path = dir.join(&n);
            if let Some(r) =
                store::manifest::read_json(&path, COPY_FORMAT, |r: &CopyRecord| r.format)?
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (&a.chain, &a.vdev).cmp(&(&b.chain, &b.vdev)));
        Ok(out)
    }
}

fn copy_file(chain: &str, vdev: &str) -> String {
    format!("{chain}-{vdev}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_replaced_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupDir::open(dir.path(), "job").unwrap();
        assert!(g.copies().unwrap().is_empty());
        let export = Export {
            host: "xhost1".into(),
            port: 10809,
            name: "hping-xvda".into(),
        };
        let mut r = CopyRecord::served("7.0", "hping", "xvda", "xhost1", export);
        g.write_copy(&mut r).unwrap();
        assert!(g.copy("hping", "xvda").unwrap().unwrap().state.is_none());
        assert!(r.describe().contains("served, not copying yet"));
        r.to = Some("xhost2".into());
        r.state = Some(CopyState::Copying {
            done: 96 << 20,
            len: 256 << 20,
        });
        g.write_copy(&mut r).unwrap();
        let all = g.copies().unwrap();
        assert_eq!(all.len(), 1);
        let line = all[0].describe();
        assert!(
            line.contains("xhost1 -> xhost2") && line.contains("38% (96 of 256 MiB)"),
            "{line}"
        );
        r.since_unix_ms -= 2500; // the copy started 2.5 s ago
        r.state = Some(CopyState::Complete);
        g.write_copy(&mut r).unwrap();
        assert!(
            r.describe().contains("local after 2.5 s"),
            "{}",
            r.describe()
        );
        assert!(g.copies().unwrap()[0]
            .describe()
            .contains("xhost1 is no longer needed"));
        let mode = std::fs::metadata(dir.path().join(".groups/job/copies/hping-xvda.json"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
