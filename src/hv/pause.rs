//! The pause guard: a paused domain is always unpaused. INTERFACE STUB.
