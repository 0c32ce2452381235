//! Verbs that rewrite a chain: `merge` and `prune`. Both work on the store only (no Xen), take
//! the chain's writer lock (waiting up to `--wait`), and swap the result in atomically.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use xckpt::store::{Chain, ChainLock, Manifest, RetentionPolicy, RewriteReport};

use super::show::open_existing;
use super::xenverbs::WaitArg;
use super::{print_json, StoreArg};

/// What both rewriting verbs take: the chain, and how to reach and report it.
#[derive(Debug, Args)]
pub struct RewriteArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The chain (domain name).
    domain: String,
    #[command(flatten)]
    wait: WaitArg,
    #[command(flatten)]
    key: super::settings::KeyArg,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `xckpt merge DOM --upto N`
#[derive(Debug, Args)]
pub struct MergeCmd {
    #[command(flatten)]
    chain: RewriteArgs,
    /// Squash layers up to and including this one into one base layer with its id (a base
    /// layer alone is compacted: one copy of each page).
    #[arg(long)]
    upto: u64,
}

impl MergeCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (chain, lock, before) = self.chain.open()?;
        let report = chain
            .merge(&lock, self.upto)
            .with_context(|| format!("merging {}@{}", self.chain.domain, self.upto))?;
        self.chain.print_report(&before, &report)
    }
}

/// `xckpt prune DOM --keep-last N [--keep-hourly H] [--keep-daily D]`
#[derive(Debug, Args)]
pub struct PruneCmd {
    #[command(flatten)]
    chain: RewriteArgs,
    /// Keep the N newest layers.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Keep the newest layer of each of the H newest hours (UTC) that have one.
    #[arg(long)]
    keep_hourly: Option<u32>,
    /// Keep the newest layer of each of the D newest days (UTC) that have one.
    #[arg(long)]
    keep_daily: Option<u32>,
    /// Show what would be kept and dropped, change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl PruneCmd {
    /// The policy given on the command line (fields not given are None, for a config file to
    /// fill with [`RetentionPolicy::or`]).
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
        }
    }

    pub fn run(self) -> anyhow::Result<ExitCode> {
        let name = &self.chain.domain;
        let policy = super::settings::retention(name, self.policy());
        if policy.is_empty() {
            bail!(
                "prune {name}: give at least one of --keep-last, --keep-hourly, --keep-daily \
                 (or `retention` for it in the config file)"
            );
        }
        let (chain, lock, m) = self.chain.open()?;
        let keep = policy.select(&m.layers);
        if self.dry_run {
            let dropped: Vec<u64> = m
                .layers
                .iter()
                .map(|r| r.id)
                .filter(|id| !keep.contains(id))
                .collect();
            let report = RewriteReport {
                kept: keep.into_iter().collect(),
                dropped,
                ..Default::default()
            };
            return self.chain.print_report(&m, &report);
        }
        let report = chain
            .retain(&lock, &keep, None)
            .with_context(|| format!("pruning {name}"))?;
        self.chain.print_report(&m, &report)
    }
}

/// The group checkpoints (`GROUP@ID`) that lose this chain's member when the layers `dropped`
/// of the manifest `before` go: they can no longer be restored.
fn broken_group_points(before: &Manifest, dropped: &[u64]) -> Vec<String> {
    before
        .layers
        .iter()
        .filter(|r| dropped.contains(&r.id))
        .filter_map(|r| r.group.as_ref().map(|g| format!("{}@{}", g.name, g.id)))
        .collect()
}

impl RewriteArgs {
    /// The chain (it must have layers), its writer lock (waiting `--wait`), and its manifest
    /// as it is before the rewrite.
    fn open(&self) -> anyhow::Result<(Chain, ChainLock, Manifest)> {
        let name = &self.domain;
        let store = open_existing(&self.store)?;
        let chain = store.chain(name)?.with_key(self.key.key(name)?);
        if chain.manifest()?.layers.is_empty() {
            bail!("chain {name} has no layers in {}", store.root().display());
        }
        let lock = chain.lock_exclusive(Duration::from_secs(self.wait.wait))?;
        let before = chain.manifest()?;
        Ok((chain, lock, before))
    }

    /// What was kept, dropped and rewritten, and the group points that broke.
    fn print_report(&self, before: &Manifest, r: &RewriteReport) -> anyhow::Result<ExitCode> {
        let name = &self.domain;
        let broken = broken_group_points(before, &r.dropped);
        if self.json {
            print_json(&serde_json::json!({
                "chain": name, "kept": r.kept, "dropped": r.dropped, "rewritten": r.rewritten,
                "bytes_before": r.bytes_before, "bytes_after": r.bytes_after,
                "broken_group_points": broken,
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        let ids = |v: &[u64]| {
            let s: Vec<String> = v.iter().map(u64::to_string).collect();
            if s.is_empty() {
                "none".to_string()
            } else {
                s.join(",")
            }
        };
        println!(
            "{name}: kept layers {}; dropped {}; {} -> {} bytes",
            ids(&r.kept),
            ids(&r.dropped),
            r.bytes_before,
            r.bytes_after
        );
        for w in &r.rewritten {
            println!(
                "  layer {} rewritten as {} (parent {}): folded {}; {} -> {} page slots",
                w.id,
                w.file,
                w.parent.map_or("none (base)".into(), |p| p.to_string()),
                ids(&w.folded),
                w.slots_before,
                w.slots_after
            );
        }
        if !broken.is_empty() {
            println!(
                "  note: group checkpoint{} {} can no longer be restored (this chain's layer of it is \
                 dropped); see `xckpt list --group NAME`",
                if broken.len() > 1 { "s" } else { "" },
                broken.join(", ")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
