//! Reading a point of a chain as one memory image: the newest copy of each pfn across the
//! layers up to N. INTERFACE STUB for ComposedImage; the `Image` trait is final.

use crate::hv::{GuestType, Pfn, StateBlob};
use crate::layer::{EvictPolicy, LayerReadError};

/// The resolved state of one pfn in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Not populated: restore leaves it unpopulated.
    Unpopulated,
    /// All zeros.
    Zero,
    /// Evicted by a policy: restores as zeros.
    Evicted(EvictPolicy),
    /// Stored data, in the given layer (index into the composed layers, 0 = base).
    Data(usize),
}

/// A memory image plus the VM state to go with it: what a restore consumes.
pub trait Image: Sync {
    /// Size of the pfn space.
    fn pfn_count(&self) -> u64;
    /// PV, PVH or HVM.
    fn guest_type(&self) -> GuestType;
    /// Number of vCPUs.
    fn vcpus(&self) -> u32;
    /// The state of `pfn`.
    fn page_state(&self, pfn: Pfn) -> PageState;
    /// Read `pfn` into `buf` (4096 bytes); zeros for anything but data.
    fn read_page(&self, pfn: Pfn, buf: &mut [u8]) -> Result<(), LayerReadError>;
    /// CPU and platform state of the top layer.
    fn state_blobs(&self) -> &[StateBlob];
    /// The domain config blob of the top layer.
    fn config(&self) -> &[u8];
}

/// Layers 0..=N of a chain, composed.
pub struct ComposedImage {}
