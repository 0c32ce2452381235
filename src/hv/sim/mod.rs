//! The simulated domain. INTERFACE STUB.
