//! A group checkpoint across hosts: the hosts meet before anything is paused.
//!
//! Every host is given the same domain list (the job's domains) and checkpoints those of them
//! that run on it. The hub checks that each domain runs on exactly one host and each host runs
//! at least one, and gives the group checkpoint its id from the group manifest on the shared
//! store; it alone records the group point, under the group's lock.

use super::manifest::GroupDir;
use super::rendezvous::{Hello, Rendezvous, RendezvousError, TcpCoordinator, Welcome};

/// Meet the other hosts of `r` for a checkpoint of `all` (the group's domains), `here` being
/// the ones that run on this host. On the hub, `gdir` gives the id (the caller holds its lock).
pub fn meet_checkpoint(
    r: &Rendezvous,
    gdir: &GroupDir,
    all: &[String],
    here: Vec<String>,
) -> Result<TcpCoordinator, RendezvousError> {
    if !r.hub {
        return TcpCoordinator::join(r, gdir.name(), here);
    }
    TcpCoordinator::listen(r, gdir.name())?.meet(here, |hellos| {
        check_placement(all, hellos)?;
        let id = gdir.manifest().map_err(|e| e.to_string())?.next_id();
        Ok(Welcome {
            id,
            assign: Vec::new(),
        })
    })
}

/// Each domain of `all` on exactly one host, each host with at least one, none unknown.
pub fn check_placement(all: &[String], hellos: &[Hello]) -> Result<(), String> {
    for h in hellos {
        if h.domains.is_empty() {
            return Err(format!(
                "host {} (slot {}) runs none of the group's domains ({}): run the step on the job's nodes only",
                h.host,
                h.slot,
                all.join(" ")
            ));
        }
        if let Some(d) = h.domains.iter().find(|d| !all.contains(d)) {
            return Err(format!(
                "host {} checkpoints domain {d}, which the hub's list does not name: give every task the same domains",
                h.host
            ));
        }
    }
    for d in all {
        let on: Vec<&str> = hellos
            .iter()
            .filter(|h| h.domains.contains(d))
            .map(|h| h.host.as_str())
            .collect();
        match on.len() {
            1 => {}
            0 => return Err(format!("domain {d} runs on no host of the step")),
            _ => {
                return Err(format!(
                    "domain {d} runs on several hosts: {}",
                    on.join(", ")
                ))
            }
        }
    }
    Ok(())
}
