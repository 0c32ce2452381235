//! Constants and small helpers of the three layers of an `xl` save file (one format in Xen 4.17 to 4.22: libxl stream v2, libxc v3).
//!
//! Sources (read, not copied): `tools/xl/xl.h` (savefile header),
//! `docs/specs/libxl-migration-stream.pandoc` with `libxl_sr_stream_format.h`, and
//! `docs/specs/libxc-migration-stream.pandoc` with `xg_sr_stream_format.h`.

/// The 32-byte magic that opens an `xl` save file (note the embedded NUL).
pub const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
/// `SAVEFILE_BYTEORDER_VALUE`, written in the host's (little-endian) byte order.
pub const XL_BYTEORDER: u32 = 0x0102_0304;
/// Mandatory flag: the embedded config is libxl JSON.
pub const XL_FLAG_JSON: u32 = 1 << 0;
/// Mandatory flag: the stream after the header is a libxl migration v2 stream.
pub const XL_FLAG_STREAM_V2: u32 = 1 << 1;
/// Every mandatory flag this implementation (and xl 4.17) understands.
pub const XL_FLAGS_KNOWN: u32 = XL_FLAG_JSON | XL_FLAG_STREAM_V2;
/// Size of the fixed `xl` header: magic, byteorder, mandatory, optional flags, optional length.
pub const XL_HEADER_LEN: usize = 32 + 4 * 4;

/// libxl stream header ident, "LibxlFmt" (big-endian).
pub const LIBXL_IDENT: u64 = 0x4c69_6278_6c46_6d74;
/// libxl stream version.
pub const LIBXL_VERSION: u32 = 2;
/// libxl header option: big-endian stream (never accepted by libxl).
pub const LIBXL_OPT_BIG_ENDIAN: u32 = 1 << 0;
/// libxl header option: converted from a legacy stream.
pub const LIBXL_OPT_LEGACY: u32 = 1 << 1;
/// Size of the libxl stream header.
pub const LIBXL_HEADER_LEN: usize = 16;

/// libxl record types.
pub mod libxl_rec {
    /// End of the libxl stream.
    pub const END: u32 = 0;
    /// Hand the stream to libxc (no body).
    pub const LIBXC_CONTEXT: u32 = 1;
    /// Emulator xenstore keys (after the emulator sub-header).
    pub const EMULATOR_XENSTORE_DATA: u32 = 2;
    /// Emulator device state (after the emulator sub-header).
    pub const EMULATOR_CONTEXT: u32 = 3;
    /// End of a checkpoint (Remus/COLO only).
    pub const CHECKPOINT_END: u32 = 4;
    /// COLO control (Remus/COLO only).
    pub const CHECKPOINT_STATE: u32 = 5;
}

/// Emulator id of upstream QEMU ("qemu-xen") in the emulator sub-header.
pub const EMULATOR_QEMU_UPSTREAM: u32 = 2;
/// Emulator id of qemu-xen-traditional.
pub const EMULATOR_QEMU_TRADITIONAL: u32 = 1;
/// Size of the emulator sub-header (id, index).
pub const EMULATOR_HEADER_LEN: usize = 8;

/// libxc image header marker.
pub const IHDR_MARKER: u64 = u64::MAX;
/// libxc image header id, "XENF".
pub const IHDR_ID: u32 = 0x5845_4E46;
/// The libxc stream version we write.
pub const IHDR_VERSION: u32 = 3;
/// libxc image header option: big-endian.
pub const IHDR_OPT_BIG_ENDIAN: u16 = 1;
/// Size of the libxc image header.
pub const IHDR_LEN: usize = 24;
/// Size of the libxc domain header.
pub const DHDR_LEN: usize = 16;
/// Domain header type: x86 PV.
pub const DHDR_TYPE_X86_PV: u32 = 1;
/// Domain header type: x86 HVM (also used for PVH).
pub const DHDR_TYPE_X86_HVM: u32 = 2;
/// Page shift of x86 guests.
pub const PAGE_SHIFT: u16 = 12;

