//! A group across hosts launched by Slurm: one xckpt per node of a job step.
//!
//! ```text
//! srun -N NODES --ntasks-per-node=1 xckpt checkpoint --group JOB --slurm DOM...
//! srun -N NODES --ntasks-per-node=1 xckpt restore --group JOB[@N] --slurm
//! ```
//!
//! Each task reads its place from the step's environment: its task rank is its slot (a
//! restore puts a member on the host with the slot the member had), the step's first node
//! (node id 0) is the hub, and every task derives the same port from the job and step ids.
//! The first node's name comes from `scontrol show hostnames`, Slurm's own expansion of a
//! node list, so any hostlist syntax Slurm accepts works.

use std::process::Command;
use std::time::Duration;

use super::rendezvous::Rendezvous;

/// Errors of reading a Slurm job step.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// Not inside a job step.
    #[error("--slurm: {var} is not set: run xckpt as a Slurm job step, one task per node (srun -N NODES --ntasks-per-node=1 xckpt ...)")]
    NotInStep {
        /// The variable missing.
        var: &'static str,
    },
    /// A variable that is not what Slurm sets.
    #[error("--slurm: {var}={value:?} is not a number")]
    Bad {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// Several tasks on one node.
    #[error("--slurm: the step runs {tasks} tasks on {nodes} nodes: run one xckpt per node (srun --ntasks-per-node=1)")]
    TasksPerNode {
        /// Tasks in the step.
        tasks: u32,
        /// Nodes in the step.
        nodes: u32,
    },
    /// `scontrol show hostnames` failed.
    #[error("--slurm: `scontrol show hostnames {nodelist}` failed ({why}): is Slurm's scontrol on PATH?")]
    Scontrol {
        /// The node list.
        nodelist: String,
        /// Why.
        why: String,
    },
}

/// The part of a job step's environment a group needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmStep {
    /// `SLURM_JOB_ID`.
    pub job_id: u64,
    /// `SLURM_STEP_ID`.
    pub step_id: u64,
    /// `SLURM_PROCID`: this task's rank.
    pub procid: u32,
    /// `SLURM_STEP_NUM_TASKS` (or `SLURM_NTASKS`).
    pub tasks: u32,
    /// `SLURM_NODEID`: this node's index in the step.
    pub nodeid: u32,
    /// `SLURM_STEP_NODELIST` (or `SLURM_JOB_NODELIST`).
    pub nodelist: String,
    /// `SLURMD_NODENAME` (or the host name).
    pub nodename: String,
}

