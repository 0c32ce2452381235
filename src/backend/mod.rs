//! The hypervisor back-ends: the roof of the library, implementing the [`crate::hv`] traits.
//!
//! * [`sim`]: an in-process domain with real memory, writers and ground truth, for tests and
//!   benchmarks.
//! * [`xen`]: a real Xen domain through libxenctrl (`xen-sys`), xenstore, QMP and `xl`.
//! * [`suite`]: the conformance checks, written once over the traits and run on both.
//!
//! A back-end may import any module below it (evict, compose, layer, pv); nothing in the
//! library imports a back-end except the conformance suite beside them.

pub mod sim;
pub mod suite;
pub mod xen;
