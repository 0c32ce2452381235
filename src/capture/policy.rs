//! When to stop pre-copy and pause.
//!
//! After each live round the engine fetches the dirty set and asks the policy whether to send it
//! live (another round) or to pause and send it, with whatever is dirtied meanwhile, under pause.
//! The estimate of the pause is the dirty set divided by the rate at which the mapper copies
//! pages into RAM (measured in the same run, compression and writes excluded).

use std::time::Duration;

/// Tunables of pre-copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecopyPolicy {
    /// Live rounds at most (round 0 included). 0 means no live round: a paused capture.
    pub max_rounds: u32,
    /// Stop once the estimated pause is at most this.
    pub target_downtime: Duration,
    /// A round "makes progress" if its dirty set is at most this fraction of the previous one.
    pub min_shrink: f64,
    /// Stop after this many rounds in a row without progress.
    pub stall_rounds: u32,
}

impl Default for PrecopyPolicy {
    fn default() -> Self {
        PrecopyPolicy {
            max_rounds: 8,
            target_downtime: Duration::from_millis(50),
            min_shrink: 0.8,
            stall_rounds: 2,
        }
    }
}

/// Why pre-copy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The estimated pause is within the target.
    Converged,
    /// `max_rounds` live rounds were run.
    RoundsExhausted,
    /// The dirty set stopped shrinking.
    NotConverging,
    /// Non-live capture: no live rounds at all.
    NotLive,
}

/// The policy's verdict after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the dirty set live in another round.
    Continue,
    /// Pause now.
    Stop(StopReason),
}

/// Pre-copy progress, fed to [`PrecopyPolicy::decide`].
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Live rounds completed.
    pub rounds: u32,
    /// Dirty page counts seen after each round.
    pub dirty_history: Vec<u64>,
    stalled: u32,
}

impl PrecopyPolicy {
    /// Decide after a live round whose fetch-and-clear found `dirty` pages. `copy_pages_per_s`
    /// is the measured rate of copying pages into RAM.
    pub fn decide(&self, progress: &mut Progress, dirty: u64, copy_pages_per_s: f64) -> Decision {
        if let Some(&prev) = progress.dirty_history.last() {
            if dirty as f64 > prev as f64 * self.min_shrink {
                progress.stalled += 1;
            } else {
                progress.stalled = 0;
            }
        }
        progress.dirty_history.push(dirty);
        let est = if copy_pages_per_s > 0.0 {
            dirty as f64 / copy_pages_per_s
        } else {
            f64::INFINITY
        };
        if dirty == 0 || est <= self.target_downtime.as_secs_f64() {
            Decision::Stop(StopReason::Converged)
        } else if progress.rounds >= self.max_rounds {
            Decision::Stop(StopReason::RoundsExhausted)
        } else if progress.stalled >= self.stall_rounds {
            Decision::Stop(StopReason::NotConverging)
        } else {
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(rounds: u32) -> Progress {
        Progress {
            rounds,
            ..Default::default()
        }
    }

    #[test]
    fn converges_when_pause_estimate_is_small() {
        let p = PrecopyPolicy::default();
        // 1000 pages at 1M pages/s = 1 ms <= 50 ms.
        assert_eq!(
            p.decide(&mut progress(1), 1000, 1e6),
            Decision::Stop(StopReason::Converged)
        );
        assert_eq!(
            p.decide(&mut progress(1), 0, 0.0),
            Decision::Stop(StopReason::Converged)
        );
    }

    #[test]
    fn continues_then_exhausts_rounds() {
        let p = PrecopyPolicy {
            max_rounds: 3,
            ..Default::default()
        };
        let mut pr = progress(1);
        assert_eq!(p.decide(&mut pr, 1_000_000, 1e6), Decision::Continue);
        pr.rounds = 3;
        assert_eq!(
            p.decide(&mut pr, 100_000, 1e6),
            Decision::Stop(StopReason::RoundsExhausted)
        );
    }

    #[test]
    fn stops_when_not_shrinking() {
        let p = PrecopyPolicy {
            max_rounds: 100,
            ..Default::default()
        };
        let mut pr = progress(1);
        assert_eq!(p.decide(&mut pr, 500_000, 1e6), Decision::Continue);
        pr.rounds += 1;
        assert_eq!(p.decide(&mut pr, 490_000, 1e6), Decision::Continue);
        pr.rounds += 1;
        assert_eq!(
            p.decide(&mut pr, 495_000, 1e6),
            Decision::Stop(StopReason::NotConverging)
        );
    }
}
