//! Read verbs: `list`, `inspect`, `verify`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use xckpt::group::{GroupDir, GroupMember};
use xckpt::hv::PAGE_SIZE;
use xckpt::store::{ChainVerifyError, LayerRecord, Store};

use super::target::Target;
use super::{print_json, KeyArg, StoreArg};

/// `xckpt list [DOM]`
#[derive(Debug, Args)]
pub struct ListCmd {
    #[command(flatten)]
    store: StoreArg,
    /// A chain to list the layers of (all chains if omitted).
    domain: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List the store's chains only, without asking Xen for running domains (the default,
    /// with a note, where Xen cannot be reached).
    #[arg(long)]
    offline: bool,
    /// List the checkpoints of a group (`checkpoint --group NAME`) and whether each can
    /// still be restored.
    #[arg(long, value_name = "NAME", conflicts_with = "domain")]
    group: Option<String>,
}

/// One group checkpoint as `list --group` shows it.
#[derive(Debug, Serialize)]
struct GroupRow {
    id: u64,
    instant_unix_ms: u64,
    skew_ms: f64,
    /// `chain@layer` of each member.
    members: Vec<String>,
    /// `chain@layer` of the members whose layer was pruned or merged away.
    missing: Vec<String>,
}

/// One layer as `list` shows it.
#[derive(Debug, Serialize)]
struct LayerRow {
    id: u64,
    parent: Option<u64>,
    kind: String,
    file: String,
    created_unix_ms: u64,
    bytes: u64,
    dirty_pages: u64,
    data_pages: u64,
    zero_pages: u64,
    unpopulated_pages: u64,
    evicted_pages: u64,
    evicted: std::collections::BTreeMap<xckpt::layer::EvictPolicy, u64>,
    rounds: u32,
    downtime_ms: f64,
    compression_ratio: f64,
    notes: Vec<String>,
}

impl From<&LayerRecord> for LayerRow {
    fn from(r: &LayerRecord) -> Self {
        let s = &r.stats;
        let raw = s.data_pages * PAGE_SIZE as u64;
        LayerRow {
            id: r.id,
            parent: r.parent,
            kind: format!("{:?}", r.kind).to_lowercase(),
            file: r.file.clone(),
            created_unix_ms: r.created_unix_ms,
            bytes: r.bytes,
            dirty_pages: s.dirty_pages,
            data_pages: s.data_pages,
            zero_pages: s.zero_pages,
            unpopulated_pages: s.unpopulated_pages,
            evicted_pages: s.evicted.values().sum(),
            evicted: s.evicted.clone(),
            rounds: s.rounds,
            notes: s.notes.clone(),
            downtime_ms: s.downtime_us as f64 / 1e3,
            compression_ratio: if r.bytes > 0 {
                raw as f64 / r.bytes as f64
            } else {
                0.0
            },
        }
    }
}

/// One chain (and its running domain, if any) as `list` shows it.
#[derive(Debug, Serialize)]
struct ChainRow {
    name: String,
    domid: Option<u32>,
    guest_type: Option<xckpt::hv::GuestType>,
    layers: usize,
    head: Option<u64>,
    bytes: u64,
    tracking: bool,
}

