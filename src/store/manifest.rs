//! Reading the manifest, and replacing it atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{io, Manifest, StoreError, MANIFEST_FORMAT};
use crate::failpoint::failpoint;
use crate::fileio::{create_private, read_nofollow, sync_dir};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Prefix of manifest temp files.
pub const MANIFEST_TEMP_PREFIX: &str = ".tmp-manifest-";

/// Read the versioned JSON file at `path` without following a symlink: None if there is none,
/// an error if it does not parse or `format_of` it is not `format`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: u32,
    format_of: impl Fn(&T) -> u32,
) -> Result<Option<T>, StoreError> {
    let bytes = match read_nofollow(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let value: T = serde_json::from_slice(&bytes).map_err(|source| StoreError::ManifestJson {
        path: path.to_path_buf(),
        source,
    })?;
    let found = format_of(&value);
    if found != format {
        return Err(StoreError::ManifestFormat {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(Some(value))
}

/// Read `dir`'s manifest; an empty one if there is none yet.
pub fn read(dir: &Path) -> Result<Manifest, StoreError> {
    let path = dir.join(MANIFEST);
    let Some(m) = read_json(&path, MANIFEST_FORMAT, |m: &Manifest| m.format)? else {
        return Ok(Manifest {
            format: MANIFEST_FORMAT,
            ..Manifest::default()
        });
    };
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
    let json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::ManifestJson {
        path: dir.join(name),
        source,
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
    let mut f = create_private(tmp).map_err(|e| io(tmp, e))?;
    let half = json.len() / 2;
    f.write_all(&json[..half]).map_err(|e| io(tmp, e))?;
    failpoint("manifest.temp");
    f.write_all(&json[half..]).map_err(|e| io(tmp, e))?;
    f.sync_all().map_err(|e| io(tmp, e))
}
