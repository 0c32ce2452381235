//! Xen migration streams: the `xl` savefile header, the libxl stream and the libxc stream.
//!
//! [`write_save_file`] turns any [`crate::compose::Image`] of a PV, PVH or HVM guest into an `xl`
//! save file (one format in Xen 4.17 to 4.22: libxl stream v2, libxc v3) that stock
//! `xl restore` consumes (from a file or a pipe), and
//! [`parse_save_file`] walks such a file (ours, or one written by `xl save`) and hands its
//! config, pages and state to a [`StreamSink`]. The layout is documented in `docs/stream.md`.
//!
//! Files: [`format`] (constants), [`records`] (record framing), [`state`] (state blobs),
//! `writer` / `libxc` / `hvm_context` (writing), `input` / `parser` /
//! `libxc_parse` (parsing), [`sink`] (what the parser delivers), [`error`].

pub mod error;
pub mod fill;
pub mod format;
mod hvm_context;
mod input;
mod libxc;
mod libxc_parse;
mod parser;
pub mod pv;
pub mod records;
pub mod sink;
pub mod state;
mod writer;

pub use error::{SinkError, StreamParseError, StreamWriteError};
pub use fill::{GuestFill, FILL_BATCH};
pub use libxc::{domain_header, image_header, SUPERPAGE_PFNS};
pub use parser::{parse_save_file, MAX_OPTIONAL_DATA};
pub use sink::{DomainHeader, ParsedHeader, StreamSink};
pub use writer::{
    libxl_header, write_save_file, write_save_file_filled, write_xl_header, PhaseUsage,
    StreamOptions, StreamStats, StreamTimings,
};