/// libxc record types.
pub mod libxc_rec {
    /// End of the libxc stream.
    pub const END: u32 = 0x00;
    /// A batch of pages.
    pub const PAGE_DATA: u32 = 0x01;
    /// PV: guest width and paging levels.
    pub const X86_PV_INFO: u32 = 0x02;
    /// PV: p2m frames.
    pub const X86_PV_P2M_FRAMES: u32 = 0x03;
    /// PV: basic vCPU context.
    pub const X86_PV_VCPU_BASIC: u32 = 0x04;
    /// PV: extended vCPU context.
    pub const X86_PV_VCPU_EXTENDED: u32 = 0x05;
    /// PV: xsave state.
    pub const X86_PV_VCPU_XSAVE: u32 = 0x06;
    /// PV: shared info page.
    pub const SHARED_INFO: u32 = 0x07;
    /// TSC mode and frequency.
    pub const X86_TSC_INFO: u32 = 0x08;
    /// HVM architectural state.
    pub const HVM_CONTEXT: u32 = 0x09;
    /// HVM params.
    pub const HVM_PARAMS: u32 = 0x0A;
    /// Deprecated toolstack blob.
    pub const TOOLSTACK: u32 = 0x0B;
    /// PV: vCPU MSRs.
    pub const X86_PV_VCPU_MSRS: u32 = 0x0C;
    /// Following pages are for verification only.
    pub const VERIFY: u32 = 0x0D;
    /// Checkpoint boundary (Remus/COLO only).
    pub const CHECKPOINT: u32 = 0x0E;
    /// COLO back channel.
    pub const CHECKPOINT_DIRTY_PFN_LIST: u32 = 0x0F;
    /// End of the static (execution-invariant) data.
    pub const STATIC_DATA_END: u32 = 0x10;
    /// CPUID policy leaves.
    pub const X86_CPUID_POLICY: u32 = 0x11;
    /// MSR policy entries.
    pub const X86_MSR_POLICY: u32 = 0x12;
    /// Bit set on optional records (restore may ignore them).
    pub const OPTIONAL: u32 = 0x8000_0000;
    /// xckpt's fence: an empty optional record (libxc skips it) written after the PAGE_DATA
    /// records of a filled restore. Once `xl restore` has read it, libxc has populated every pfn
    /// the records named (it handles one record before it reads the next).
    pub const XCKPT_FENCE: u32 = OPTIONAL | 0x0058_434B;
}

/// `XEN_DOMCTL_PFINFO_*` page types as they appear in a PAGE_DATA pfn word (bits 60..63 of
/// the word, i.e. the domctl value shifted left by 32).
pub mod pfinfo {
    /// Normal page (has data).
    pub const NOTAB: u32 = 0x0;
    /// Pinned-table flag, combined with L1TAB..L4TAB.
    pub const LPINTAB: u32 = 0x8000_0000;
    /// L1 page table (PV).
    pub const L1TAB: u32 = 0x1000_0000;
    /// L2 page table (PV).
    pub const L2TAB: u32 = 0x2000_0000;
    /// L3 page table (PV).
    pub const L3TAB: u32 = 0x3000_0000;
    /// L4 page table (PV).
    pub const L4TAB: u32 = 0x4000_0000;
    /// Broken page (no data).
    pub const BROKEN: u32 = 0xD000_0000;
    /// Allocate only (no data).
    pub const XALLOC: u32 = 0xE000_0000;
    /// Invalid / not populated (no data).
    pub const XTAB: u32 = 0xF000_0000;

    /// Whether libxc 4.17 knows the type.
    pub fn is_known(ty: u32) -> bool {
        matches!(ty, NOTAB | BROKEN | XALLOC | XTAB)
            || matches!(ty & !LPINTAB, L1TAB | L2TAB | L3TAB | L4TAB)
    }

    /// Whether a page of this type carries 4096 bytes in the record.
    pub fn has_data(ty: u32) -> bool {
        is_known(ty) && !matches!(ty, BROKEN | XALLOC | XTAB)
    }
}

/// Mask of the pfn in a PAGE_DATA pfn word.
pub const PAGE_DATA_PFN_MASK: u64 = 0x000f_ffff_ffff_ffff;
/// Pfns per PAGE_DATA record written by libxc (`MAX_BATCH_SIZE`), and by us.
pub const MAX_BATCH: usize = 1024;
/// Largest record body libxc accepts (`REC_LENGTH_MAX`, 128 MiB); we apply it to libxl too.
pub const REC_LENGTH_MAX: u32 = 128 << 20;
/// Size of a record header (type, length).
pub const REC_HEADER_LEN: usize = 8;

/// Size of one `xen_cpuid_leaf_t` (leaf, subleaf, a, b, c, d).
pub const CPUID_LEAF_LEN: usize = 24;
/// Size of one `xen_msr_entry_t` (idx, flags, val).
pub const MSR_ENTRY_LEN: usize = 16;
/// Size of an X86_TSC_INFO body.
pub const TSC_INFO_LEN: usize = 24;

/// `HVM_PARAM_STORE_PFN`: the xenstore ring page.
pub const HVM_PARAM_STORE_PFN: u64 = 1;
/// `HVM_PARAM_CONSOLE_PFN`: the PV console ring page.
pub const HVM_PARAM_CONSOLE_PFN: u64 = 17;

/// Zero bytes needed after a body of `len` bytes to reach 8-byte alignment.
pub fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_aligns_to_eight() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 7);
        assert_eq!(padding(8), 0);
        assert_eq!(padding(13), 3);
    }

    #[test]
    fn pfinfo_types() {
        assert!(pfinfo::has_data(pfinfo::NOTAB));
        assert!(pfinfo::has_data(pfinfo::L3TAB | pfinfo::LPINTAB));
        assert!(!pfinfo::has_data(pfinfo::XTAB));
        assert!(!pfinfo::has_data(pfinfo::XALLOC));
        assert!(!pfinfo::is_known(0x5000_0000));
        assert!(!pfinfo::is_known(0x8000_0000));
    }
}
