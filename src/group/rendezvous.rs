//! A coordinator across hosts: one xckpt per host, meeting over TCP at a hub.
//!
//! ```text
//! the hub (one host's xckpt)                   every other host's xckpt
//!   listen HOST:PORT                             connect (retried until the deadline)
//!                                   <- hello     {job, group, slot, host, domains}
//!   check: one per slot, same job and group,
//!   every domain found once; fix the id
//!                                   -> welcome   {id, clock, assign}   (or refuse {why})
//! each barrier:
//!                                   <- arrive    {phase, ok, why, pause, members}
//!   all arrived and ok?             -> pass      {phase, ok, why, instant, skew}
//! ```
//!
//! The hub answers a barrier as soon as it knows the outcome: every host arrived, or one host
//! failed, closed its connection (its xckpt died) or missed the barrier's deadline. A failed
//! barrier ends the group: every later barrier of every host fails at once, so every host
//! resumes its members (their watchdogs cover an xckpt that dies). A host that loses the hub
//! fails its barrier the same way. Deadlines: `timeout` for the phases that wait on pre-copy,
//! write-behind or a restore's streaming, `stop_timeout` for those reached with running
//! members stopped.
//!
//! Clocks: each host measures its offset to the hub's clock at the hello (half the round
//! trip is the error bound) and reports its pause window in the hub's clock, so the pause skew
//! is measured across hosts. The group instant is the hub's clock at the `Stopped` barrier.
//!
//! The network is trusted as a batch system's is (PMI's rendezvous is plain TCP too): a
//! hello must name the job, the group and an unused slot, and lines are bounded in size.

use std::io::{BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::coordinator::{BarrierError, PauseWindow, Phase};
use super::manifest::GroupMember;
mod barriers;

pub use super::wire::Hello;
use super::wire::{recv, send, Msg};

/// How much longer a host waits for the hub's answer than the hub waits for the hosts.
const GRACE: Duration = Duration::from_secs(5);

/// Where and who this host is in the group.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    /// The job this group checkpoint belongs to (Slurm: `JOBID.STEPID`); every host must name
    /// the same one.
    pub job: String,
    /// This host's slot, 0..size (Slurm: the task rank); a restore places the members by it.
    pub slot: u32,
    /// Number of hosts.
    pub size: u32,
    /// Whether this host is the hub.
    pub hub: bool,
    /// The hub's address, `HOST:PORT`, as the other hosts reach it.
    pub hub_addr: String,
    /// The address the hub listens on (`0.0.0.0:PORT`).
    pub listen_addr: String,
    /// This host's name, for messages.
    pub host: String,
    /// Deadline of a barrier that waits on pre-copy or write-behind, and of the meeting.
    pub timeout: Duration,
    /// Deadline of a barrier reached with members stopped.
    pub stop_timeout: Duration,
}

/// The hub's answer to a hello, the same for every host except `assign`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Welcome {
    /// The group checkpoint's id.
    pub id: u64,
    /// Per slot: what that host works on (a restore's members; empty for a checkpoint).
    pub assign: Vec<Vec<String>>,
}

/// Why meeting the other hosts failed.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// The hub could not listen, or a host could not reach it.
    #[error("group {group}: {what} {addr}: {source}")]
    Net {
        /// The group.
        group: String,
        /// What was tried.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The meeting did not complete (a host missing, refused, or a protocol error).
    #[error("group {group}: {why}")]
    Meeting {
        /// The group.
        group: String,
        /// What went wrong, naming the host.
        why: String,
    },
}

/// A connected host, as the hub sees it.
struct Peer {
    hello: Hello,
    stream: TcpStream,
}

enum Role {
    Hub {
        peers: Vec<Peer>,
        /// Messages of every peer, by index in `peers`, read by one thread each.
        events: Receiver<(usize, Result<Msg, String>)>,
        /// The hub's own pause window.
        pause: Option<PauseWindow>,
        /// Members the peers committed (at `Committed`).
        members: Vec<(u32, Vec<GroupMember>)>,
        slot: u32,
    },
    Host {
        reader: BufReader<TcpStream>,
        stream: TcpStream,
        /// Hub clock minus this host's clock, µs.
        offset_us: i64,
        pause: Option<PauseWindow>,
        members: Vec<GroupMember>,
    },
}

