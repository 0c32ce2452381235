//! What an operator sees from `xckpt checkpoint` (on the sim: the hidden `--sim SIZE`): progress
//! drawn on a terminal that ends at the true totals, nothing but the summary off a terminal,
//! `--progress json` events, and the Prometheus textfile a periodic checkpoint leaves.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

/// `xckpt ARGS --store STORE`, stdin closed.
fn xckpt(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xckpt"));
    c.args(args)
        .arg("--store")
        .arg(store)
        .env_remove("XCKPT_STORE")
        .env_remove("XCKPT_CONFIG")
        .stdin(Stdio::null());
    c
}

/// Text as a terminal shows it, without escape sequences and carriage returns.
fn plain(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

/// Run `cmd` with stderr on a pseudo-terminal of 160 columns; (status, stdout, terminal).
fn on_terminal(mut cmd: Command) -> (std::process::ExitStatus, String, Vec<u8>) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pty");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let size = rustix::termios::Winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&slave, size).unwrap();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .env("TERM", "xterm")
        .spawn()
        .unwrap();
    drop(cmd);
    // The only open end of the slave is the child's: reading ends (EIO) when it exits.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let out = child.wait_with_output().unwrap();
    let term = reader.join().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        term,
    )
}

#[test]
fn progress_is_drawn_on_a_terminal_and_ends_at_the_true_totals() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cmd = xckpt(
        &store,
        &[
            "checkpoint",
            "--sim",
            "256M",
            "--json",
            "--threads",
            "1",
            "g",
        ],
    );
    let (status, stdout, term) = on_terminal(cmd);
    let shown = plain(&term);
    assert!(status.success(), "{stdout}\n{shown}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // Bars were drawn: a round's bar with its byte counts and an estimate.
    assert!(
        shown.contains("round 0") && shown.contains("eta"),
        "no bar drawn:\n{shown}"
    );
    // Each live round's line gives the pages the report counts.
    let rounds = report["rounds"].as_array().unwrap();
    for r in rounds.iter().filter(|r| r["paused"] == false) {
        let line = format!("g: round {}: {} pages sent", r["round"], r["pages"]);
        assert!(shown.contains(&line), "missing {line:?} in:\n{shown}");
    }
    let downtime = report["downtime_ms"].as_f64().unwrap();
    assert!(
        shown.contains(&format!("g: stopped for {downtime:.2} ms")),
        "downtime {downtime:.2} not shown:\n{shown}"
    );
    // The write-behind ends at the pages of the paused round.
    let paused = rounds.iter().find(|r| r["paused"] == true).unwrap();
    let wb = format!("g: write-behind: {} pages", paused["pages"]);
    assert!(shown.contains(&wb), "missing {wb:?} in:\n{shown}");
    // The bars are cleared at the end: the last thing on the terminal is a finished line.
    let last = shown
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(last.starts_with("g: "), "last terminal line {last:?}");
}

