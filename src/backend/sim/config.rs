//! The simulated domain's configuration: memory layout, content and workload.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::hv::GuestType;

/// Everything that defines a simulated domain. Serialised as JSON, it is the sim's config blob
/// ([`crate::hv::MachineState::config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Domain name.
    pub name: String,
    /// Size of the pfn space.
    pub pfn_count: u64,
    /// Populated pfn ranges; pfns outside them are holes (unpopulated).
    pub populated: Vec<Range<u64>>,
    /// Number of vCPUs (only reported; writers are independent of it).
    pub vcpus: u32,
    /// Reported guest type.
    pub guest_type: GuestType,
    /// What the writer threads do once started.
    pub workload: WorkloadSpec,
    /// Number of writer threads (0 = an idle guest).
    pub writers: usize,
    /// What page content looks like.
    pub content: ContentSpec,
    /// Seed of all pseudo-random choices (content, page picks).
    pub seed: u64,
    /// Record a ground-truth snapshot automatically at each outermost pause.
    #[serde(default)]
    pub auto_truth: Option<TruthMode>,
    /// Disks, as libxl's config lists them (`vdev`, `pdev_path`, ...): a restore points them
    /// at their clones or overlays as it does a real config's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<serde_json::Value>,
}

/// Which pages writers pick, and how fast they write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// The access pattern.
    pub pattern: AccessPattern,
    /// Target dirty rate of all writers together, MiB/s; 0 = as fast as possible.
    pub rate_mib_s: f64,
}

/// How writers pick the next page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessPattern {
    /// Any populated page, uniformly.
    Uniform,
    /// A fixed hot subset gets most writes.
    HotSet {
        /// Fraction of populated pages in the hot set (0..=1).
        hot_fraction: f64,
        /// Probability that a write goes to the hot set (0..=1).
        hot_probability: f64,
    },
    /// All writers sweep the populated pages in order, wrapping around.
    Sequential,
}

/// What page content looks like.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContentSpec {
    /// Fraction of each page that is repeated text (the rest is pseudo-random bytes).
    /// 0.6 gives roughly 2.5x with zstd level 1.
    pub compressibility: f64,
    /// Fraction of pages that are all zeros, initially and in writes.
    pub zero_fraction: f64,
}

/// What a ground-truth snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruthMode {
    /// One xxh3-64 digest per pfn.
    Digest,
    /// Digests plus a full copy of memory (small sims only).
    Full,
}

impl Default for ContentSpec {
    fn default() -> Self {
        ContentSpec {
            compressibility: 0.6,
            zero_fraction: 0.1,
        }
    }
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            pattern: AccessPattern::Uniform,
            rate_mib_s: 0.0,
        }
    }
}

impl SimConfig {
    /// A small test domain of `pages` pfns: all populated except a hole of `pages / 16` pfns
    /// starting at `3 * pages / 4` (when `pages >= 16`); one uniform unthrottled writer; PVH;
    /// default content; seed 1.
    pub fn small(pages: u64) -> SimConfig {
        let populated = if pages >= 16 {
            let hole = 3 * pages / 4;
            vec![0..hole, hole + pages / 16..pages]
        } else {
            std::iter::once(0..pages).collect()
        };
        SimConfig {
            name: format!("sim-{pages}"),
            pfn_count: pages,
            populated,
            vcpus: 2,
            guest_type: GuestType::Pvh,
            workload: WorkloadSpec::default(),
            writers: 1,
            content: ContentSpec::default(),
            seed: 1,
            auto_truth: None,
            disks: Vec::new(),
        }
    }

    /// Check the configuration; the error text says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.pfn_count == 0 || self.pfn_count > (1 << 36) {
            return Err(format!("pfn_count {} must be in 1..=2^36", self.pfn_count));
        }
        if let Some(r) = self
            .populated
            .iter()
            .find(|r| r.start > r.end || r.end > self.pfn_count)
        {
            return Err(format!(
                "populated range {r:?} is outside 0..{}",
                self.pfn_count
            ));
        }
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !unit(self.content.compressibility) || !unit(self.content.zero_fraction) {
            return Err("content fractions must be within 0..=1".into());
        }
        if let AccessPattern::HotSet {
            hot_fraction,
            hot_probability,
        } = self.workload.pattern
        {
            if !unit(hot_fraction) || !unit(hot_probability) {
                return Err("hot-set fractions must be within 0..=1".into());
            }
        }
        if !(self.workload.rate_mib_s >= 0.0 && self.workload.rate_mib_s.is_finite()) {
            return Err("rate_mib_s must be a finite number >= 0".into());
        }
        if self.writers > 256 {
            return Err(format!(
                "{} writers is too many (at most 256)",
                self.writers
            ));
        }
        Ok(())
    }
}