impl SlurmStep {
    /// Read the step from the environment `var` gives (`std::env::var` in the binary).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<SlurmStep, SlurmError> {
        let text = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|n| var(n))
                .ok_or(SlurmError::NotInStep { var: names[0] })
        };
        let num = |names: &[&'static str]| -> Result<u64, SlurmError> {
            let v = text(names)?;
            v.trim().parse().map_err(|_| SlurmError::Bad {
                var: names[0],
                value: v,
            })
        };
        let small = |names: &[&'static str]| -> Result<u32, SlurmError> {
            let v = num(names)?;
            u32::try_from(v).map_err(|_| SlurmError::Bad {
                var: names[0],
                value: v.to_string(),
            })
        };
        let step = SlurmStep {
            job_id: num(&["SLURM_JOB_ID", "SLURM_JOBID"])?,
            step_id: num(&["SLURM_STEP_ID", "SLURM_STEPID"])?,
            procid: small(&["SLURM_PROCID"])?,
            tasks: small(&["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"])?,
            nodeid: small(&["SLURM_NODEID"])?,
            nodelist: text(&[
                "SLURM_STEP_NODELIST",
                "SLURM_JOB_NODELIST",
                "SLURM_NODELIST",
            ])?,
            nodename: text(&["SLURMD_NODENAME", "HOSTNAME"])?,
        };
        let nodes = small(&["SLURM_STEP_NUM_NODES", "SLURM_NNODES"])?;
        if step.tasks != nodes {
            return Err(SlurmError::TasksPerNode {
                tasks: step.tasks,
                nodes,
            });
        }
        Ok(step)
    }

    /// The port every task of this step meets on, unless one is given: one per job step
    /// within 20000..40000, so two group steps on one node do not collide.
    pub fn port(&self) -> u16 {
        20000 + ((self.job_id.wrapping_mul(16).wrapping_add(self.step_id)) % 20000) as u16
    }

    /// The step's first node (node id 0, the hub), by `scontrol show hostnames`.
    pub fn first_node(&self) -> Result<String, SlurmError> {
        let fail = |why: String| SlurmError::Scontrol {
            nodelist: self.nodelist.clone(),
            why,
        };
        let out = Command::new("scontrol")
            .args(["show", "hostnames", &self.nodelist])
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
            .ok_or_else(|| fail("it printed no host".into()))
    }

    /// Where this task meets the others: the hub is the step's first node, at `hub` if given
    /// (`HOST:PORT`), else at that node's name and [`Self::port`].
    pub fn rendezvous(
        &self,
        hub: Option<&str>,
        timeout: Duration,
        stop_timeout: Duration,
    ) -> Result<Rendezvous, SlurmError> {
        let hub_addr = match hub {
            Some(h) => h.to_string(),
            None => format!("{}:{}", self.first_node()?, self.port()),
        };
        let port = hub_addr.rsplit_once(':').map_or("0", |(_, p)| p);
        Ok(Rendezvous {
            job: format!("{}.{}", self.job_id, self.step_id),
            slot: self.procid,
            size: self.tasks,
            hub: self.nodeid == 0,
            listen_addr: format!("0.0.0.0:{port}"),
            hub_addr,
            host: self.nodename.clone(),
            timeout,
            stop_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const STEP: &[(&str, &str)] = &[
        ("SLURM_JOB_ID", "4242"),
        ("SLURM_STEP_ID", "3"),
        ("SLURM_PROCID", "1"),
        ("SLURM_STEP_NUM_TASKS", "2"),
        ("SLURM_STEP_NUM_NODES", "2"),
        ("SLURM_NODEID", "0"),
        ("SLURM_STEP_NODELIST", "xhost[1-2]"),
        ("SLURMD_NODENAME", "xhost1"),
    ];

    #[test]
    fn reads_a_step_and_places_the_hub_on_node_zero() {
        let s = SlurmStep::from_env(env(STEP)).unwrap();
        assert_eq!((s.job_id, s.step_id, s.procid, s.tasks), (4242, 3, 1, 2));
        let r = s
            .rendezvous(
                Some("xhost1:7000"),
                Duration::from_secs(60),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(r.hub, "node id 0 is the hub whatever its task rank");
        assert_eq!(r.slot, 1);
        assert_eq!(r.listen_addr, "0.0.0.0:7000");
        assert_eq!(r.job, "4242.3");
        let p = s.port();
        assert!((20000..40000).contains(&p));
        let other = SlurmStep {
            step_id: 4,
            ..s.clone()
        };
        assert_ne!(
            other.port(),
            p,
            "two steps of a job meet on different ports"
        );
    }

    #[test]
    fn refuses_outside_a_step_and_with_several_tasks_per_node() {
        let e = SlurmStep::from_env(env(&[])).unwrap_err();
        assert!(e.to_string().contains("SLURM_JOB_ID is not set"), "{e}");
        let mut two: Vec<(&str, &str)> = STEP.to_vec();
        two.retain(|(k, _)| *k != "SLURM_STEP_NUM_TASKS");
        two.push(("SLURM_STEP_NUM_TASKS", "4"));
        let e = SlurmStep::from_env(env(&two)).unwrap_err();
        assert!(e.to_string().contains("one xckpt per node"), "{e}");
        let mut bad: Vec<(&str, &str)> = STEP.to_vec();
        bad.retain(|(k, _)| *k != "SLURM_PROCID");
        bad.push(("SLURM_PROCID", "x"));
        assert!(matches!(
            SlurmStep::from_env(env(&bad)),
            Err(SlurmError::Bad {
                var: "SLURM_PROCID",
                ..
            })
        ));
    }
}
