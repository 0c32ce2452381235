//! The `--evict` list.

use std::str::FromStr;

/// Which eviction policies a checkpoint applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictSet {
    /// All-zero pages become index bits (off: they are stored as data, like any page).
    pub zero: bool,
    /// Free pages reported by the guest agent.
    pub free: bool,
    /// The agent drops clean page cache first (implies asking the agent).
    pub cache: bool,
    /// Balloon the guest down to its used memory plus a margin for the capture.
    pub balloon: bool,
}

impl Default for EvictSet {
    /// `zero,unpopulated,free`: `free` applies when an agent answers.
    fn default() -> Self {
        EvictSet {
            zero: true,
            free: true,
            cache: false,
            balloon: false,
        }
    }
}

impl EvictSet {
    /// Whether a policy needs the guest agent: `free` and `cache` for its report, `balloon` for
    /// the guest's own used figure.
    pub fn needs_agent(&self) -> bool {
        self.free || self.cache || self.balloon
    }
}

/// A bad `--evict` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseEvictError {
    /// A word that is not a policy.
    #[error("unknown eviction policy {0:?}: use a comma-separated list of zero, unpopulated, free, cache, balloon")]
    Unknown(String),
    /// `unpopulated` left out.
    #[error("--evict must include unpopulated: Xen has no frame behind an unpopulated pfn, so there is nothing to store")]
    NoUnpopulated,
}

impl FromStr for EvictSet {
    type Err = ParseEvictError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = EvictSet {
            zero: false,
            free: false,
            cache: false,
            balloon: false,
        };
        let mut unpopulated = false;
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "zero" => set.zero = true,
                "unpopulated" => unpopulated = true,
                "free" => set.free = true,
                "cache" => set.cache = true,
                "balloon" => set.balloon = true,
                other => return Err(ParseEvictError::Unknown(other.to_string())),
            }
        }
        if !unpopulated {
            return Err(ParseEvictError::NoUnpopulated);
        }
        Ok(set)
    }
}

impl std::fmt::Display for EvictSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if self.zero {
            words.push("zero");
        }
        words.push("unpopulated");
        for (on, w) in [
            (self.free, "free"),
            (self.cache, "cache"),
            (self.balloon, "balloon"),
        ] {
            if on {
                words.push(w);
            }
        }
        f.write_str(&words.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_bad_words() {
        let s: EvictSet = "zero,unpopulated,free,cache".parse().unwrap();
        assert!(s.zero && s.free && s.cache && !s.balloon);
        assert_eq!(s.to_string(), "zero,unpopulated,free,cache");
        let s: EvictSet = "unpopulated".parse().unwrap();
        assert!(!s.zero && !s.free);
        assert_eq!(
            "zero,swap".parse::<EvictSet>(),
            Err(ParseEvictError::Unknown("swap".into()))
        );
        assert_eq!(
            "zero".parse::<EvictSet>(),
            Err(ParseEvictError::NoUnpopulated)
        );
        assert_eq!(EvictSet::default().to_string(), "zero,unpopulated,free");
    }

    #[test]
    fn balloon_alone_still_asks_the_agent() {
        let needs = |l: &str| l.parse::<EvictSet>().unwrap().needs_agent();
        assert!(needs("zero,unpopulated,balloon"));
        assert!(needs("unpopulated,cache"));
        assert!(!needs("zero,unpopulated"));
    }
}
