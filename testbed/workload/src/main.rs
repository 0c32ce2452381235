//! Self-verifying guest workload for the xckpt test bed.
//!
//! `workload [run]` fills `WL_MIB` MiB with pages derived from (page index, generation) plus a
//! per-page checksum, rewrites `WL_RATE` pages/s (`WL_PATTERN` uniform | hot | sequential),
//! verifies the whole buffer every `WL_SWEEP_S` seconds, and prints once per `WL_TICK_MS`:
//!
//! ```text
//! TICK n gen=G bad=B sweeps=S gap_ms=X mgap_ms=Y maxgap_ms=Z used_kib=U
//! ```
//!
//! `gap_ms` is the longest gap between loop iterations since the previous tick on
//! `CLOCK_BOOTTIME` (counts pauses and save/restore suspends); `mgap_ms` the same on
//! `CLOCK_MONOTONIC` (does not count a save/restore suspend). `bad` counts corrupted pages
//! seen since start; each is also printed as a `BAD` line.
//!
//! With `WL_PP_ROLE` it also plays ping-pong with a peer guest ([`pingpong`]); with `WL_DLOG`
//! it appends checksummed records to a file on a disk ([`dlog`]).
//!
//! `workload scan FILE PAGES` counts workload pages in a save image; `workload corrupt FILE [NTH]`
//! flips one byte of one of them (the test bed's corrupted-restore self-test). `workload burst`
//! allocates memory right after each xckpt-agent report (see burst.rs).

mod burst;
mod clock;
mod config;
mod corrupt;
mod dlog;
mod page;
mod pingpong;
mod run;

fn usage() -> i32 {
    eprintln!(
        "usage: workload [run] | scan FILE PAGES | corrupt FILE [NTH] | dlog-check FILE | meminfo | burst FILE MIB"
    );
    2
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => {
            pingpong::spawn_from_env();
            dlog::spawn_from_env();
            run::run(config::Config::from_env())
        }
        ["dlog-check", file] => dlog::check_cmd(file),
        ["scan", file, pages] => match pages.parse() {
            Ok(n) => corrupt::scan_cmd(file, n),
            Err(_) => usage(),
        },
        ["corrupt", file] => corrupt::corrupt_cmd(file, 0),
        ["corrupt", file, nth] => match nth.parse() {
            Ok(n) => corrupt::corrupt_cmd(file, n),
            Err(_) => usage(),
        },
        ["burst", file, mib] => match mib.parse() {
            Ok(m) => burst::burst(file, m),
            Err(_) => usage(),
        },
        ["meminfo"] => {
            println!("MEMINFO used_kib={}", run::used_kib());
            0
        }
        _ => usage(),
    };
    std::process::exit(code);
}