/// How long the hosts wait for every disk copy of a restore to complete.
const COPY_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A [`Coordinator`] whose barriers are passed by every host of the group.
pub struct TcpCoordinator {
    group: String,
    role: Role,
    welcome: Welcome,
    timeout: Duration,
    stop_timeout: Duration,
    /// Set when a barrier failed: the group is over.
    failed: Option<String>,
    /// Why this host fails the next barrier ([`Coordinator::abandon`]).
    local_why: Option<String>,
    instant: Option<(u64, Duration)>,
}

/// The hub, listening, before the hosts met.
pub struct Listening {
    listener: TcpListener,
    r: Rendezvous,
    group: String,
}

impl Listening {
    /// The address the hub listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Wait for every other host's hello (until `timeout`), decide with `welcome` (given
    /// every hello, the hub's own too, in slot order), and answer each host.
    pub fn meet(
        self,
        domains: Vec<String>,
        welcome: impl FnOnce(&[Hello]) -> Result<Welcome, String>,
    ) -> Result<TcpCoordinator, RendezvousError> {
        let Listening { listener, r, group } = self;
        let meeting = |why: String| RendezvousError::Meeting {
            group: group.clone(),
            why,
        };
        let own = Hello {
            job: r.job.clone(),
            group: group.clone(),
            slot: r.slot,
            host: r.host.clone(),
            domains,
        };
        let mut peers = accept_hellos(&listener, &r, &own).map_err(meeting)?;
        let mut hellos: Vec<Hello> = peers.iter().map(|p| p.hello.clone()).collect();
        hellos.push(own);
        hellos.sort_by_key(|h| h.slot);
        let decided = welcome(&hellos);
        for p in &mut peers {
            let msg = match &decided {
                Ok(w) => Msg::Welcome {
                    id: w.id,
                    clock_us: crate::store::unix_us(),
                    assign: w
                        .assign
                        .get(p.hello.slot as usize)
                        .cloned()
                        .unwrap_or_default(),
                },
                Err(why) => Msg::Refuse { why: why.clone() },
            };
            let _ = send(&mut p.stream, &msg);
        }
        let welcome = decided.map_err(meeting)?;
        let (tx, events) = mpsc::channel();
        for (i, p) in peers.iter().enumerate() {
            let stream = p.stream.try_clone().map_err(|e| meeting(e.to_string()))?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let m = recv(&mut reader, None);
                    let end = m.is_err();
                    if tx.send((i, m)).is_err() || end {
                        return;
                    }
                }
            });
        }
        Ok(TcpCoordinator {
            group,
            role: Role::Hub {
                peers,
                events,
                pause: None,
                members: Vec::new(),
                slot: r.slot,
            },
            welcome,
            timeout: r.timeout,
            stop_timeout: r.stop_timeout,
            failed: None,
            local_why: None,
            instant: None,
        })
    }
}

