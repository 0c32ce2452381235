//! The guest agent as xckpt sees it: a request, and a report of free pages.

use std::time::Duration;

/// What xckpt asks the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentRequest {
    /// Drop the guest's clean page cache (`drop_caches=1`) before reporting (`cache`).
    pub drop_cache: bool,
}

/// The guest's own memory figures (`/proc/meminfo`), KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuestMemInfo {
    /// MemTotal.
    pub total_kib: u64,
    /// MemFree.
    pub free_kib: u64,
    /// Cached + Buffers.
    pub cache_kib: u64,
}

impl GuestMemInfo {
    /// MemTotal - MemFree.
    pub fn used_kib(&self) -> u64 {
        self.total_kib.saturating_sub(self.free_kib)
    }
}

/// The agent's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReply {
    /// `(start, len)` runs of guest frames free in the guest's allocator (before and after
    /// any cache drop).
    pub free: Vec<(u64, u64)>,
    /// Runs that became free by dropping clean page cache (empty without `drop_cache`).
    pub cache: Vec<(u64, u64)>,
    /// Memory figures when the agent took its first look.
    pub mem: GuestMemInfo,
    /// Memory figures after dropping the cache.
    pub mem_after_drop: Option<GuestMemInfo>,
}

/// Why the agent gave no usable report. None of these fails a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No agent registered itself in the guest.
    #[error("no xckpt-agent runs in the guest ({0} is not in xenstore)")]
    Absent(String),
    /// The agent did not answer in time.
    #[error("the xckpt-agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent answered with an error.
    #[error("the xckpt-agent failed: {0}")]
    Failed(String),
    /// The answer could not be read.
    #[error("unreadable xckpt-agent report: {0}")]
    Protocol(String),
    /// Talking to xenstore failed.
    #[error("xenstore: {0}")]
    Xenstore(#[from] std::io::Error),
}

/// A way to ask the guest for its free pages.
pub trait GuestAgent: Send + Sync {
    /// Post `req` and wait up to `timeout` for the report.
    fn report(&self, req: AgentRequest, timeout: Duration) -> Result<AgentReply, AgentError>;
}

/// Parse the agent's reply line `NONCE key=value...` for `nonce`. Returns None if the line
/// answers another request (an older one): keep waiting.
pub fn parse_reply_line(line: &str, nonce: &str) -> Option<Result<ReplyFields, AgentError>> {
    let mut words = line.split_whitespace();
    if words.next()? != nonce {
        return None;
    }
    let mut f = ReplyFields::default();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        if k == "error" {
            return Some(Err(AgentError::Failed(v.replace('_', " "))));
        }
        let slot = match k {
            "free_chunks" => &mut f.free_chunks,
            "cache_chunks" => &mut f.cache_chunks,
            "total_kib" => &mut f.mem.total_kib,
            "free_kib" => &mut f.mem.free_kib,
            "cache_kib" => &mut f.mem.cache_kib,
            "after_free_kib" => f.after_free_kib.insert(0),
            "after_cache_kib" => f.after_cache_kib.insert(0),
            // Keys of later agents, and text ones (orders=kcore): not needed here.
            _ => continue,
        };
        let Ok(n) = v.parse::<u64>() else {
            return Some(Err(AgentError::Protocol(format!(
                "{k}={v} is not a number"
            ))));
        };
        *slot = n;
    }
    Some(Ok(f))
}

/// The fields of a reply line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyFields {
    /// Chunks under `report/free/`.
    pub free_chunks: u64,
    /// Chunks under `report/cache/`.
    pub cache_chunks: u64,
    /// Figures at the first look.
    pub mem: GuestMemInfo,
    /// MemFree after dropping the cache.
    pub after_free_kib: Option<u64>,
    /// Cached + Buffers after dropping the cache.
    pub after_cache_kib: Option<u64>,
}

impl ReplyFields {
    /// Figures after the drop, if there was one.
    pub fn mem_after_drop(&self) -> Option<GuestMemInfo> {
        Some(GuestMemInfo {
            total_kib: self.mem.total_kib,
            free_kib: self.after_free_kib?,
            cache_kib: self.after_cache_kib.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_for_other_requests_are_ignored_and_errors_surface() {
        assert!(parse_reply_line("41 free_chunks=1", "42").is_none());
        let f = parse_reply_line(
            "42 free_chunks=3 cache_chunks=0 total_kib=100 free_kib=40 cache_kib=10 orders=kcore",
            "42",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.free_chunks, 3);
        assert_eq!(f.mem.used_kib(), 60);
        assert_eq!(f.mem_after_drop(), None);
        let e = parse_reply_line("42 error=cannot_read_/proc/kpageflags", "42").unwrap();
        assert!(matches!(e, Err(AgentError::Failed(t)) if t == "cannot read /proc/kpageflags"));
    }
}
