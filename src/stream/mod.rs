//! Xen migration streams: the `xl` savefile header, the libxl stream and the libxc stream.
