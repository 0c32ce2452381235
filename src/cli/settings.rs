//! The configuration file behind the options: `--config PATH` (default `/etc/xckpt.toml` when it
//! exists) supplies the default of `--store` and, per domain, the key file of `--encrypt`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches};
use xckpt::config::{Config, Retention};
use xckpt::layer::LayerKey;

use super::Cli;

/// The configuration of the command running now (`xckpt serve` runs one after another).
static CONFIG: RwLock<Option<Arc<Config>>> = RwLock::new(None);

/// The configuration read by [`parse`] (empty if there is no file).
pub fn config() -> Arc<Config> {
    CONFIG
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// The value of `--config` (or `--config=`) in `args`, or of `XCKPT_CONFIG`, before clap
/// parses them: the file decides clap's defaults.
fn config_arg(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("XCKPT_CONFIG").map(PathBuf::from)
}

/// Parse the command line with the configuration file's defaults (exits on `--help` and on
/// usage errors, as clap does).
pub fn parse() -> anyhow::Result<Cli> {
    try_parse(std::env::args_os().collect())?.map_err(|e| e.exit())
}

/// Parse `args` (the program's name first) with the configuration file's defaults; a usage
/// error, `--help` or `--version` is clap's error, for the caller to print.
pub fn try_parse(args: Vec<OsString>) -> anyhow::Result<Result<Cli, clap::Error>> {
    let explicit = config_arg(&args);
    let config = match Config::locate(explicit.as_deref()) {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    let mut cmd = Cli::command();
    if let Some(store) = &config.store {
        cmd = with_store_default(cmd, store);
    }
    let matches = match cmd.try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
    *CONFIG.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(config));
    Ok(Ok(cli))
}

/// `cmd` with the default of every `--store` set to `store`.
fn with_store_default(cmd: clap::Command, store: &Path) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_id() == "store"))
        .map(|s| s.get_name().to_string())
        .collect();
    let value = store.to_string_lossy().into_owned();
    names.into_iter().fold(cmd, |cmd, name| {
        let value = value.clone();
        cmd.mut_subcommand(name, move |s| {
            s.mut_arg("store", move |a| a.default_value(value))
        })
    })
}

/// The retention of chain `domain`: the `--keep-*` options `given`, and for each one left
/// out, the config file's (`[domain.NAME.retention]` over `[default.retention]`). For `prune`,
/// which the systemd unit runs without options.
#[allow(dead_code)] // until the `prune` verb calls it
pub fn retention(domain: &str, given: Retention) -> Retention {
    given.or(config().for_domain(domain).retention)
}

/// `--encrypt KEYFILE`.
#[derive(Debug, Clone, Args)]
pub struct KeyArg {
    /// Key file (32 raw bytes or 64 hex digits, mode 0600): new layers are encrypted with it,
    /// encrypted layers are read with it. Default: the domain's `encrypt` in the config file.
    #[arg(long, value_name = "KEYFILE")]
    pub encrypt: Option<PathBuf>,
}

impl KeyArg {
    /// The key for chain `domain`: `--encrypt`, else the config file's, else none.
    pub fn key(&self, domain: &str) -> anyhow::Result<Option<LayerKey>> {
        let path = self
            .encrypt
            .clone()
            .or_else(|| config().for_domain(domain).encrypt);
        let Some(path) = path else { return Ok(None) };
        let key = LayerKey::load(&path)
            .with_context(|| format!("the key of chain {domain} (--encrypt)"))?;
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_win_over_the_config_retention() {
        let given = Retention {
            keep_last: Some(3),
            ..Default::default()
        };
        // No config loaded in tests: the options alone.
        assert_eq!(retention("g", given), given);
        let file = Retention {
            keep_last: Some(9),
            keep_daily: Some(7),
            keep_hourly: None,
        };
        assert_eq!(
            given.or(file),
            Retention {
                keep_last: Some(3),
                keep_daily: Some(7),
                keep_hourly: None
            }
        );
    }

    #[test]
    fn config_is_found_before_parsing() {
        let a = os(&["xckpt", "--config", "/x.toml", "list"]);
        assert_eq!(config_arg(&a), Some(PathBuf::from("/x.toml")));
        let a = os(&["xckpt", "list", "--config=/y.toml"]);
        assert_eq!(config_arg(&a), Some(PathBuf::from("/y.toml")));
        let a = os(&["xckpt", "list", "--", "--config=/y.toml"]);
        assert_eq!(
            config_arg(&a),
            std::env::var_os("XCKPT_CONFIG").map(PathBuf::from)
        );
    }

    #[test]
    fn the_config_store_is_the_default_of_every_store_option() {
        let cmd = with_store_default(Cli::command(), Path::new("/srv/xckpt"));
        let mut seen = 0;
        for sub in cmd.get_subcommands() {
            if let Some(a) = sub.get_arguments().find(|a| a.get_id() == "store") {
                let d: Vec<_> = a.get_default_values().iter().collect();
                assert_eq!(d, ["/srv/xckpt"], "{}", sub.get_name());
                seen += 1;
            }
        }
        assert!(seen >= 5, "only {seen} verbs take --store");
        let m = cmd.get_matches_from(["xckpt", "verify", "g"]);
        let cli = Cli::from_arg_matches(&m).unwrap();
        assert!(format!("{cli:?}").contains("/srv/xckpt"), "{cli:?}");
    }
}
