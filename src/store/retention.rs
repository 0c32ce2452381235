//! Retention policies in the style of restic and borg: which points of a chain `prune` keeps.
//!
//! A point is kept if any rule keeps it:
//!
//! * `keep_last = N`: the N newest layers;
//! * `keep_hourly = H`: for each of the H newest hours (UTC) that have a layer, its newest layer;
//! * `keep_daily = D`: likewise per day (UTC).
//!
//! The newest layer is always kept: the next checkpoint builds on it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::LayerRecord;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// How many points of a chain to keep. Every field is optional, so a config file can give
/// some and the command line others (see [`RetentionPolicy::or`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionPolicy {
    /// Keep the N newest layers.
    #[serde(alias = "keep_last")]
    pub keep_last: Option<u32>,
    /// Keep the newest layer of each of the H newest hours that have one.
    #[serde(alias = "keep_hourly")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest layer of each of the D newest days that have one.
    #[serde(alias = "keep_daily")]
    pub keep_daily: Option<u32>,
}

impl RetentionPolicy {
    /// Each field of `self`, or `fallback`'s where `self` has none.
    pub fn or(self, fallback: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.or(fallback.keep_last),
            keep_hourly: self.keep_hourly.or(fallback.keep_hourly),
            keep_daily: self.keep_daily.or(fallback.keep_daily),
        }
    }

    /// Whether no rule is set (such a policy keeps only the newest layer).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none() && self.keep_hourly.is_none() && self.keep_daily.is_none()
    }

    /// The ids of `layers` (oldest first, as the manifest lists them) to keep.
    pub fn select(&self, layers: &[LayerRecord]) -> BTreeSet<u64> {
        let mut keep = BTreeSet::new();
        let newest_first: Vec<&LayerRecord> = layers.iter().rev().collect();
        if let Some(first) = newest_first.first() {
            keep.insert(first.id);
        }
        let n = self.keep_last.unwrap_or(0) as usize;
        keep.extend(newest_first.iter().take(n).map(|r| r.id));
        for (count, width) in [(self.keep_hourly, HOUR_MS), (self.keep_daily, DAY_MS)] {
            keep.extend(newest_per_bucket(&newest_first, width, count.unwrap_or(0)));
        }
        keep
    }
}

/// The newest layer of each of the `count` newest time buckets of `width` ms that have one.
fn newest_per_bucket(newest_first: &[&LayerRecord], width: u64, count: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last_bucket = None;
    for r in newest_first {
        if out.len() >= count as usize {
            break;
        }
        let bucket = r.created_unix_ms / width;
        if last_bucket != Some(bucket) {
            last_bucket = Some(bucket);
            out.push(r.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{CaptureStats, LayerKind};

    fn rec(id: u64, ms: u64) -> LayerRecord {
        LayerRecord {
            id,
            parent: (id > 1).then(|| id - 1),
            kind: LayerKind::Incremental,
            file: String::new(),
            created_unix_ms: ms,
            bytes: 0,
            stats: CaptureStats::default(),
            group: None,
        }
    }

    #[test]
    fn keeps_last_hourly_daily_and_always_the_newest() {
        // Two layers per hour over 30 hours.
        let layers: Vec<LayerRecord> = (0..60)
            .map(|i| rec(i + 1, i * HOUR_MS / 2 + 1000))
            .collect();
        let ids = |p: RetentionPolicy| p.select(&layers).into_iter().collect::<Vec<_>>();
        assert_eq!(ids(RetentionPolicy::default()), [60]);
        let last3 = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        assert_eq!(ids(last3), [58, 59, 60]);
        let hourly = RetentionPolicy {
            keep_hourly: Some(3),
            ..Default::default()
        };
        assert_eq!(ids(hourly), [56, 58, 60]);
        let daily = RetentionPolicy {
            keep_daily: Some(2),
            ..Default::default()
        };
        // Day 0 holds hours 0..24 (layers 1..=48), day 1 the rest.
        assert_eq!(ids(daily), [48, 60]);
        let both = last3.or(daily);
        assert_eq!(ids(both), [48, 58, 59, 60]);
    }

    #[test]
    fn deserializes_from_a_config_with_missing_fields() {
        let p: RetentionPolicy = serde_json::from_str(r#"{"keep-last": 5}"#).unwrap();
        assert_eq!(p.keep_last, Some(5));
        assert!(p.keep_daily.is_none());
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"keep-lats": 5}"#).is_err());
    }
}
