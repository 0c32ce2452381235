//! The stock Xen toolstack as xckpt talks to it: the `xl` command ([`xl`]), libxl's domain
//! config JSON ([`config`], the one module that reads or edits it), and QEMU's monitor at
//! libxl's socket ([`qmp`]). Ground floor: it imports only the vocabulary ([`crate::hv`]), so
//! every step of the path may use it.

pub mod config;
pub mod qmp;
pub mod xl;
