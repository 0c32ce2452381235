//! The `xckpt` command: xl-like verbs over the xckpt library.
//!
//! Errors are printed as one line, `xckpt: <what failed>: <why>`, naming the domain and file.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::parse().and_then(cli::run) {
        Ok(code) => code,
        Err(e) => {
            // One line: the context chain joined, outermost first.
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("xckpt: {msg}");
            ExitCode::from(1)
        }
    }
}
