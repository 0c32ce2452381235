//! Writing a complete `xl` save file from an [`Image`]:
//!
//! ```text
//! xl savefile header + optional data (u32 config length, libxl JSON config + NUL)
//! libxl header "LibxlFmt" v2
//!   LIBXC_CONTEXT                     -> the libxc stream (see libxc.rs)
//!   EMULATOR_XENSTORE_DATA (HVM, if captured)
//!   EMULATOR_CONTEXT (HVM: qemu-xen, index 0)
//!   END
//! ```
//!
//! The order is that of `libxl_stream_write.c` for a plain (non-checkpointed) save.

use std::io::{BufWriter, Write};

use super::error::StreamWriteError;
use super::fill::GuestFill;
use super::format::{
    libxl_rec, EMULATOR_QEMU_UPSTREAM, LIBXL_IDENT, LIBXL_VERSION, XL_BYTEORDER, XL_FLAG_JSON,
    XL_FLAG_STREAM_V2, XL_MAGIC,
};
use super::libxc::write_libxc_stream;
use super::records::{write_record, CountingWriter};
use super::state::{collect, StreamState};
use crate::compose::{Image, PageSource, PageState, ReadPages};
use crate::hv::GuestType;
use crate::libxl::config::{domain_name_of, guest_type_of, prepare_config, ConfigRewrite};
use crate::usage::{PhaseClock, Usage};

/// How to write a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// Restore under this name (`c_info.name`) with a fresh random uuid (`c_info.uuid`).
    pub rename: Option<String>,
    /// Keep `c_info.domid` as captured (`xl save -D`). Off by default: the domid is set to 0
    /// so `xl restore` picks a free one, as a plain `xl save` does.
    pub preserve_domid: bool,
    /// Xen (major, minor) written in the libxc domain header, informational only (`xl restore`
    /// logs it): the restore sets the Xen it runs on; the default is the oldest supported.
    pub xen_version: (u32, u32),
    /// Point these disks (vdev -> path) elsewhere in the embedded config.
    pub disk_paths: std::collections::BTreeMap<String, String>,
    /// The vdevs of `disk_paths` that are local qcow2 overlays of a disk on another host
    /// (served by qdisk).
    pub overlays: std::collections::BTreeSet<String>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            rename: None,
            preserve_domid: false,
            xen_version: {
                let oldest = xen_sys::version::SUPPORTED[0].version;
                (oldest.major, oldest.minor)
            },
            disk_paths: Default::default(),
            overlays: Default::default(),
        }
    }
}

/// What a written stream contained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes written in total.
    pub bytes: u64,
    /// Pages sent (with data or as zeros): `data_pages + zero_pages`.
    pub pages: u64,
    /// Pages sent with stored data.
    pub data_pages: u64,
    /// Zero or evicted pages, sent as zero-filled pages.
    pub zero_pages: u64,
    /// Pages written straight into the domain's memory rather than sent (a filled restore:
    /// `data_pages + zero_pages`, or 0).
    pub filled_pages: u64,
    /// Pfns not sent because they are unpopulated.
    pub unpopulated_pfns: u64,
    /// PAGE_DATA records.
    pub page_records: u64,
    /// libxc records (PAGE_DATA included) and libxl records.
    pub records: u64,
    /// Where the stream's time went.
    pub timings: StreamTimings,
}

/// Milliseconds spent in each part of writing a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTimings {
    /// Before the stream: opening the point's layers, checking and composing them (set by the
    /// restore that opened the point).
    pub open_ms: u64,
    /// Starting `xl restore` and opening the Xen handles of the fill (set by the restore).
    pub spawn_ms: u64,
    /// The stream's state, config and headers, and the plan of the frames to decode.
    pub prepare_ms: u64,
    /// The PAGE_DATA records (with their pages, unless filled).
    pub pages_ms: u64,
    /// A filled restore: waiting for `xl restore` to populate the pfns.
    pub drain_ms: u64,
    /// A filled restore: writing the domain's memory.
    pub fill_ms: u64,
    /// Of `fill_ms`: mapping the domain's frames and copying into them.
    pub fill_write_ms: u64,
    /// Of `fill_ms`: finding the domain and populating the whole regions the fill took.
    pub fill_begin_ms: u64,
    /// From the stream's end to the exit of the `xl restore` it fed (its own finish: loading
    /// the vCPU state, the devices, xenstore).
    pub xl_finish_ms: u64,
    /// This process's CPU and faults in the phases above.
    pub usage: PhaseUsage,
}

/// This process's CPU time and minor faults (all its threads) in each phase of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseUsage {
    /// Opening the point (as `open_ms`).
    pub open: Usage,
    /// As `spawn_ms`.
    pub spawn: Usage,
    /// As `prepare_ms`.
    pub prepare: Usage,
    /// The records before the fill, or the whole stream (as `pages_ms`).
    pub pages: Usage,
    /// Waiting for `xl restore` to read them (as `drain_ms`).
    pub drain: Usage,
    /// The fill (as `fill_ms`).
    pub fill: Usage,
    /// From the fill's end to the exit of `xl restore` (as `xl_finish_ms`).
    pub finish: Usage,
}

