//! Crash points for crash-safety tests.
//!
//! Every write point of the layer writer and the store calls [`failpoint`] with a name. When the
//! environment variable `XCKPT_FAILPOINT` is `name` (first hit) or `name:N` (the N-th hit, 1-based),
//! the process aborts on the spot, as `kill -9` would: no destructors, no flush, no cleanup. Tests
//! run a child process with the variable set and then check that the chain is still readable.
//!
//! The variables are read once per process. When both are unset a failpoint costs two atomic
//! loads.
//!
//! With `XCKPT_FAILPOINT_LOG=FILE`, every failpoint reached appends its name as a line to FILE.
//! A test runs an operation once with it to learn the sequence of points, then kills a child at
//! each `name:N` of that sequence in turn, so that no point is left out.
//!
//! Names in use:
//!
//! | name                      | where                                                   |
//! |---------------------------|---------------------------------------------------------|
//! | `layer.create`            | temp layer file created, preamble not yet written       |
//! | `layer.frame`             | before each frame is written                            |
//! | `layer.sections.before`   | all frames written, before the first section            |
//! | `layer.sections.after`    | sections written, before the section table and trailer |
//! | `layer.trailer`           | before the trailer is written                           |
//! | `layer.rename.before`     | file complete and synced, before rename to its name     |
//! | `layer.rename.after`      | renamed and directory synced, before the manifest      |
//! | `manifest.temp`           | manifest temp file half written                         |
//! | `manifest.rename.before`  | manifest temp file synced, before rename                |
//! | `manifest.rename.after`   | manifest renamed, before the directory sync             |
//! | `capture.paused`          | a capture just paused the domain (the watchdog must act)  |
//! | `group.paused`            | a group's host paused its members, before the `Stopped` barrier (the other hosts must resume theirs) |
//! | `fold.written`            | merge/prune: a rewritten layer is in place, not yet listed |
//! | `rewrite.remove`          | merge/prune: manifest swapped, before removing each old file |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Environment variable naming the failpoint to trigger.
pub const ENV: &str = "XCKPT_FAILPOINT";
/// Environment variable naming a file to append the name of every failpoint reached to.
pub const LOG_ENV: &str = "XCKPT_FAILPOINT_LOG";

fn log() -> Option<&'static std::sync::Mutex<std::fs::File>> {
    static LOG: OnceLock<Option<std::sync::Mutex<std::fs::File>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let path = std::env::var_os(LOG_ENV)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(std::sync::Mutex::new(file))
    })
    .as_ref()
}

struct Armed {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED.get_or_init(parse_env).as_ref()
}

fn parse_env() -> Option<Armed> {
    let (name, nth) = parse(&std::env::var(ENV).ok()?);
    Some(Armed {
        name,
        nth,
        hits: AtomicU64::new(0),
    })
}

/// `name` or `name:N` (N >= 1) into the name and the hit that triggers.
fn parse(value: &str) -> (String, u64) {
    match value.rsplit_once(':') {
        Some((name, n)) => match n.parse::<u64>() {
            Ok(n) if n >= 1 => (name.to_string(), n),
            _ => (value.to_string(), 1),
        },
        None => (value.to_string(), 1),
    }
}

/// Abort the process here if `XCKPT_FAILPOINT` selects `name` (and this is the selected hit).
#[inline]
pub fn failpoint(name: &str) {
    if let Some(file) = log() {
        use std::io::Write;
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{name}");
    }
    let Some(armed) = armed() else { return };
    if armed.name != name {
        return;
    }
    let hit = armed.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if hit == armed.nth {
        eprintln!("xckpt: failpoint {name} (hit {hit}): aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn names_and_hit_numbers() {
        assert_eq!(parse("layer.frame"), ("layer.frame".to_string(), 1));
        assert_eq!(parse("layer.frame:3"), ("layer.frame".to_string(), 3));
        assert_eq!(parse("layer.frame:0"), ("layer.frame:0".to_string(), 1));
        assert_eq!(parse("a:b"), ("a:b".to_string(), 1));
    }
}
