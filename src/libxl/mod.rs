//! The stock Xen toolstack as xckpt talks to it: the `xl` command and the domain config it
//! prints ([`xl`]), and QEMU's monitor at libxl's socket ([`qmp`]). Ground floor: it imports
//! nothing of xckpt, so every step of the path may use it.

pub mod qmp;
pub mod xl;
