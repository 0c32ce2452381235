//! The barriers of a [`TcpCoordinator`], once the hosts met: the hub gathers every host's
//! arrival and answers all of them; every other host arrives and waits for the answer.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::{Role, TcpCoordinator, GRACE};
use crate::group::coordinator::{BarrierError, Coordinator, PauseWindow, Phase};
use crate::group::manifest::GroupMember;
use crate::group::wire::{recv, send, Msg};

/// What the hub gathered at one barrier.
#[derive(Default)]
struct Gathered {
    ok: bool,
    why: Option<String>,
    windows: Vec<PauseWindow>,
    members: Vec<(u32, Vec<GroupMember>)>,
}

impl TcpCoordinator {
    fn hub_barrier(&mut self, phase: Phase, ok: bool) -> Result<bool, BarrierError> {
        let limit = self.deadline(phase);
        let local_why = self.local_why.take();
        let Role::Hub {
            peers,
            events,
            pause,
            members,
            ..
        } = &mut self.role
        else {
            unreachable!("hub_barrier on a host");
        };
        let mut g = Gathered {
            ok,
            why: (!ok).then(|| {
                local_why.unwrap_or_else(|| "a member on the hub's host failed".to_string())
            }),
            windows: pause.iter().copied().collect(),
            members: Vec::new(),
        };
        let deadline = Instant::now() + limit;
        let mut arrived = vec![false; peers.len()];
        while g.ok && arrived.iter().any(|a| !a) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, m) = match events.recv_timeout(left) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    let late: Vec<String> = peers
                        .iter()
                        .zip(&arrived)
                        .filter(|(_, a)| !**a)
                        .map(|(p, _)| format!("{} (slot {})", p.hello.host, p.hello.slot))
                        .collect();
                    g.ok = false;
                    g.why = Some(format!(
                        "{} did not reach {phase:?} within {} s",
                        late.join(", "),
                        limit.as_secs_f64()
                    ));
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    g.ok = false;
                    g.why = Some("every other host's connection is gone".into());
                    break;
                }
            };
            let who = format!("{} (slot {})", peers[i].hello.host, peers[i].hello.slot);
            match m {
                Ok(Msg::Arrive {
                    phase: p,
                    ok,
                    why,
                    pause,
                    members: ms,
                }) if p == phase => {
                    arrived[i] = true;
                    if !ok {
                        g.ok = false;
                        g.why = Some(match why {
                            Some(w) => format!("{who} failed: {w}"),
                            None => format!("a member on {who} failed"),
                        });
                    }
                    g.windows.extend(pause);
                    g.members.push((peers[i].hello.slot, ms));
                }
                Ok(other) => {
                    g.ok = false;
                    g.why = Some(format!("{who} sent {other:?} at {phase:?}"));
                }
                Err(e) => {
                    g.ok = false;
                    g.why = Some(format!(
                        "{who} is gone ({e}): its xckpt died or lost the network"
                    ));
                }
            }
        }
        let (instant, skew) = if g.ok && phase == Phase::Stopped {
            let first = g.windows.iter().map(|w| w.first_unix_us).min();
            let last = g.windows.iter().map(|w| w.last_unix_us).max();
            let skew = match (first, last) {
                (Some(a), Some(b)) => Duration::from_micros(b.saturating_sub(a)),
                _ => Duration::ZERO,
            };
            (Some(crate::store::unix_us() / 1000), Some(skew))
        } else {
            (None, None)
        };
        let pass = Msg::Pass {
            phase,
            ok: g.ok,
            why: g.why.clone(),
            instant_unix_ms: instant,
            skew_us: skew.map(|s| s.as_micros() as u64),
        };
        for p in peers.iter_mut() {
            let _ = p.stream.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = send(&mut p.stream, &pass);
        }
        if phase == Phase::Committed {
            *members = g.members;
        }
        if let (Some(i), Some(s)) = (instant, skew) {
            self.instant = Some((i, s));
        }
        if !g.ok {
            self.failed = g.why.or_else(|| Some("the group failed".into()));
        }
        Ok(g.ok)
    }

    fn host_barrier(&mut self, phase: Phase, ok: bool) -> Result<bool, BarrierError> {
        let deadline = Instant::now() + self.deadline(phase) + GRACE;
        let why = self.local_why.take().filter(|_| !ok);
        let Role::Host {
            reader,
            stream,
            offset_us,
            pause,
            members,
        } = &mut self.role
        else {
            unreachable!("host_barrier on the hub");
        };
        let shift = |t: u64| (t as i64 + *offset_us).max(0) as u64;
        let arrive = Msg::Arrive {
            phase,
            ok,
            why,
            pause: pause.take().map(|w| PauseWindow {
                first_unix_us: shift(w.first_unix_us),
                last_unix_us: shift(w.last_unix_us),
            }),
            members: if phase == Phase::Committed {
                std::mem::take(members)
            } else {
                Vec::new()
            },
        };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let answer = match send(stream, &arrive) {
            Ok(()) => recv(reader, Some(deadline)),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(Msg::Pass {
                phase: p,
                ok,
                why,
                instant_unix_ms,
                skew_us,
            }) if p == phase => {
                if let (Some(i), Some(s)) = (instant_unix_ms, skew_us) {
                    self.instant = Some((i, Duration::from_micros(s)));
                }
                if !ok {
                    self.failed = Some(why.unwrap_or_else(|| "another host failed".into()));
                }
                Ok(ok)
            }
            Ok(other) => Err(self.barrier_error(phase, format!("the hub sent {other:?}"))),
            Err(e) => {
                self.failed = Some(format!("lost the hub: {e}"));
                Err(self.barrier_error(
                    phase,
                    format!("lost the hub ({e}): its xckpt died or the network failed"),
                ))
            }
        }
    }
}

