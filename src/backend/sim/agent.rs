//! A fake guest agent for the simulated domain: reports the free pages it is told to, and can
//! run guest activity just before and just after its report, to test the eviction rule.

use std::time::Duration;

use crate::evict::{AgentError, AgentReply, AgentRequest, GuestAgent, GuestMemInfo};

/// Guest activity run around the report.
pub type Hook = Box<dyn Fn() + Send + Sync>;

/// A scripted agent.
#[derive(Default)]
pub struct SimAgent {
    /// Runs reported free.
    pub free: Vec<(u64, u64)>,
    /// Runs reported freed by dropping the cache (only when asked to drop it).
    pub cache: Vec<(u64, u64)>,
    /// Say nothing (like a guest without the agent).
    pub silent: bool,
    /// Runs after the request arrives, before the report is taken.
    pub before: Option<Hook>,
    /// Runs after the report is handed back (e.g. the guest allocates and writes pages).
    pub after: Option<Hook>,
}

impl GuestAgent for SimAgent {
    fn report(&self, req: AgentRequest, timeout: Duration) -> Result<AgentReply, AgentError> {
        if self.silent {
            return Err(AgentError::Timeout(timeout));
        }
        if let Some(h) = &self.before {
            h();
        }
        let pages = |runs: &[(u64, u64)]| runs.iter().map(|r| r.1).sum::<u64>();
        let reply = AgentReply {
            free: self.free.clone(),
            cache: if req.drop_cache {
                self.cache.clone()
            } else {
                Vec::new()
            },
            mem: GuestMemInfo {
                total_kib: 1 << 20,
                free_kib: pages(&self.free) * 4,
                cache_kib: pages(&self.cache) * 4,
            },
            mem_after_drop: None,
        };
        if let Some(h) = &self.after {
            h();
        }
        Ok(reply)
    }
}