/// Accept one hello per other slot, checking each.
fn accept_hellos(listener: &TcpListener, r: &Rendezvous, own: &Hello) -> Result<Vec<Peer>, String> {
    let deadline = Instant::now() + r.timeout;
    let _ = listener.set_nonblocking(true);
    let mut peers: Vec<Peer> = Vec::new();
    while peers.len() + 1 < r.size as usize {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let mut have: Vec<u32> = peers.iter().map(|p| p.hello.slot).collect();
                    have.push(own.slot);
                    let missing: Vec<String> = (0..r.size)
                        .filter(|s| !have.contains(s))
                        .map(|s| s.to_string())
                        .collect();
                    return Err(format!(
                        "slot(s) {} did not join within {} s (is xckpt running on every node of the step?)",
                        missing.join(", "),
                        r.timeout.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(format!("accepting a host: {e}")),
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(clone);
        // A stray connection is dropped; it does not take a slot.
        let Ok(Msg::Hello(h)) = recv(&mut reader, Some(Instant::now() + Duration::from_secs(5)))
        else {
            continue;
        };
        if h.job != own.job || h.group != own.group {
            continue;
        }
        if h.slot >= r.size || h.slot == own.slot || peers.iter().any(|p| p.hello.slot == h.slot) {
            return Err(format!(
                "host {} claims slot {} (taken or out of 0..{}): run one xckpt per node",
                h.host, h.slot, r.size
            ));
        }
        peers.push(Peer { hello: h, stream });
    }
    Ok(peers)
}

impl TcpCoordinator {
    /// Start the hub: listen on the rendezvous address (`meet` then waits for the hosts).
    pub fn listen(r: &Rendezvous, group: &str) -> Result<Listening, RendezvousError> {
        let listener =
            TcpListener::bind(&r.listen_addr).map_err(|source| RendezvousError::Net {
                group: group.to_string(),
                what: "cannot listen on",
                addr: r.listen_addr.clone(),
                source,
            })?;
        Ok(Listening {
            listener,
            r: r.clone(),
            group: group.to_string(),
        })
    }

    /// Join the hub as a host other than the hub: say hello with the group's `domains` found
    /// here, and wait for the welcome. The hub may not listen yet: connecting is retried until
    /// the timeout.
    pub fn join(
        r: &Rendezvous,
        group: &str,
        domains: Vec<String>,
    ) -> Result<TcpCoordinator, RendezvousError> {
        let deadline = Instant::now() + r.timeout;
        let net = |what, source| RendezvousError::Net {
            group: group.to_string(),
            what,
            addr: r.hub_addr.clone(),
            source,
        };
        let mut stream = loop {
            match connect_once(&r.hub_addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(net("cannot reach the hub at", e))
                }
                // The hub may not listen yet.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = stream.set_nodelay(true);
        let t0 = crate::store::unix_us();
        let hello = Hello {
            job: r.job.clone(),
            group: group.to_string(),
            slot: r.slot,
            host: r.host.clone(),
            domains,
        };
        send(&mut stream, &Msg::Hello(hello)).map_err(|e| net("cannot talk to the hub", e))?;
        let clone = stream
            .try_clone()
            .map_err(|e| net("cannot talk to the hub", e))?;
        let mut reader = BufReader::new(clone);
        let meeting = |why: String| RendezvousError::Meeting {
            group: group.to_string(),
            why,
        };
        match recv(&mut reader, Some(deadline)) {
            Ok(Msg::Welcome {
                id,
                clock_us: hub,
                assign,
            }) => {
                let t1 = crate::store::unix_us();
                let offset_us = hub as i64 - ((t0 + t1) / 2) as i64;
                let mut all = vec![Vec::new(); r.size as usize];
                if let Some(a) = all.get_mut(r.slot as usize) {
                    *a = assign;
                }
                Ok(TcpCoordinator {
                    group: group.to_string(),
                    role: Role::Host {
                        reader,
                        stream,
                        offset_us,
                        pause: None,
                        members: Vec::new(),
                    },
                    welcome: Welcome { id, assign: all },
                    timeout: r.timeout,
                    stop_timeout: r.stop_timeout,
                    failed: None,
                    local_why: None,
                    instant: None,
                })
            }
            Ok(Msg::Refuse { why }) => Err(meeting(format!("the hub refused: {why}"))),
            Ok(other) => Err(meeting(format!(
                "the hub sent {other:?} instead of a welcome"
            ))),
            Err(e) => Err(meeting(format!(
                "no welcome from the hub at {}: {e}",
                r.hub_addr
            ))),
        }
    }

    /// The hub's decision: the group checkpoint's id and this host's assignment.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// What this host was assigned (a restore's members).
    pub fn assigned(&self, slot: u32) -> &[String] {
        self.welcome
            .assign
            .get(slot as usize)
            .map_or(&[], Vec::as_slice)
    }

    fn deadline(&self, phase: Phase) -> Duration {
        match phase {
            // A restore's `Restored` waits on the slowest host's streaming of its members'
            // pages (tens of seconds each under TCG): work, like pre-copy. Its paused domains
            // are new; no running guest waits on it.
            Phase::Converged | Phase::Committed | Phase::Served | Phase::Restored => self.timeout,
            Phase::Stopped | Phase::Copied => self.stop_timeout,
            // The copies take as long as the disks need; the domains run meanwhile. A host
            // that dies still ends the barrier.
            Phase::DisksLocal => COPY_TIMEOUT,
        }
    }

    fn barrier_error(&self, phase: Phase, reason: String) -> BarrierError {
        BarrierError {
            phase,
            reason: format!("group {}: {reason}", self.group),
        }
    }
}

/// One attempt to connect to `addr`, trying each address it resolves to.
fn connect_once(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
