//! What a periodic checkpoint leaves for monitoring: a Prometheus node_exporter textfile
//! (`--metrics-file`, or `metrics_file` in /etc/xckpt.toml) and, when journald runs, one
//! journal entry with structured fields.
//!
//! The textfile holds one sample of each metric per domain. It is rewritten after every run,
//! successful or not: the figures of the last success stay until the next success, and
//! `xckpt_failures_total` is the previous file's count plus one on a failure, so the counter
//! lives in the file itself. The rewrite holds an exclusive lock on `FILE.lock` (units of
//! several domains may end at once), writes `FILE.tmp`, fsyncs and renames it into place, so
//! node_exporter never reads half a file. Mode 0644: the figures are not secret and
//! node_exporter does not run as root.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use xckpt::capture::CaptureReport;
use xckpt::store::Manifest;

/// The metrics of one domain, in the order they are written.
#[derive(Debug, Clone, Default, PartialEq)]
struct DomainMetrics {
    last_success_timestamp_seconds: Option<f64>,
    last_layer_bytes: Option<f64>,
    last_downtime_seconds: Option<f64>,
    failures_total: f64,
    chain_layers: Option<f64>,
    chain_bytes: Option<f64>,
    last_run_timestamp_seconds: Option<f64>,
    last_run_success: Option<f64>,
}

/// (name, kind, help) of each metric.
const METRICS: [(&str, &str, &str); 8] = [
    (
        "xckpt_last_success_timestamp_seconds",
        "gauge",
        "Unix time at which the last successful checkpoint of the domain finished.",
    ),
    (
        "xckpt_last_layer_bytes",
        "gauge",
        "Size of the layer the last successful checkpoint wrote, in bytes.",
    ),
    (
        "xckpt_last_downtime_seconds",
        "gauge",
        "How long the last successful checkpoint kept the domain stopped, in seconds.",
    ),
    (
        "xckpt_failures_total",
        "counter",
        "Checkpoints of the domain that failed.",
    ),
    (
        "xckpt_chain_layers",
        "gauge",
        "Layers in the domain's chain after the last run.",
    ),
    (
        "xckpt_chain_bytes",
        "gauge",
        "Bytes of the domain's chain after the last run.",
    ),
    (
        "xckpt_last_run_timestamp_seconds",
        "gauge",
        "Unix time at which the last checkpoint run of the domain ended.",
    ),
    (
        "xckpt_last_run_success",
        "gauge",
        "1 if the last checkpoint run of the domain succeeded, else 0.",
    ),
];

impl DomainMetrics {
    fn slot(&mut self, name: &str) -> Option<&mut Option<f64>> {
        Some(match name {
            "xckpt_last_success_timestamp_seconds" => &mut self.last_success_timestamp_seconds,
            "xckpt_last_layer_bytes" => &mut self.last_layer_bytes,
            "xckpt_last_downtime_seconds" => &mut self.last_downtime_seconds,
            "xckpt_chain_layers" => &mut self.chain_layers,
            "xckpt_chain_bytes" => &mut self.chain_bytes,
            "xckpt_last_run_timestamp_seconds" => &mut self.last_run_timestamp_seconds,
            "xckpt_last_run_success" => &mut self.last_run_success,
            _ => return None,
        })
    }

    fn value(&self, name: &str) -> Option<f64> {
        match name {
            "xckpt_failures_total" => Some(self.failures_total),
            other => self.clone().slot(other).and_then(|v| *v),
        }
    }

    fn set(&mut self, name: &str, v: f64) {
        if name == "xckpt_failures_total" {
            self.failures_total = v;
        } else if let Some(slot) = self.slot(name) {
            *slot = Some(v);
        }
    }
}

/// Escape a label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The samples of a previous file (ours), by domain. Lines it does not know are dropped.
fn parse(text: &str) -> BTreeMap<String, DomainMetrics> {
    let mut all: BTreeMap<String, DomainMetrics> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once("{domain=\"") else {
            continue;
        };
        let Some((label, value)) = rest.rsplit_once("\"} ") else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        if METRICS.iter().any(|(n, _, _)| *n == name) {
            all.entry(unescape(label)).or_default().set(name, v);
        }
    }
    all
}

/// The file's text for `all`.
fn render(all: &BTreeMap<String, DomainMetrics>) -> String {
    let mut out = String::new();
    for (name, kind, help) in METRICS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (domain, m) in all {
            if let Some(v) = m.value(name) {
                out.push_str(&format!("{name}{{domain=\"{}\"}} {v}\n", escape(domain)));
            }
        }
    }
    out
}

