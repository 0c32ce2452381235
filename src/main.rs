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
    match cli::parse().and_then(cli::run) {
        Ok(code) => code,
        Err(e) => {
            // One line: the context chain joined, outermost first; a cause that its
            // wrapper already quotes at its end is not repeated.
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !msg.ends_with(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            eprintln!("xckpt: {msg}");
            ExitCode::from(1)
        }
    }
}
