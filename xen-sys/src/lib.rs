//! Run-time loaded bindings to Xen's libxenctrl and libxenforeignmemory (Xen 4.17).
//!
//! This is the only crate of xckpt with FFI. The libraries are opened with `libloading` when a
//! handle is first needed, so the `xckpt` binary starts and explains itself on a host without Xen.