/// How one checkpoint run ended.
pub enum Outcome<'a> {
    /// The layer was committed.
    Success(&'a CaptureReport),
    /// It failed; the chain is unchanged.
    Failure(&'a anyhow::Error),
}

fn now_s() -> f64 {
    xckpt::store::unix_ms() as f64 / 1e3
}

/// Update `path` with the run of `domain`; `chain` is the chain's manifest after the run, if it
/// could be read.
pub fn record(
    path: &Path,
    domain: &str,
    outcome: &Outcome<'_>,
    chain: Option<&Manifest>,
) -> anyhow::Result<()> {
    let lock_path = path.with_extension("prom.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut all = parse(&old);
    let m = all.entry(domain.to_string()).or_default();
    let now = now_s();
    m.last_run_timestamp_seconds = Some(now);
    match outcome {
        Outcome::Success(r) => {
            m.last_success_timestamp_seconds = Some(now);
            m.last_layer_bytes = Some(r.layer.bytes as f64);
            m.last_downtime_seconds = Some(r.downtime.as_secs_f64());
            m.last_run_success = Some(1.0);
        }
        Outcome::Failure(_) => {
            m.failures_total += 1.0;
            m.last_run_success = Some(0.0);
        }
    }
    if let Some(c) = chain {
        m.chain_layers = Some(c.layers.len() as f64);
        m.chain_bytes = Some(c.layers.iter().map(|l| l.bytes).sum::<u64>() as f64);
    }
    let tmp = path.with_extension("prom.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    // The unit's UMask=0077 would make it 0600: node_exporter must read it.
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.write_all(render(&all).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// The journald socket of the native protocol.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// One journal entry for the run, with structured `XCKPT_*` fields, when journald runs.
/// Errors are ignored: the journal is a convenience, the summary line is on stdout.
pub fn journal(domain: &str, outcome: &Outcome<'_>, chain: Option<&Manifest>) {
    journal_to(Path::new(JOURNAL_SOCKET), domain, outcome, chain)
}

fn journal_to(socket: &Path, domain: &str, outcome: &Outcome<'_>, chain: Option<&Manifest>) {
    if !socket.exists() {
        return;
    }
    let mut fields: Vec<(&str, String)> = vec![
        ("SYSLOG_IDENTIFIER", "xckpt".into()),
        ("XCKPT_DOMAIN", domain.into()),
    ];
    match outcome {
        Outcome::Success(r) => {
            fields.push((
                "MESSAGE",
                format!(
                    "{domain}: checkpoint layer {} ({:?}) {} bytes, downtime {:.2} ms",
                    r.layer.id,
                    r.layer.kind,
                    r.layer.bytes,
                    r.downtime.as_secs_f64() * 1e3
                ),
            ));
            fields.push(("PRIORITY", "6".into()));
            fields.push(("XCKPT_RESULT", "success".into()));
            fields.push(("XCKPT_LAYER", r.layer.id.to_string()));
            fields.push((
                "XCKPT_LAYER_KIND",
                format!("{:?}", r.layer.kind).to_lowercase(),
            ));
            fields.push(("XCKPT_LAYER_BYTES", r.layer.bytes.to_string()));
            fields.push((
                "XCKPT_DOWNTIME_MS",
                format!("{:.3}", r.downtime.as_secs_f64() * 1e3),
            ));
            fields.push(("XCKPT_ROUNDS", r.rounds.len().to_string()));
        }
        Outcome::Failure(e) => {
            fields.push(("MESSAGE", format!("{domain}: checkpoint failed: {e:#}")));
            fields.push(("PRIORITY", "3".into()));
            fields.push(("XCKPT_RESULT", "failure".into()));
            fields.push(("XCKPT_ERROR", format!("{e:#}")));
        }
    }
    if let Some(c) = chain {
        fields.push(("XCKPT_CHAIN_LAYERS", c.layers.len().to_string()));
        let bytes: u64 = c.layers.iter().fold(0, |a, l| a.saturating_add(l.bytes));
        fields.push(("XCKPT_CHAIN_BYTES", bytes.to_string()));
    }
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.send_to(&journal_datagram(&fields), socket);
    }
}

/// The native journal protocol: `KEY=value\n`, or for a value with a newline
/// `KEY\n<u64 little-endian length>value\n`.
fn journal_datagram(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        if v.contains('\n') {
            out.extend_from_slice(k.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        } else {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
        }
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse_keeps_every_domain() {
        let mut all = BTreeMap::new();
        let mut a = DomainMetrics {
            failures_total: 2.0,
            ..Default::default()
        };
        a.set("xckpt_last_layer_bytes", 4096.0);
        a.set("xckpt_last_success_timestamp_seconds", 1764670000.5);
        all.insert("web\"1".to_string(), a);
        all.insert("db".to_string(), DomainMetrics::default());
        let text = render(&all);
        assert!(
            text.contains("xckpt_failures_total{domain=\"web\\\"1\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE xckpt_failures_total counter\n"));
        assert_eq!(parse(&text), all);
    }

    #[test]
    fn a_failure_reaches_the_journal_socket_with_its_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let err = anyhow::anyhow!("store is read-only");
        let chain = Manifest::default();
        journal_to(&path, "web1", &Outcome::Failure(&err), Some(&chain));
        let mut buf = vec![0u8; 65536];
        let n = journald.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        for field in [
            "SYSLOG_IDENTIFIER=xckpt\n",
            "XCKPT_DOMAIN=web1\n",
            "XCKPT_RESULT=failure\n",
            "PRIORITY=3\n",
            "XCKPT_ERROR=store is read-only\n",
            "XCKPT_CHAIN_LAYERS=0\n",
        ] {
            assert!(text.contains(field), "{field:?} missing in {text:?}");
        }
    }

    #[test]
    fn journal_fields_with_newlines_use_the_binary_form() {
        let d = journal_datagram(&[("A", "x".into()), ("B", "1\n2".into())]);
        let mut want = b"A=x\nB\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"1\n2\n");
        assert_eq!(d, want);
    }
}
