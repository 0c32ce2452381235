//! The `xckpt` command: xl-like verbs over the xckpt library.
//!
//! Errors are printed as one line, `xckpt: <what failed>: <why>`, naming the domain and file.

#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(code) = cli::watchdog_fast_path() {
        return code;
    }
    if let Some(code) = cli::service::delegate() {
        return code;
    }
    match cli::parse().and_then(cli::run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xckpt: {}", cli::error_line(&e));
            ExitCode::from(1)
        }
    }
}
