//! Helpers of the tests that run a simulated domain's writers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Poll `cond` until it holds; fail the test after a minute, naming `what`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
