//! `balloon`: ask the guest to balloon down to its used memory plus a margin for the capture,
//! then give the memory back. Ballooned-out frames are unpopulated in Xen, so the copy path
//! skips them by page type.
//!
//! Never an OOM: the new target is the guest's own used figure (MemTotal - MemFree, from the
//! agent) plus a margin of at least [`MIN_MARGIN_KIB`] or a quarter of it, the Linux balloon
//! driver does not invoke the OOM killer to meet a target, and if the domain has not come
//! down to the target in time the old target is put back and the capture goes on without it.

use std::time::{Duration, Instant};

/// The balloon target of a domain (xenstore `memory/target`, KiB).
pub trait BalloonTarget: Send + Sync {
    /// The target now.
    fn target_kib(&self) -> std::io::Result<u64>;
    /// Set the target.
    fn set_target_kib(&self, kib: u64) -> std::io::Result<()>;
}

/// The smallest margin above the guest's used memory.
pub const MIN_MARGIN_KIB: u64 = 64 * 1024;
/// Populated memory this close to the target counts as reached (special pages, rounding).
const SLACK_KIB: u64 = 8 * 1024;

/// Why the balloon was not used.
#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    /// Reading or writing the target failed.
    #[error("memory/target: {0}")]
    Target(#[from] std::io::Error),
    /// The domain's memory could not be read.
    #[error("{0}")]
    Domain(String),
    /// The guest did not come down in time; the old target was put back.
    #[error("the guest came down to {reached_kib} KiB, not {wanted_kib} KiB, within {waited:?}; target put back to {old_kib} KiB")]
    NotReached {
        /// Populated memory at the deadline.
        reached_kib: u64,
        /// The target asked for.
        wanted_kib: u64,
        /// The old target, restored.
        old_kib: u64,
        /// How long xckpt waited.
        waited: Duration,
    },
}

/// Puts the old target back when dropped.
pub struct BalloonGuard<'a> {
    target: &'a dyn BalloonTarget,
    old_kib: u64,
    /// The target during the capture.
    pub new_kib: u64,
    /// Populated memory when the target was reached.
    pub reached_kib: u64,
}

impl Drop for BalloonGuard<'_> {
    fn drop(&mut self) {
        let _ = self.target.set_target_kib(self.old_kib);
    }
}

impl BalloonGuard<'_> {
    /// `config` (libxl JSON text and a NUL, as `xl list -l` gave it while the guest was
    /// ballooned down) with `b_info.target_memkb` raised again by what the balloon took: libxl
    /// reads the target from xenstore when it describes a domain, and a restored guest must get
    /// its old target back, not the capture's. Text that is not such a config is left as is.
    pub fn unballooned_config(&self, config: Vec<u8>) -> Vec<u8> {
        let raise = self.old_kib.saturating_sub(self.new_kib);
        crate::libxl::config::raise_target_memkb(config, raise)
    }
}

/// The target for a guest using `used_kib`.
pub fn target_for(used_kib: u64) -> u64 {
    used_kib + (used_kib / 4).max(MIN_MARGIN_KIB)
}

/// Balloon down to [`target_for`]`(used_kib)` and wait up to `timeout` for the domain's
/// populated memory (`populated_kib`) to follow. None: the guest is already that small.
pub fn balloon_down<'a>(
    target: &'a dyn BalloonTarget,
    used_kib: u64,
    populated_kib: &dyn Fn() -> Result<u64, String>,
    timeout: Duration,
) -> Result<Option<BalloonGuard<'a>>, BalloonError> {
    let old_kib = target.target_kib()?;
    let new_kib = target_for(used_kib);
    if new_kib >= old_kib {
        return Ok(None);
    }
    target.set_target_kib(new_kib)?;
    let mut guard = BalloonGuard {
        target,
        old_kib,
        new_kib,
        reached_kib: 0,
    };
    let t0 = Instant::now();
    loop {
        let now = populated_kib().map_err(BalloonError::Domain)?;
        if now <= new_kib + SLACK_KIB {
            guard.reached_kib = now;
            return Ok(Some(guard));
        }
        if t0.elapsed() >= timeout {
            drop(guard);
            return Err(BalloonError::NotReached {
                reached_kib: now,
                wanted_kib: new_kib,
                old_kib,
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Target(Mutex<u64>);
    impl BalloonTarget for Target {
        fn target_kib(&self) -> std::io::Result<u64> {
            Ok(*self.0.lock().unwrap())
        }
        fn set_target_kib(&self, kib: u64) -> std::io::Result<()> {
            *self.0.lock().unwrap() = kib;
            Ok(())
        }
    }

    #[test]
    fn a_config_fetched_while_ballooned_gets_the_old_target_back() {
        let t = Target(Mutex::new(524288));
        let g = balloon_down(&t, 300_000, &|| Ok(370_000), Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(g.new_kib, 375_000);
        // libxl adds video memory to the xenstore target it reports.
        let cfg = b"{\"b_info\": {\"target_memkb\": 172192, \"max_memkb\": 532480}}\0".to_vec();
        let out = g.unballooned_config(cfg);
        assert_eq!(out.last(), Some(&0));
        let v: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(v["b_info"]["target_memkb"], 172192 + 524288 - 375_000);
        assert_eq!(v["b_info"]["max_memkb"], 532480);
        // Not a libxl config (the sim's): left as it was.
        assert_eq!(g.unballooned_config(b"{}\0".to_vec()), b"{}\0");
        drop(g);
        assert_eq!(t.target_kib().unwrap(), 524288);
    }
}
