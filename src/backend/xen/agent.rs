//! Talking to `xckpt-agent` in a guest through the guest's xenstore area (docs/eviction.md).
//!
//! ```text
//! /local/domain/<id>/data/xckpt/agent            "xckpt-agent 1"   agent, at start
//! /local/domain/<id>/data/xckpt/request          "NONCE free|cache" xckpt
//! /local/domain/<id>/data/xckpt/report/free/<i>  run text chunks   agent
//! /local/domain/<id>/data/xckpt/report/cache/<i> run text chunks   agent
//! /local/domain/<id>/data/xckpt/reply            "NONCE k=v ..."   agent, last
//! ```
//! The guest owns `data/` (libxl creates it writable by the guest), the agent creates
//! `data/xckpt/` itself, and nodes dom0 creates inside inherit the guest's ownership, so the
//! agent can read the request and remove old reports.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::XenStore;
use crate::evict::agent::parse_reply_line;
use crate::evict::{runs, AgentError, AgentReply, AgentRequest, BalloonTarget, GuestAgent};

/// How often the reply node is polled.
const POLL: Duration = Duration::from_millis(20);

/// The agent of one domain.
pub struct XenAgent {
    xs: Mutex<XenStore>,
    base: String,
}

impl XenAgent {
    /// The agent of domain `domid`, through `xs`.
    pub fn new(xs: XenStore, domid: u32) -> Self {
        XenAgent {
            xs: Mutex::new(xs),
            base: format!("/local/domain/{domid}/data/xckpt"),
        }
    }

    /// The agent of domain `domid`, through a new connection to xenstored.
    pub fn connect(domid: u32) -> std::io::Result<Self> {
        Ok(Self::new(
            Box::new(xenstore_rs::unix::XsUnix::new()?),
            domid,
        ))
    }

    fn chunks(&self, xs: &XenStore, kind: &str, n: u64) -> Result<Vec<(u64, u64)>, AgentError> {
        let texts = (0..n)
            .map(|i| xs.read(&format!("{}/report/{kind}/{i}", self.base)))
            .collect::<Result<Vec<_>, _>>()?;
        runs::decode(texts.iter().map(|t| &**t)).map_err(|e| AgentError::Protocol(e.to_string()))
    }
}

impl GuestAgent for XenAgent {
    fn report(&self, req: AgentRequest, timeout: Duration) -> Result<AgentReply, AgentError> {
        let xs = self.xs.lock().unwrap_or_else(|p| p.into_inner());
        let agent = format!("{}/agent", self.base);
        if xs.read(&agent).is_err() {
            return Err(AgentError::Absent(agent));
        }
        let _ = xs.rm(&format!("{}/report", self.base));
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_string();
        let what = if req.drop_cache { "cache" } else { "free" };
        xs.write(
            &format!("{}/request", self.base),
            &format!("{nonce} {what}"),
        )?;
        let reply = format!("{}/reply", self.base);
        let deadline = Instant::now() + timeout;
        let fields = loop {
            if let Ok(line) = xs.read(&reply) {
                if let Some(f) = parse_reply_line(&line, &nonce) {
                    break f?;
                }
            }
            if Instant::now() >= deadline {
                return Err(AgentError::Timeout(timeout));
            }
            std::thread::sleep(POLL);
        };
        let free = self.chunks(&xs, "free", fields.free_chunks)?;
        let cache = self.chunks(&xs, "cache", fields.cache_chunks)?;
        // The report's nodes count against the guest's xenstore quota: drop them.
        let _ = xs.rm(&format!("{}/report", self.base));
        Ok(AgentReply {
            free,
            cache,
            mem: fields.mem,
            mem_after_drop: fields.mem_after_drop(),
        })
    }
}

/// The balloon target of one domain: xenstore `memory/target` (KiB), which the guest's
/// balloon driver follows.
pub struct XenBalloon {
    xs: Mutex<XenStore>,
    path: String,
}

impl XenBalloon {
    /// The balloon target of domain `domid`, through a new connection to xenstored.
    pub fn connect(domid: u32) -> std::io::Result<Self> {
        Ok(XenBalloon {
            xs: Mutex::new(Box::new(xenstore_rs::unix::XsUnix::new()?)),
            path: format!("/local/domain/{domid}/memory/target"),
        })
    }
}

impl BalloonTarget for XenBalloon {
    fn target_kib(&self) -> std::io::Result<u64> {
        let xs = self.xs.lock().unwrap_or_else(|p| p.into_inner());
        let v = xs.read(&self.path)?;
        v.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is {v:?}, not a number", self.path),
            )
        })
    }

    fn set_target_kib(&self, kib: u64) -> std::io::Result<()> {
        let xs = self.xs.lock().unwrap_or_else(|p| p.into_inner());
        xs.write(&self.path, &kib.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::Arc;
    use xenstore_rs::Xs;

    /// An in-memory xenstore whose "agent" answers a request as soon as it is written.
    #[derive(Clone, Default)]
    struct FakeXs {
        nodes: Arc<Mutex<BTreeMap<String, String>>>,
        answer: bool,
    }

    impl Xs for FakeXs {
        fn directory(&self, _: &str) -> io::Result<Vec<Box<str>>> {
            Ok(Vec::new())
        }
        fn read(&self, path: &str) -> io::Result<Box<str>> {
            let n = self.nodes.lock().unwrap();
            n.get(path)
                .map(|v| v.clone().into_boxed_str())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }
        fn write(&self, path: &str, data: &str) -> io::Result<()> {
            let mut n = self.nodes.lock().unwrap();
            n.insert(path.to_string(), data.to_string());
            if self.answer && path.ends_with("/request") {
                let base = path.trim_end_matches("/request");
                let nonce = data.split(' ').next().unwrap();
                n.insert(format!("{base}/report/free/0"), "a:3".into());
                n.insert(format!("{base}/report/free/1"), "2:1".into());
                n.insert(
                    format!("{base}/reply"),
                    format!("{nonce} free_chunks=2 cache_chunks=0 total_kib=800 free_kib=300"),
                );
            }
            Ok(())
        }
        fn rm(&self, path: &str) -> io::Result<()> {
            let mut n = self.nodes.lock().unwrap();
            n.retain(|k, _| k != path && !k.starts_with(&format!("{path}/")));
            Ok(())
        }
    }

    #[test]
    fn reads_the_chunked_report_and_cleans_it_up() {
        let xs = FakeXs {
            answer: true,
            ..Default::default()
        };
        xs.write("/local/domain/7/data/xckpt/agent", "xckpt-agent 1")
            .unwrap();
        let agent = XenAgent::new(Box::new(xs.clone()), 7);
        let r = agent
            .report(AgentRequest { drop_cache: false }, Duration::from_secs(1))
            .unwrap();
        assert_eq!(r.free, vec![(0xa, 3), (0xf, 1)]);
        assert_eq!(r.mem.used_kib(), 500);
        assert!(!xs
            .nodes
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.contains("/report/")));
    }

    #[test]
    fn no_agent_node_or_no_answer_are_told_apart() {
        let xs = FakeXs::default();
        let agent = XenAgent::new(Box::new(xs.clone()), 7);
        let req = AgentRequest { drop_cache: true };
        assert!(matches!(
            agent.report(req, Duration::from_millis(50)),
            Err(AgentError::Absent(p)) if p == "/local/domain/7/data/xckpt/agent"
        ));
        xs.write("/local/domain/7/data/xckpt/agent", "xckpt-agent 1")
            .unwrap();
        assert!(matches!(
            agent.report(req, Duration::from_millis(50)),
            Err(AgentError::Timeout(_))
        ));
    }
}
