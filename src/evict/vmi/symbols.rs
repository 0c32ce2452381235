//! The operator's guest profile (`--guest-profile FILE`): a System.map, or a Volatility3 ISF
//! JSON file (symbols, and `struct page` if it has it).
//!
//! ```text
//! System.map   "ffffffff82000000 D linux_banner"   one symbol a line: hex address, type, name
//! ISF JSON     {"symbols": {"linux_banner": {"address": N}, ...},
//!               "user_types": {"page": {"size": 64, "fields": {"private": {"offset": 40}, ...}}}}
//! ```
//! Types normally come from the guest's own `.BTF` section ([`super::btf`]); an ISF profile's
//! `struct page` is used when it names every field needed.

use std::collections::HashMap;
use std::path::Path;

use super::layout::PageLayout;

/// The largest profile read (a full ISF of a distribution kernel is about 100 MB).
const MAX_PROFILE_BYTES: u64 = 512 << 20;

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Reading the file failed.
    #[error("cannot read the guest profile {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither a System.map nor an ISF JSON file.
    #[error("the guest profile {path} is not a System.map or ISF JSON file: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Symbols and, from an ISF file, the layout of `struct page`.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Symbol name -> link-time address.
    pub symbols: HashMap<String, u64>,
    /// `struct page` from the profile (ISF), used instead of the guest's BTF.
    pub layout: Option<PageLayout>,
    /// Where it came from (for notes).
    pub source: String,
}

impl Profile {
    /// Load `path`: ISF JSON if it starts with `{`, a System.map otherwise.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let name = path.display().to_string();
        let io = |source| ProfileError::Io {
            path: name.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_PROFILE_BYTES {
            return Err(ProfileError::Format {
                path: name,
                reason: format!("{len} bytes, more than {MAX_PROFILE_BYTES}"),
            });
        }
        let text = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8_lossy(&text);
        let parsed = if text.trim_start().starts_with('{') {
            Profile::from_isf(&text)
        } else {
            Profile::from_system_map(&text)
        };
        parsed
            .map(|mut p| {
                p.source = name.clone();
                p
            })
            .map_err(|reason| ProfileError::Format { path: name, reason })
    }

    /// Parse a System.map (lines that do not parse are skipped; the first address wins).
    pub fn from_system_map(text: &str) -> Result<Profile, String> {
        let mut symbols = HashMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(a), Some(_t), Some(n), None) = (w.next(), w.next(), w.next(), w.next())
            else {
                continue;
            };
            if let Ok(a) = u64::from_str_radix(a, 16) {
                symbols.entry(n.to_string()).or_insert(a);
            }
        }
        if !symbols.contains_key("linux_banner") {
            return Err("no linux_banner symbol".into());
        }
        Ok(Profile {
            symbols,
            ..Default::default()
        })
    }

    /// Parse a Volatility3 ISF file.
    pub fn from_isf(text: &str) -> Result<Profile, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let syms = v
            .get("symbols")
            .and_then(|s| s.as_object())
            .ok_or("no \"symbols\" object")?;
        let symbols: HashMap<String, u64> = syms
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), s.get("address")?.as_u64()?)))
            .collect();
        if !symbols.contains_key("linux_banner") {
            return Err("no linux_banner symbol".into());
        }
        let types = v.get("user_types").and_then(|t| t.as_object());
        let layout = types.and_then(isf_page_layout);
        Ok(Profile {
            symbols,
            layout,
            source: String::new(),
        })
    }

    /// A symbol's link-time address.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// `struct page` from ISF `user_types`, looking into anonymous unions/structs (ISF names
/// them `unnamed_field_*` and refers to their type by name), at most 4 levels deep.
fn isf_page_layout(types: &JsonMap) -> Option<PageLayout> {
    let page = types.get("page")?;
    let size = u32::try_from(page.get("size")?.as_u64()?).ok()?;
    let find = |want: &str| isf_field(types, page, want, 0);
    let mapcount = find("page_type").or_else(|| find("_mapcount"))?;
    PageLayout {
        size,
        flags: find("flags")?,
        compound_head: find("compound_head"),
        private: find("private")?,
        mapcount,
        refcount: find("_refcount").or_else(|| find("_count"))?,
    }
    .checked()
    .ok()
}

fn isf_field(types: &JsonMap, ty: &serde_json::Value, want: &str, depth: u32) -> Option<u32> {
    if depth > 4 {
        return None;
    }
    let fields = ty.get("fields")?.as_object()?;
    if let Some(f) = fields.get(want) {
        return u32::try_from(f.get("offset")?.as_u64()?).ok();
    }
    fields.iter().find_map(|(name, f)| {
        if !name.starts_with("unnamed_field") && !name.is_empty() {
            return None;
        }
        let off = u32::try_from(f.get("offset")?.as_u64()?).ok()?;
        let inner = types.get(f.get("type")?.get("name")?.as_str()?)?;
        off.checked_add(isf_field(types, inner, want, depth + 1)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_map_and_isf_give_symbols_and_isf_gives_the_layout() {
        let m = Profile::from_system_map(
            "ffffffff81000000 T _text\nffffffff82000100 D linux_banner\ngarbage\n",
        )
        .unwrap();
        assert_eq!(m.get("linux_banner"), Some(0xffff_ffff_8200_0100));
        assert!(Profile::from_system_map("ffffffff81000000 T _text\n").is_err());
        let isf = r#"{"symbols": {"linux_banner": {"address": 18446744071595540736}},
          "user_types": {"page": {"size": 64, "fields": {
            "flags": {"offset": 0}, "unnamed_field_0": {"offset": 8, "type": {"kind": "union", "name": "u0"}},
            "_mapcount": {"offset": 48}, "_refcount": {"offset": 52}}},
            "u0": {"size": 40, "fields": {"private": {"offset": 32}, "compound_head": {"offset": 0}}}}}"#;
        let p = Profile::from_isf(isf).unwrap();
        let l = p.layout.unwrap();
        assert_eq!(
            (l.size, l.private, l.mapcount, l.compound_head),
            (64, 40, 48, Some(8))
        );
        assert!(Profile::from_isf("{\"symbols\": 3}").is_err());
        assert!(Profile::from_isf("{").is_err());
    }
}