impl ListCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match (&self.domain, &self.group) {
            (_, Some(g)) => self.list_group(&open_existing(&self.store)?, g),
            (None, None) => self.list_chains(),
            (Some(d), None) => self.list_layers(&open_existing(&self.store)?, d),
        }
    }

    /// The points of group `name`, each with the members that are gone; then the disks of its
    /// last restore across hosts and how far their copies are.
    fn list_group(&self, store: &Store, name: &str) -> anyhow::Result<ExitCode> {
        let gdir = GroupDir::open(store.root(), name)?;
        let m = gdir.manifest()?;
        let copies = gdir.copies()?;
        if m.points.is_empty() && !GroupDir::list(store.root())?.contains(&m.name) {
            bail!(
                "no group {name} in {}: take one with `xckpt checkpoint --group {name} DOM...`",
                store.root().display()
            );
        }
        let at = |g: &GroupMember| format!("{}@{}", g.chain, g.layer);
        let mut rows = Vec::new();
        for p in &m.points {
            rows.push(GroupRow {
                id: p.id,
                instant_unix_ms: p.instant_unix_ms,
                skew_ms: p.skew_us as f64 / 1e3,
                members: p.members.iter().map(at).collect(),
                missing: p.missing(store)?.into_iter().map(at).collect(),
            });
        }
        if self.json {
            let doc = serde_json::json!({ "group": name, "points": rows, "disk_copies": copies });
            print_json(&doc)?;
            return Ok(ExitCode::SUCCESS);
        }
        let now_ms = xckpt::store::unix_ms();
        println!(
            "{:>5} {:>10} {:>9}  {:<11} MEMBERS",
            "POINT", "AGE", "SKEW", "RESTORABLE"
        );
        for r in rows {
            let age_s = now_ms.saturating_sub(r.instant_unix_ms) / 1000;
            let age = format!("{}h{:02}m{:02}s", age_s / 3600, age_s / 60 % 60, age_s % 60);
            let ok = if r.missing.is_empty() { "yes" } else { "no" };
            let gone = if r.missing.is_empty() {
                String::new()
            } else {
                format!(" (gone: {})", r.missing.join(" "))
            };
            println!(
                "{:>5} {:>10} {:>7.2}ms  {:<11} {}{gone}",
                r.id,
                age,
                r.skew_ms,
                ok,
                r.members.join(" ")
            );
        }
        for c in &copies {
            println!("{}", c.describe());
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Running domains (from Xen, unless --offline) joined with the store's chains.
    fn list_chains(&self) -> anyhow::Result<ExitCode> {
        let (domains, offline) = if self.offline {
            (Vec::new(), true)
        } else {
            match xckpt::backend::xen::list_domains() {
                Ok(d) => (d, false),
                // A host that holds a copied store need not run Xen: list the store alone.
                Err(e) => {
                    super::note(&format!(
                        "no running domains listed ({e}); the store only, as with --offline"
                    ));
                    (Vec::new(), true)
                }
            }
        };
        let store = if self.store.store.exists() {
            Some(Store::open(&self.store.store)?)
        } else {
            None
        };
        let chains = match &store {
            Some(s) => s.chains()?,
            None => Vec::new(),
        };
        let mut names = chains.clone();
        names.extend(domains.iter().map(|d| d.identity.name.clone()));
        names.sort();
        names.dedup();
        let mut rows = Vec::new();
        for name in names {
            let m = match &store {
                Some(s) if chains.contains(&name) => s.chain(&name)?.manifest()?,
                _ => Default::default(),
            };
            let dom = domains.iter().find(|d| d.identity.name == name);
            rows.push(ChainRow {
                domid: dom.map(|d| d.identity.domid),
                guest_type: dom.map(|d| d.guest_type),
                layers: m.layers.len(),
                head: m.layers.last().map(|l| l.id),
                bytes: m
                    .layers
                    .iter()
                    .fold(0, |a: u64, l| a.saturating_add(l.bytes)),
                tracking: m.tracking.as_ref().is_some_and(|t| t.armed),
                name,
            });
        }
        if self.json {
            print_json(&serde_json::json!({ "chains": rows, "offline": offline }))?;
            return Ok(ExitCode::SUCCESS);
        }
        let cols = ["NAME", "ID", "TYPE", "LAYERS", "HEAD", "BYTES", "TRACKING"];
        println!(
            "{:<24} {:>5} {:<5} {:>6} {:>6} {:>12} {:>8}",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6]
        );
        for r in rows {
            let head = r.head.map_or("-".into(), |h| h.to_string());
            let id = r.domid.map_or("-".into(), |d| d.to_string());
            let ty = r
                .guest_type
                .map_or("-".into(), |t| format!("{t:?}").to_lowercase());
            println!(
                "{:<24} {:>5} {:<5} {:>6} {:>6} {:>12} {:>8}",
                r.name, id, ty, r.layers, head, r.bytes, r.tracking
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    fn list_layers(&self, store: &Store, name: &str) -> anyhow::Result<ExitCode> {
        let m = store.chain(name)?.manifest()?;
        let rows: Vec<LayerRow> = m.layers.iter().map(LayerRow::from).collect();
        if self.json {
            print_json(
                &serde_json::json!({ "chain": name, "layers": rows, "tracking": m.tracking }),
            )?;
        } else {
            println!(
                "{:>5} {:>6} {:<11} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6}",
                "LAYER",
                "PARENT",
                "KIND",
                "BYTES",
                "DIRTY",
                "DATA",
                "ZERO",
                "EVICTED",
                "DOWNTIME",
                "RATIO"
            );
            for r in rows {
                println!(
                    "{:>5} {:>6} {:<11} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8.1}ms {:>6.2}",
                    r.id,
                    r.parent.map_or("-".into(), |p| p.to_string()),
                    r.kind,
                    r.bytes,
                    r.dirty_pages,
                    r.data_pages,
                    r.zero_pages,
                    r.evicted_pages,
                    r.downtime_ms,
                    r.compression_ratio
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `xckpt inspect DOM[@N]`
#[derive(Debug, Args)]
pub struct InspectCmd {
    #[command(flatten)]
    store: StoreArg,
    /// Chain and layer (the newest if no @N).
    target: Target,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    key: KeyArg,
}

impl InspectCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = open_existing(&self.store)?;
        let chain = store
            .chain(&self.target.name)?
            .with_key(self.key.key(&self.target.name)?);
        let m = chain.manifest()?;
        let id = match self.target.layer {
            Some(id) => id,
            None => m.layers.last().map(|l| l.id).with_context(|| {
                format!(
                    "chain {} has no layers: take one with `xckpt checkpoint {}`",
                    self.target.name, self.target.name
                )
            })?,
        };
        let layer = chain.open_layer(id)?;
        let meta = layer.meta();
        let counts = layer.index().counts();
        let state: Vec<_> = layer
            .state()
            .iter()
            .map(|b| serde_json::json!({"kind": b.kind, "bytes": b.data.len()}))
            .collect();
        let f = layer.figures();
        let mut evicted = std::collections::BTreeMap::new();
        for (_, e, _) in layer.index().iter() {
            if let xckpt::layer::PageEntry::Evicted(p) = e {
                *evicted.entry(p).or_insert(0u64) += 1;
            }
        }
        let raw = f.live_slots * PAGE_SIZE as u64;
        let v = serde_json::json!({
            "chain": self.target.name,
            "layer": meta,
            "file": layer.path(),
            "file_bytes": layer.file_bytes(),
            "index": {"data": counts.data, "zero": counts.zero, "evicted": counts.evicted, "unpopulated": counts.unpopulated, "evicted_by_policy": evicted},
            "frames": {"count": f.frames, "raw": f.raw_frames, "bytes": f.frame_bytes, "slots": f.slots, "live_slots": f.live_slots, "dead_slots": f.dead_slots},
            "compression_ratio": if f.frame_bytes > 0 { raw as f64 / f.frame_bytes as f64 } else { 0.0 },
            "encoding": {
                "mode": meta.stats.encoding.as_ref().map_or("(not recorded: written before --compress)", |e| e.mode.as_str()),
                "level": meta.compress_level,
                "zstd_frames": f.frames - f.raw_frames,
                "raw_frames": f.raw_frames,
            },
            "downtime_ms": meta.stats.downtime_us as f64 / 1e3,
            "state_blobs": state,
            "config_bytes": layer.config().len(),
        });
        if self.json {
            print_json(&v)?;
        } else {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `xckpt verify DOM[@N] [--deep]`
///
/// Exit status: 0 the chain verifies; 2 a layer or the chain's links are damaged (the message
/// names the layer and what to do); 1 the store or manifest cannot be read.
#[derive(Debug, Args)]
pub struct VerifyCmd {
    #[command(flatten)]
    store: StoreArg,
    /// Chain, and the point to verify up to (all layers if no @N).
    target: Target,
    /// Also compose every point and check each page against the digest stored at capture.
    #[arg(long)]
    deep: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    key: KeyArg,
}

/// Exit status of `verify` for a damaged chain.
pub const EXIT_DAMAGED: u8 = 2;

impl VerifyCmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let store = open_existing(&self.store)?;
        let chain = store
            .chain(&self.target.name)?
            .with_key(self.key.key(&self.target.name)?);
        let result = if self.deep {
            chain.verify_deep(self.target.layer)
        } else {
            chain.verify(self.target.layer)
        };
        let report = match result {
            Ok(r) => r,
            Err(ChainVerifyError::Store(e)) => return Err(e.into()),
            Err(e) => {
                if self.json {
                    print_json(&serde_json::json!({
                        "chain": self.target.name, "ok": false, "error": e.to_string(),
                        "bad_layer": bad_layer(&e),
                    }))?;
                }
                eprintln!("xckpt: {e}");
                return Ok(ExitCode::from(EXIT_DAMAGED));
            }
        };
        let path: Vec<String> = report.path.iter().map(|id| id.to_string()).collect();
        if self.json {
            print_json(&serde_json::json!({
                "chain": report.chain, "top": report.top, "path": report.path,
                "layers_checked": report.layers.len(), "deep": self.deep,
                "points": report.points, "ok": true,
            }))?;
        } else {
            println!(
                "chain {}: OK up to layer {} ({} layers checked{}; restore path {})",
                report.chain,
                report.top,
                report.layers.len(),
                if self.deep {
                    format!(
                        ", {} points composed and digest-checked",
                        report.points.len()
                    )
                } else {
                    String::new()
                },
                path.join(" -> ")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The layer a verify failure names.
fn bad_layer(e: &ChainVerifyError) -> Option<u64> {
    match e {
        ChainVerifyError::Store(_) => None,
        ChainVerifyError::Layer { id, .. }
        | ChainVerifyError::Mismatch { id, .. }
        | ChainVerifyError::BrokenLink { id, .. }
        | ChainVerifyError::NoBase { id, .. }
        | ChainVerifyError::Compose { id, .. } => Some(*id),
        ChainVerifyError::PageDigest { layer, .. } => Some(*layer),
    }
}

/// Open the store for reading: a missing store is an error, not created.
pub fn open_existing(store: &StoreArg) -> anyhow::Result<Store> {
    if !store.store.exists() {
        anyhow::bail!(
            "no store at {}: take a checkpoint first, or point --store at the right directory",
            store.store.display()
        );
    }
    Ok(Store::open(&store.store)?)
}