impl Coordinator for TcpCoordinator {
    fn barrier(&mut self, phase: Phase, ok: bool) -> Result<bool, BarrierError> {
        if self.failed.is_some() {
            return Ok(false);
        }
        match self.role {
            Role::Hub { .. } => self.hub_barrier(phase, ok),
            Role::Host { .. } => self.host_barrier(phase, ok),
        }
    }

    fn abandon(&mut self, phase: Phase, why: &str) {
        self.local_why = Some(why.to_string());
        let _ = self.barrier(phase, false);
    }

    fn paused(&mut self, window: PauseWindow) {
        match &mut self.role {
            Role::Hub { pause, .. } | Role::Host { pause, .. } => *pause = Some(window),
        }
    }

    fn instant(&self) -> Option<(u64, Duration)> {
        self.instant
    }

    fn share(&mut self, local: &[GroupMember]) {
        if let Role::Host { members, .. } = &mut self.role {
            *members = local.to_vec();
        }
    }

    fn gather(&mut self, local: Vec<GroupMember>) -> Option<Vec<GroupMember>> {
        match &mut self.role {
            Role::Hub { members, slot, .. } => {
                let mut all = std::mem::take(members);
                all.push((*slot, local));
                all.sort_by_key(|(s, _)| *s);
                let placed = all.into_iter().flat_map(|(s, ms)| {
                    ms.into_iter()
                        .map(move |m| GroupMember { slot: Some(s), ..m })
                });
                Some(placed.collect())
            }
            Role::Host { .. } => None,
        }
    }

    fn why_failed(&self) -> Option<String> {
        self.failed.clone()
    }
}

impl Drop for TcpCoordinator {
    fn drop(&mut self) {
        // Close every connection: the peers' reader threads end, and a host still waiting
        // sees the hub gone.
        match &self.role {
            Role::Hub { peers, .. } => {
                for p in peers {
                    let _ = p.stream.shutdown(std::net::Shutdown::Both);
                }
            }
            Role::Host { stream, .. } => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
