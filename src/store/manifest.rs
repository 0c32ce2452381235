//! Reading the manifest, and replacing it atomically.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{io, Manifest, StoreError, MANIFEST_FORMAT};
use crate::failpoint::failpoint;
use crate::layer::sync_dir;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Prefix of manifest temp files.
pub const MANIFEST_TEMP_PREFIX: &str = ".tmp-manifest-";

/// Read `dir`'s manifest; an empty one if there is none yet.
pub fn read(dir: &Path) -> Result<Manifest, StoreError> {
    let path = dir.join(MANIFEST);
    let bytes = match crate::layer::read_nofollow(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Manifest {
                format: MANIFEST_FORMAT,
                ..Manifest::default()
            })
        }
        Err(e) => return Err(io(&path, e)),
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if m.format != MANIFEST_FORMAT {
        return Err(StoreError::ManifestFormat {
            path,
            found: m.format,
        });
    }
    // Ids rise from one layer to the next (the newest is last, the next gets its id + 1, and
    // a parent is older), and the newest leaves room for a next id.
    let mut prev = 0u64;
    for r in &m.layers {
        let reason = if r.id <= prev {
            format!("layer {} is listed after layer {prev}: ids must rise", r.id)
        } else if r.id == u64::MAX {
            format!("layer id {} leaves no id for the next layer", r.id)
        } else if r.parent.is_some_and(|p| p >= r.id) {
            format!(
                "layer {} has parent {:?}, not an older layer",
                r.id, r.parent
            )
        } else {
            prev = r.id;
            continue;
        };
        return Err(StoreError::Manifest { path, reason });
    }
    // Layer files are named by id inside the chain directory: a name that could point
    // elsewhere (`../`, `/`) is refused.
    if let Some(r) = m.layers.iter().find(|r| !super::is_layer_name(&r.file)) {
        return Err(StoreError::Manifest {
            path,
            reason: format!(
                "layer {} has file name {:?}, not layer-NNNNNN.xcl",
                r.id, r.file
            ),
        });
    }
    Ok(m)
}

/// Replace `dir`'s manifest: write a temp file (0600, exclusive), fsync, rename over
/// `manifest.json`, fsync the directory.
pub fn write(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    write_json(dir, MANIFEST, m)
}

/// Replace `dir/name` with `value` as JSON, atomically, as [`write`] does for the manifest.
pub(crate) fn write_json(
    dir: &Path,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Manifest {
        path: dir.join(name),
        reason: e.to_string(),
    })?;
    let tmp: PathBuf = dir.join(format!(
        "{MANIFEST_TEMP_PREFIX}{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = write_temp(&tmp, &json).and_then(|()| {
        failpoint("manifest.rename.before");
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    failpoint("manifest.rename.after");
    sync_dir(dir).map_err(|e| io(dir, e))
}

fn write_temp(tmp: &Path, json: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .map_err(|e| io(tmp, e))?;
    let half = json.len() / 2;
    f.write_all(&json[..half]).map_err(|e| io(tmp, e))?;
    failpoint("manifest.temp");
    f.write_all(&json[half..]).map_err(|e| io(tmp, e))?;
    f.sync_all().map_err(|e| io(tmp, e))
}
