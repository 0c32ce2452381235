//! Command-line verbs. Each verb lives in its own file; this one parses and dispatches.

mod bench;
mod bench_restore;
mod chainverbs;
mod cputime;
mod generate;
mod group;
mod limits;
mod metrics;
mod progress;
mod serve;
pub mod service;
mod settings;
mod show;
mod size;
mod target;
mod xenverbs;

pub use settings::{parse, KeyArg};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Live, incremental checkpoints of Xen guests, restored through stock libxl.
#[derive(Debug, Parser)]
#[command(name = "xckpt", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Configuration file: default store, and per domain retention, policies and key file
    /// [default: /etc/xckpt.toml if it exists].
    #[arg(long, global = true, env = "XCKPT_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print only results: no progress and no notes on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Progress on stderr: `auto` draws bars when stderr is a terminal; `json` prints one
    /// JSON object per event, one per line; `none` prints nothing.
    #[arg(long, global = true, value_enum, default_value_t = progress::ProgressMode::Auto)]
    progress: progress::ProgressMode,
}

/// Where the chains live.
#[derive(Debug, Clone, Args)]
pub struct StoreArg {
    /// Store directory (one chain per domain; created 0700).
    #[arg(long, env = "XCKPT_STORE", default_value = "/var/lib/xckpt")]
    pub store: PathBuf,
}

/// Tunables of a capture.
#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// Take a full base layer even if an incremental is possible.
    #[arg(long)]
    pub full: bool,
    /// Pause for the whole capture (like `xl save -c`) instead of live pre-copy.
    #[arg(long)]
    pub no_live: bool,
    /// Live pre-copy rounds at most.
    #[arg(long, default_value_t = 8)]
    pub max_rounds: u32,
    /// Pause once the estimated downtime is at most this many milliseconds.
    #[arg(long, default_value_t = 50)]
    pub target_downtime_ms: u64,
    /// Frame encoding: `auto` (zstd level 1 or raw, frame by frame, whichever keeps the
    /// compress workers and the writes both busy, measured as the capture runs), `none`, or a
    /// zstd level 1-19. Default: the config file's `compress`, else `auto`.
    #[arg(long, alias = "compress-level", value_name = "auto|none|LEVEL")]
    pub compress: Option<xckpt::layer::Encoding>,
    /// Compress worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl CaptureArgs {
    /// The library's options for these arguments (`[default]` of the config file).
    pub fn options(&self) -> xckpt::capture::CaptureOptions {
        self.options_for(None)
    }

    /// The library's options for these arguments, for chain `domain` (its config section).
    pub fn options_for(&self, domain: Option<&str>) -> xckpt::capture::CaptureOptions {
        let config = settings::config();
        let section = match domain {
            Some(d) => config.for_domain(d),
            None => config.default.clone(),
        };
        let encoding = self
            .compress
            .or_else(|| section.encoding())
            .unwrap_or(xckpt::layer::Encoding::Auto);
        let mut o = xckpt::capture::CaptureOptions {
            full: self.full,
            live: !self.no_live,
            compress_level: encoding.level(),
            compress: Some(encoding),
            ..Default::default()
        };
        o.policy.max_rounds = self.max_rounds;
        o.policy.target_downtime = std::time::Duration::from_millis(self.target_downtime_ms);
        if let Some(t) = self.threads {
            o.threads = t.max(1);
        }
        o
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take a live checkpoint of a domain (a base layer first, then incrementals).
    Checkpoint(xenverbs::CheckpointCmd),
    /// Restore a domain from a point of its chain through `xl restore`.
    Restore(xenverbs::RestoreCmd),
    /// Write a point of a chain as an `xl` save file.
    Export(xenverbs::ExportCmd),
    /// Import an `xl save` file as the base layer of a new chain.
    Import(xenverbs::ImportCmd),
    /// Turn log-dirty tracking of a domain off.
    Untrack(xenverbs::UntrackCmd),
    /// List chains, or the layers of one chain.
    List(show::ListCmd),
    /// Show one layer in detail.
    Inspect(show::InspectCmd),
    /// Check every checksum and link of a chain (or of one point); --deep composes every point.
    Verify(show::VerifyCmd),
    /// Squash layers 1..N of a chain into one base layer (crash-safe).
    Merge(chainverbs::MergeCmd),
    /// Drop points of a chain by a retention policy, folding their pages into kept layers.
    Prune(chainverbs::PruneCmd),
    /// Measure capture throughput and layer sizes on a simulated domain.
    Bench(bench::BenchCmd),
    /// Run the hypervisor conformance checks on a running domain (test bed).
    #[command(hide = true)]
    Selftest(xenverbs::SelftestCmd),
    /// Run the xl-like verbs of `xckpt` clients in one resident process (systemd: xckpt.service),
    /// so that a command does not pay again for a new process, Xen's libraries and fresh
    /// buffers.
    Serve(serve::ServeCmd),
    /// Write man pages and shell completions into a directory (for packaging).
    #[command(name = "__generate", hide = true)]
    Generate(generate::GenerateCmd),
    /// The pause watchdog (started by xckpt itself).
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The domain to unpause if xckpt dies while it is paused.
        domid: u32,
    },
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    progress::install(cli.progress, cli.quiet);
    let code = dispatch(cli.command);
    progress::finish();
    code
}