#[test]
fn off_a_terminal_the_output_is_exactly_the_summary_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for expect_kind in ["(Base)", "(Resync)"] {
        let out = xckpt(&store, &["checkpoint", "--sim", "64M", "g"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr, "", "stderr is not a terminal: nothing there");
        let lines: Vec<&str> = stdout.lines().collect();
        let notes = lines.iter().filter(|l| l.starts_with("  note: ")).count();
        assert_eq!(lines.len(), 1 + notes, "{stdout}");
        let s = lines[0];
        assert!(
            s.starts_with("g: layer ") && s.contains(expect_kind) && s.ends_with(" ms"),
            "{s}"
        );
        // --quiet changes nothing here either.
    }
    let out = xckpt(&store, &["--quiet", "list", "g"]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
}

#[test]
fn progress_json_is_one_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = xckpt(
        &store,
        &[
            "checkpoint",
            "--sim",
            "64M",
            "--json",
            "--progress",
            "json",
            "g",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for k in ["start", "finish", "dirty", "paused", "resumed"] {
        assert!(kinds.contains(&k), "no {k} event: {kinds:?}");
    }
    // Each round's finish gives the pages the report counts.
    for r in report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["paused"] == false)
    {
        assert!(
            events.iter().any(|e| e["event"] == "finish"
                && e["task"] == "round"
                && e["n"] == r["round"]
                && e["done"] == r["pages"]),
            "round {r} not finished in the events"
        );
    }
    let resumed = events.iter().find(|e| e["event"] == "resumed").unwrap();
    let ms = resumed["downtime_ms"].as_f64().unwrap();
    assert!((ms - report["downtime_ms"].as_f64().unwrap()).abs() < 1e-6);
}

/// The samples of `text` by metric name, as an independent parser reads them.
fn scrape(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

fn sample(s: &prometheus_parse::Scrape, name: &str) -> f64 {
    let found: Vec<_> = s.samples.iter().filter(|x| x.metric == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    assert_eq!(found[0].labels.get("domain"), Some("g"));
    match found[0].value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

/// Every sample line parsed, each metric documented, the failure counter typed a counter.
fn check_format(text: &str) -> prometheus_parse::Scrape {
    let s = scrape(text);
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        s.samples.len(),
        lines,
        "a sample line was not parsed:\n{text}"
    );
    for x in &s.samples {
        assert!(s.docs.contains_key(&x.metric), "no HELP for {}", x.metric);
    }
    let fails = s
        .samples
        .iter()
        .find(|x| x.metric == "xckpt_failures_total");
    assert!(matches!(
        fails.map(|x| &x.value),
        Some(prometheus_parse::Value::Counter(_))
    ));
    s
}

#[test]
fn metrics_textfile_keeps_the_last_success_and_counts_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let prom = dir.path().join("xckpt.prom");
    let p = prom.to_str().unwrap();
    let mut last = None;
    for _ in 0..2 {
        let out = xckpt(
            &store,
            &[
                "checkpoint",
                "--sim",
                "32M",
                "--json",
                "g",
                "--metrics-file",
                p,
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success());
        last = Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
    }
    let report = last.unwrap();
    let text = std::fs::read_to_string(&prom).unwrap();
    let s = check_format(&text);
    let bytes = report["layer"]["bytes"].as_f64().unwrap();
    assert_eq!(sample(&s, "xckpt_last_layer_bytes"), bytes);
    let on_disk = std::fs::metadata(
        store
            .join("g")
            .join(report["layer"]["file"].as_str().unwrap()),
    )
    .unwrap()
    .len();
    assert_eq!(bytes, on_disk as f64);
    let down = report["downtime_ms"].as_f64().unwrap() / 1e3;
    assert!((sample(&s, "xckpt_last_downtime_seconds") - down).abs() < 1e-9);
    assert_eq!(sample(&s, "xckpt_failures_total"), 0.0);
    assert_eq!(sample(&s, "xckpt_chain_layers"), 2.0);
    let ok_ts = sample(&s, "xckpt_last_success_timestamp_seconds");
    // A failure: the store is a file.
    let not_a_store = dir.path().join("file");
    std::fs::write(&not_a_store, b"x").unwrap();
    let out = xckpt(
        &not_a_store,
        &["checkpoint", "--sim", "32M", "g", "--metrics-file", p],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&prom).unwrap();
    let s = check_format(&text);
    assert_eq!(sample(&s, "xckpt_failures_total"), 1.0);
    assert_eq!(sample(&s, "xckpt_last_run_success"), 0.0);
    assert_eq!(sample(&s, "xckpt_last_layer_bytes"), bytes);
    assert_eq!(sample(&s, "xckpt_last_success_timestamp_seconds"), ok_ts);
    assert_eq!(sample(&s, "xckpt_chain_layers"), 2.0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must read it");
}

/// The file an `ops-metrics` test bed run printed (`PROM| ` lines of its serial log), when
/// `XCKPT_PROM_LOG` names that log: parsed the same way.
#[test]
fn metrics_textfile_from_the_test_bed_parses() {
    let Some(log) = std::env::var_os("XCKPT_PROM_LOG") else {
        eprintln!("skipped: XCKPT_PROM_LOG not set");
        return;
    };
    let text: String = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("PROM| ").map(|(_, r)| format!("{r}\n")))
        .collect();
    assert!(!text.is_empty(), "no PROM| lines in the log");
    let s = scrape(&text);
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        s.samples.len(),
        lines,
        "a sample line was not parsed:\n{text}"
    );
    assert!(s.samples.iter().any(|x| x.metric == "xckpt_failures_total"
        && matches!(x.value, prometheus_parse::Value::Counter(v) if v >= 1.0)));
}