/// Write `image` as an `xl` save file (libxl stream v2, libxc v3: Xen 4.17 to 4.22) that stock
/// `xl restore` accepts.
///
/// Pages are taken in pfn order from [`Image::pages`] (for a composed image: each needed frame
/// decoded and checked once, by worker threads reading ahead) and written as they come, so
/// `out` may be a pipe into `xl restore`; a page that fails its check stops the stream there,
/// with the error. Memory holds one record's pfns, the frames in flight and a 1 MiB write
/// buffer.
/// Fails before writing anything if the image lacks state that the restore needs.
pub fn write_save_file(
    image: &dyn Image,
    opts: &StreamOptions,
    out: &mut impl Write,
) -> Result<StreamStats, StreamWriteError> {
    write_save_file_filled(image, opts, out, None)
}

/// [`write_save_file`] into an `xl restore` that lets the writer fill the domain's memory: with
/// `fill`, an HVM or PVH guest's pages are written into the domain being built instead of
/// being sent (see `fill.rs`); a PV guest's, whose page tables libxc rewrites as it loads them,
/// are sent as usual.
pub fn write_save_file_filled(
    image: &dyn Image,
    opts: &StreamOptions,
    out: &mut impl Write,
    fill: Option<&mut dyn GuestFill>,
) -> Result<StreamStats, StreamWriteError> {
    let clock = PhaseClock::start();
    let ty = image.guest_type();
    let st = collect(image.state_blobs(), ty)?;
    if st.pv.is_none() {
        check_special_pages(image, &st)?;
    }
    if let Some(named) = guest_type_of(image.config()).filter(|&t| t != ty) {
        return Err(StreamWriteError::BadConfig(format!(
            "it describes a {named:?} guest but the image is of a {ty:?} guest"
        )));
    }
    let rewrite = ConfigRewrite {
        rename: opts.rename.clone(),
        disk_paths: opts.disk_paths.clone(),
        overlays: opts.overlays.clone(),
        preserve_domid: opts.preserve_domid,
    };
    let config = prepare_config(image.config(), &rewrite)?;
    let name = domain_name_of(&config);
    let fill = fill.zip(name.as_deref()).map(|(f, n)| (n, f));

    let mut w = CountingWriter::new(BufWriter::with_capacity(1 << 20, out));
    let mut stats = StreamStats::default();
    write_xl_header(&mut w, &config)?;
    write_libxl_header(&mut w)?;
    write_record(&mut w, libxl_rec::LIBXC_CONTEXT, &[])?;
    // `xl restore` makes the domain from the config: let it start while the pages are planned.
    w.flush()?;
    std::thread::scope(|scope| {
        let mut fallback;
        let mut feed = image.pages(scope);
        let pages: &mut dyn PageSource = match feed.as_deref_mut() {
            Some(f) => f,
            None => {
                fallback = ReadPages(image);
                &mut fallback
            }
        };
        (stats.timings.prepare_ms, stats.timings.usage.prepare) = clock.read();
        write_libxc_stream(
            &mut w,
            image,
            pages,
            &st,
            opts.xen_version,
            fill,
            &mut stats,
        )
    })?;
    let emu = emulator_header();
    if ty == GuestType::Hvm {
        if let Some(xs) = st.qemu_xenstore {
            write_record(&mut w, libxl_rec::EMULATOR_XENSTORE_DATA, &[&emu, xs])?;
            stats.records += 1;
        }
        if let Some(q) = st.qemu {
            write_record(&mut w, libxl_rec::EMULATOR_CONTEXT, &[&emu, q])?;
            stats.records += 1;
        }
    }
    write_record(&mut w, libxl_rec::END, &[])?;
    stats.records += 2;
    w.flush()?;
    stats.bytes = w.count();
    stats.pages = stats.data_pages + stats.zero_pages;
    Ok(stats)
}

/// The xenstore ring page must be part of the image: the restore clears it and seeds the grant
/// table with it.
fn check_special_pages(image: &dyn Image, st: &StreamState<'_>) -> Result<(), StreamWriteError> {
    if st.store_pfn >= image.pfn_count() || image.page_state(st.store_pfn) == PageState::Unpopulated
    {
        return Err(StreamWriteError::BadState {
            what: "HVM_PARAMS",
            reason: format!(
                "the xenstore ring pfn {:#x} is not populated in the image",
                st.store_pfn
            ),
        });
    }
    Ok(())
}

/// The 48-byte `xl` header plus the optional data (config length, config).
pub fn write_xl_header(w: &mut impl Write, config: &[u8]) -> Result<(), StreamWriteError> {
    let config_len = u32::try_from(config.len())
        .ok()
        .filter(|&l| l < u32::MAX - 4)
        .ok_or_else(|| StreamWriteError::TooLarge("domain config over 4 GiB".into()))?;
    let mut flags = XL_FLAG_STREAM_V2;
    if !config.is_empty() {
        flags |= XL_FLAG_JSON;
    }
    w.write_all(XL_MAGIC)?;
    w.write_all(&XL_BYTEORDER.to_le_bytes())?;
    w.write_all(&flags.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?; // optional flags
    w.write_all(&(4 + config_len).to_le_bytes())?; // optional data length
    w.write_all(&config_len.to_le_bytes())?;
    w.write_all(config)?;
    Ok(())
}

/// The 16-byte libxl stream header (big-endian fields).
pub fn libxl_header() -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&LIBXL_IDENT.to_be_bytes());
    h[8..12].copy_from_slice(&LIBXL_VERSION.to_be_bytes());
    h
}

fn write_libxl_header(w: &mut impl Write) -> Result<(), StreamWriteError> {
    w.write_all(&libxl_header())?;
    Ok(())
}

/// Emulator sub-header: upstream QEMU (qemu-xen), index 0.
fn emulator_header() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&EMULATOR_QEMU_UPSTREAM.to_le_bytes());
    h
}