/// Parse and run `args` (the program's name first); a usage error, `--help` or `--version` is
/// printed as clap prints it, with its exit code.
pub fn run_args(args: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    match settings::try_parse(args)? {
        Ok(cli) => run(cli),
        Err(e) => {
            let _ = e.print();
            Ok(ExitCode::from(e.exit_code().clamp(0, 255) as u8))
        }
    }
}

/// `e` as one line: its context chain joined, outermost first; a cause that its wrapper
/// already quotes at its end is not repeated.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !msg.ends_with(&cause) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&cause);
        }
    }
    msg
}

/// The pause watchdog's command line, `xckpt __watchdog DOMID` exactly as
/// [`xckpt::backend::xen::watchdog::Watchdog::spawn`] writes it, run without building the
/// whole command-line parser: a capture starts the watchdog while it arms tracking, and on a
/// one-vCPU dom0 every instruction the watchdog runs at its start delays the capture. Anything
/// else (`--help` included) goes through [`parse`].
pub fn watchdog_fast_path() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let (Some(verb), Some(domid), None) = (args.next(), args.next(), args.next()) else {
        return None;
    };
    if verb != "__watchdog" {
        return None;
    }
    let domid: u32 = domid.to_str()?.parse().ok()?;
    Some(watchdog(domid))
}

fn watchdog(domid: u32) -> ExitCode {
    let undo = |how| xckpt::backend::xen::watchdog::undo_stop(domid, how);
    let code = xckpt::backend::xen::watchdog::run(domid, std::io::stdin(), undo);
    ExitCode::from(code as u8)
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Checkpoint(c) => c.run(),
        Command::Restore(c) => c.run(),
        Command::Export(c) => c.run(),
        Command::Import(c) => c.run(),
        Command::Untrack(c) => c.run(),
        Command::List(c) => c.run(),
        Command::Inspect(c) => c.run(),
        Command::Verify(c) => c.run(),
        Command::Merge(c) => c.run(),
        Command::Prune(c) => c.run(),
        Command::Bench(c) => c.run(),
        Command::Selftest(c) => c.run(),
        Command::Serve(c) => c.run(),
        Command::Generate(c) => c.run(),
        Command::Watchdog { domid } => Ok(watchdog(domid)),
    }
}

/// A remark on stderr, `xckpt: note: ...`, unless `--quiet`.
pub fn note(text: &str) {
    if !progress::quiet() {
        progress::clear();
        eprintln!("xckpt: note: {text}");
    }
}

/// Print `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    progress::clear();
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
