//! The operator's configuration file (`/etc/xckpt.toml`): the store, and per domain the
//! retention, the eviction policies and the key file, with a `[default]` section that every
//! domain inherits field by field.
//!
//! ```toml
//! store = "/var/lib/xckpt"
//! metrics_file = "/var/lib/prometheus/node-exporter/xckpt.prom"
//!
//! [default]
//! evict = ["free"]
//! [default.retention]
//! keep_last = 24
//! keep_daily = 7
//!
//! [domain.web1]
//! encrypt = "/etc/xckpt/web1.key"
//! [domain.web1.retention]
//! keep_hourly = 48
//! ```
//!
//! Command-line options win over the environment, which wins over this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration is read from unless told otherwise (when the file exists).
pub const DEFAULT_PATH: &str = "/etc/xckpt.toml";

/// Why the configuration cannot be used. One line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path} line {line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A setting has a value it cannot have.
    #[error("config {path}: section [{section}]: {reason}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// `default` or `domain.NAME`.
        section: String,
        /// Why.
        reason: String,
    },
    /// A `[domain.NAME]` section names something that cannot be a chain.
    #[error("config {path}: section [domain.{name}]: {source}")]
    BadDomain {
        /// The file.
        path: PathBuf,
        /// The section's name.
        name: String,
        /// Why the name cannot be a chain's.
        source: crate::store::StoreError,
    },
}

/// How many layers `prune` keeps, restic/borg style (the store's policy; `None` leaves a rule
/// out).
pub use crate::store::RetentionPolicy as Retention;

/// Settings of one domain (or of `[default]`). Unset fields fall back to `[default]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSettings {
    /// Retention rules for `prune`.
    #[serde(default)]
    pub retention: Retention,
    /// Eviction policies for `checkpoint` (names such as `free`, `cache`, `balloon`).
    pub evict: Option<Vec<String>>,
    /// Key file for `--encrypt`.
    pub encrypt: Option<PathBuf>,
    /// Frame encoding for `checkpoint` (`--compress`): `"auto"`, `"none"` or a zstd level
    /// `"1"`..`"19"`.
    pub compress: Option<String>,
}

impl DomainSettings {
    /// Each field of `self`, or of `fallback` where `self` leaves it unset.
    pub fn or(&self, fallback: &DomainSettings) -> DomainSettings {
        DomainSettings {
            retention: self.retention.or(fallback.retention),
            evict: self.evict.clone().or_else(|| fallback.evict.clone()),
            encrypt: self.encrypt.clone().or_else(|| fallback.encrypt.clone()),
            compress: self.compress.clone().or_else(|| fallback.compress.clone()),
        }
    }

    /// The `compress` setting, parsed (checked when the file is loaded).
    pub fn encoding(&self) -> Option<crate::layer::Encoding> {
        self.compress.as_deref().and_then(|s| s.parse().ok())
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store directory.
    pub store: Option<PathBuf>,
    /// Prometheus node_exporter textfile that `checkpoint` updates after each run.
    pub metrics_file: Option<PathBuf>,
    /// Settings every domain inherits.
    #[serde(default)]
    pub default: DomainSettings,
    /// Settings per domain name.
    #[serde(default)]
    pub domain: BTreeMap<String, DomainSettings>,
}

impl Config {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parse `text` (read from `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            ConfigError::Parse {
                path: path.to_path_buf(),
                line: text[..at].matches('\n').count() + 1,
                reason: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        for name in config.domain.keys() {
            crate::store::validate_name(name).map_err(|source| ConfigError::BadDomain {
                path: path.to_path_buf(),
                name: name.clone(),
                source,
            })?;
        }
        let sections = std::iter::once(("default", &config.default))
            .chain(config.domain.iter().map(|(n, s)| (n.as_str(), s)));
        for (name, settings) in sections {
            if let Some(c) = &settings.compress {
                c.parse::<crate::layer::Encoding>()
                    .map_err(|reason| ConfigError::BadValue {
                        path: path.to_path_buf(),
                        section: name.to_string(),
                        reason: format!("compress = {reason}"),
                    })?;
            }
        }
        Ok(config)
    }

    /// The file to read: `explicit` if given (it must exist), else [`DEFAULT_PATH`] if it
    /// exists, else none.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        }
    }

    /// The settings of domain `name`: its section over `[default]`.
    pub fn for_domain(&self, name: &str) -> DomainSettings {
        match self.domain.get(name) {
            Some(d) => d.or(&self.default),
            None => self.default.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../tools/xckpt.toml");

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(Path::new("xckpt.toml"), EXAMPLE).unwrap();
        assert_eq!(c.store.as_deref(), Some(Path::new("/var/lib/xckpt")));
        assert!(!c.default.retention.is_empty());
    }

    #[test]
    fn domains_inherit_the_default_field_by_field() {
        let text = r#"
store = "/srv/ckpt"
[default]
evict = ["free"]
encrypt = "/etc/xckpt/key"
[default.retention]
keep_last = 24
keep_daily = 7
[domain.web1]
evict = []
[domain.web1.retention]
keep_hourly = 48
keep_daily = 30
"#;
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        let web = c.for_domain("web1");
        assert_eq!(
            web.retention,
            Retention {
                keep_last: Some(24),
                keep_hourly: Some(48),
                keep_daily: Some(30)
            }
        );
        assert_eq!(web.evict, Some(vec![]));
        assert_eq!(web.encrypt.as_deref(), Some(Path::new("/etc/xckpt/key")));
        let other = c.for_domain("db");
        assert_eq!(other, c.default);
        assert_eq!(other.evict, Some(vec!["free".to_string()]));
    }

    #[test]
    fn errors_are_one_line_with_the_line_number() {
        let e = Config::parse(
            Path::new("/etc/x.toml"),
            "store = 1\n[default]\nkeep_lst = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("config /etc/x.toml line 1:"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = Config::parse(Path::new("x"), "[default.retention]\nkeep_lst = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("keep_lst"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = Config::parse(Path::new("x"), "[domain.\"../etc\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[domain.../etc]") && e.contains("dot"), "{e}");
        let e = Config::load(Path::new("/nonexistent/xckpt.toml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("config /nonexistent/xckpt.toml: "));
    }
}
