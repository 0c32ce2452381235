//! Restoring a sim from an image, and the sim's CPU state blob.

use serde::{Deserialize, Serialize};

use super::content::mix;
use super::{SimConfig, SimDomain, SimError};
use crate::compose::{Image, PageState};
use crate::hv::{state_kind, Domain, PAGE_SIZE};

/// The sim's "CPU state": its write generation, per-writer progress and a register file
/// derived from them. Stored as JSON in a [`state_kind::SIM_CPU`] blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCpuState {
    /// The write generation counter.
    pub generation: u64,
    /// Pages written by each writer of the current workload.
    pub writer_pages: Vec<u64>,
    /// One pseudo-register per vCPU, a function of the generation.
    pub registers: Vec<u64>,
}

impl SimCpuState {
    /// The state for `generation`, `writer_pages` and `vcpus` vCPUs.
    pub fn capture(generation: u64, writer_pages: Vec<u64>, vcpus: u32) -> Self {
        let registers = (0..u64::from(vcpus))
            .map(|v| mix(generation, v, 0x5245_4753))
            .collect();
        SimCpuState {
            generation,
            writer_pages,
            registers,
        }
    }

    /// The blob bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("SimCpuState serialises")
    }

    /// Parse blob bytes.
    pub fn decode(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

impl SimDomain {
    /// The sim's restore: a fresh, paused (pause count 1), writer-less domain holding exactly
    /// `image`. Unpopulated pfns stay unpopulated; zero and evicted pages are populated zeros.
    /// The config blob is used when it parses as a [`SimConfig`] (pfn count, guest type and
    /// vCPUs always come from the image); the write generation comes from a SIM_CPU blob.
    pub fn from_image(image: &dyn Image) -> Result<SimDomain, SimError> {
        let mut cfg = serde_json::from_slice::<SimConfig>(image.config())
            .unwrap_or_else(|_| SimConfig::small(image.pfn_count().max(1)));
        cfg.pfn_count = image.pfn_count();
        cfg.guest_type = image.guest_type();
        cfg.vcpus = image.vcpus();
        cfg.populated = Vec::new();
        cfg.auto_truth = None;
        let dom = SimDomain::empty(cfg)?;
        let inner = &dom.inner;
        let mut buf = vec![0u8; PAGE_SIZE];
        for pfn in 0..inner.pfn_count {
            match image.page_state(pfn) {
                PageState::Unpopulated => continue,
                PageState::Zero | PageState::Evicted(_) => {}
                PageState::Data(_) => {
                    image
                        .read_page(pfn, &mut buf)
                        .map_err(|source| SimError::ImageRead {
                            name: inner.name.clone(),
                            pfn,
                            source,
                        })?;
                    inner.mem.page_mut(pfn).write_from(&buf);
                }
            }
            inner.populated.set(pfn);
        }
        let cpu = image
            .state_blobs()
            .iter()
            .find(|b| b.kind == state_kind::SIM_CPU);
        if let Some(state) = cpu.and_then(|b| SimCpuState::decode(&b.data).ok()) {
            inner
                .generation
                .store(state.generation, std::sync::atomic::Ordering::SeqCst);
        }
        dom.pause().expect("pausing a new sim cannot fail");
        Ok(dom)
    }
}
