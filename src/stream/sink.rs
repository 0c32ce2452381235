//! What the parser delivers, and to whom.

use super::error::SinkError;
use crate::hv::{GuestType, PageType, Pfn, StateBlob};

/// Receives the content of a save file as the parser walks it, in stream order:
/// `config`, `domain`, then `page`s and `state_blob`s interleaved as they appear, then `end`.
///
/// A stream may carry the same pfn or the same blob kind more than once (a live migration
/// stream resends dirty pages); the later copy supersedes the earlier one, as on restore.
pub trait StreamSink {
    /// The embedded domain config (libxl JSON when [`ParsedHeader::config_is_json`]), without
    /// its trailing NUL. Not called when the file carries no config.
    fn config(&mut self, config: &[u8]) -> Result<(), SinkError>;

    /// The libxc image and domain headers were read.
    fn domain(&mut self, header: &DomainHeader) -> Result<(), SinkError> {
        let _ = header;
        Ok(())
    }

    /// One pfn of a PAGE_DATA record. `data` is the 4096 bytes of the page for pages that
    /// carry data ([`PageType::Normal`], or [`PageType::Other`] for PV page tables), `None`
    /// for pfns without data: [`PageType::Unpopulated`] (XTAB), [`PageType::Broken`], and
    /// `PageType::Other(pfinfo::XALLOC)` (populate without data).
    fn page(&mut self, pfn: Pfn, ty: PageType, data: Option<&[u8]>) -> Result<(), SinkError>;

    /// A state record, mapped to its [`crate::hv::state_kind`] (HVM_CONTEXT, HVM_PARAMS,
    /// TSC_INFO, CPUID_POLICY, MSR_POLICY, QEMU_STATE, QEMU_XENSTORE); the data is the record
    /// body (after the emulator sub-header for QEMU records).
    fn state_blob(&mut self, blob: StateBlob) -> Result<(), SinkError>;

    /// The whole file was read and validated.
    fn end(&mut self, summary: &ParsedHeader) -> Result<(), SinkError> {
        let _ = summary;
        Ok(())
    }
}

/// The libxc headers of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainHeader {
    /// libxc stream version (2 or 3).
    pub libxc_version: u32,
    /// Domain header type (1 = x86 PV, 2 = x86 HVM, which PVH also uses).
    pub domain_type: u32,
    /// The guest type as the config names it, if it does.
    pub config_guest_type: Option<GuestType>,
    /// Xen (major, minor) of the saving host (0.x for converted legacy streams).
    pub xen_version: (u32, u32),
}

/// A summary of a parsed save file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    /// `xl` mandatory flags (JSON config, stream v2).
    pub xl_mandatory_flags: u32,
    /// `xl` optional flags.
    pub xl_optional_flags: u32,
    /// Whether the file carried a config.
    pub config_present: bool,
    /// Whether the config is libxl JSON (else xl config text).
    pub config_is_json: bool,
    /// The libxc headers.
    pub domain: DomainHeader,
    /// HVM or PVH: from the config, else HVM when an emulator record was present.
    pub guest_type: GuestType,
    /// The emulator id of the emulator records, if any (2 = qemu-xen).
    pub emulator_id: Option<u32>,
    /// Lowest and highest pfn named in PAGE_DATA records (inclusive), if any.
    pub pfn_range: Option<(Pfn, Pfn)>,
    /// Pages delivered with data.
    pub data_pages: u64,
    /// Pfns delivered without data (XTAB, BROKEN, XALLOC).
    pub nodata_pfns: u64,
    /// Pages after a VERIFY record (checked for size, not delivered).
    pub verify_pages: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

impl ParsedHeader {
    /// Size of the pfn space the file covers: highest pfn named + 1 (0 without pages).
    pub fn pfn_count(&self) -> u64 {
        self.pfn_range.map_or(0, |(_, hi)| hi + 1)
    }
}
