//! xckpt-agent: answers xckpt's request in the guest's xenstore area with the guest frames
//! that are free in the Linux page allocator (docs/eviction.md).
//!
//! ```text
//! start:    write data/xckpt/agent = "xckpt-agent 1"
//! loop:     read data/xckpt/request = "NONCE free|cache" (polled every 100 ms)
//!   cache:  scan; echo 1 > /proc/sys/vm/drop_caches; scan again
//!   report: data/xckpt/report/{free,cache}/<i>  (run text, <= 1900 bytes each)
//!   last:   data/xckpt/reply = "NONCE free_chunks=.. cache_chunks=.. total_kib=.. free_kib=.."
//! ```
//! It talks to xenstore through `/dev/xen/xenbus` (no xenstored in the guest) and uses paths
//! relative to the guest's home `/local/domain/<id>`.
//!
//! `xckpt-agent [--notify FILE]` serves (FILE gets each answered nonce); `xckpt-agent --scan`
//! prints what a report would hold.

mod free;
mod kcore;
mod meminfo;
mod report;

use std::process::ExitCode;
use std::time::Duration;

use xenstore_rs::Xs;

/// Protocol version, in `data/xckpt/agent`.
const HELLO: &str = "xckpt-agent 1";
const POLL: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let once = std::env::args().any(|a| a == "--scan");
    if once {
        // Diagnostics: print what a report would hold.
        return match free::scan() {
            Ok(s) => {
                println!(
                    "free pages {} in {} runs (block orders from {})",
                    s.pages(),
                    s.runs.len(),
                    s.orders
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xckpt-agent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().collect();
    let notify = args
        .iter()
        .position(|a| a == "--notify")
        .and_then(|i| args.get(i + 1).cloned());
    match serve(notify.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xckpt-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(notify: Option<&str>) -> Result<(), String> {
    let xs = xenstore_rs::unix::XsUnix::new()
        .map_err(|e| format!("cannot open xenstore (/dev/xen/xenbus): {e}"))?;
    xs.write("data/xckpt/agent", HELLO)
        .map_err(|e| format!("cannot write data/xckpt/agent: {e}"))?;
    eprintln!("xckpt-agent: ready");
    let mut last = String::new();
    loop {
        std::thread::sleep(POLL);
        // After a restore or migration the domain's xenstore area is new: register again.
        if xs.read("data/xckpt/agent").is_err() {
            let _ = xs.write("data/xckpt/agent", HELLO);
        }
        let Ok(req) = xs.read("data/xckpt/request") else {
            continue;
        };
        let mut words = req.split_whitespace();
        let (Some(nonce), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        if nonce == last {
            continue;
        }
        last = nonce.to_string();
        let line = match report::answer(&xs, what == "cache") {
            Ok(fields) => format!("{nonce} {fields}"),
            Err(e) => format!("{nonce} error={}", e.replace(char::is_whitespace, "_")),
        };
        if let Err(e) = xs.write("data/xckpt/reply", &line) {
            eprintln!("xckpt-agent: cannot write data/xckpt/reply: {e}");
        }
        eprintln!("xckpt-agent: answered {line}");
        if let Some(f) = notify {
            // For scripts that act after a report (the test bed's allocation burst).
            let _ = std::fs::write(f, nonce);
        }
    }
}
