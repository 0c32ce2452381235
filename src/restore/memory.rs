//! The domain memory of a filled restore (see `stream::fill`): [`XenMemory`] writes pages
//! into the domain `xl restore` is building, and [`pipe_drained`] tells when `xl restore` has
//! read the stream so far.

use std::error::Error as StdError;
use std::os::fd::AsFd;
use std::time::Duration;

use xen_sys::{ForeignMapping, ForeignMemory, XenCtrl};

use crate::guestmem::SharedPageMut;
use crate::hv::Pfn;
use crate::stream::SUPERPAGE_PFNS;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Frames mapped at once: 64 MiB of the domain, in one `xenforeignmemory_map` (a mapping and
/// an unmapping per window rather than per 2 MiB batch; its page tables take 128 KiB).
const WINDOW_PAGES: usize = 16 << 10;

/// The order of a region the fill populates: the stream's 2 MiB region of
/// [`SUPERPAGE_PFNS`] pfns, one extent.
const REGION_ORDER: u32 = SUPERPAGE_PFNS.trailing_zeros();

/// Writes pages into a domain of this host, found by name at [`XenMemory::begin`], through a
/// writable mapping of the next [`WINDOW_PAGES`] pfns to write.
pub struct XenMemory<'a> {
    fm: &'a ForeignMemory,
    /// libxenctrl, to populate whole regions (none: `xl restore` populates every pfn).
    xc: Option<&'a XenCtrl>,
    domid: u32,
    /// Every pfn to write, ascending, and how many were written.
    pfns: Vec<Pfn>,
    next: usize,
    /// The mapped window: `pfns[start..start + mapping.len()]`.
    window: Option<(ForeignMapping<'a>, usize)>,
}

impl<'a> XenMemory<'a> {
    /// A writer through the foreign-memory handle `fm`, populating regions through `xc`.
    pub fn new(fm: &'a ForeignMemory, xc: Option<&'a XenCtrl>) -> Self {
        XenMemory {
            fm,
            xc,
            domid: 0,
            pfns: Vec::new(),
            next: 0,
            window: None,
        }
    }

    /// Whether [`Self::begin`] can populate whole regions.
    pub fn populates(&self) -> bool {
        self.xc.is_some()
    }

    /// Find domain `name`, populate the 2 MiB `regions` (their first pfns) and take the pfns
    /// that will be written, in order.
    pub fn begin(&mut self, name: &str, pfns: &[Pfn], regions: &[Pfn]) -> Result<(), BoxError> {
        self.domid = crate::backend::xen::domid_of(name)?;
        if !regions.is_empty() {
            let xc = self
                .xc
                .ok_or("no libxenctrl handle to populate the domain's memory")?;
            for &start in regions {
                self.populate(xc, start)?;
            }
        }
        self.pfns = pfns.to_vec();
        self.next = 0;
        self.window = None;
        Ok(())
    }

    /// Populate the 2 MiB region from `start` with one 2 MiB frame, or, where Xen has none
    /// free, with 512 frames of 4 KiB (what `xl restore` would have allocated).
    fn populate(&self, xc: &XenCtrl, start: Pfn) -> Result<(), BoxError> {
        if xc
            .populate_physmap(self.domid, REGION_ORDER, &[start])
            .is_ok()
        {
            return Ok(());
        }
        let pfns: Vec<Pfn> = (start..start + SUPERPAGE_PFNS).collect();
        xc.populate_physmap(self.domid, 0, &pfns).map_err(|e| {
            format!(
                "pfns {start:#x}.. of domain {} cannot be populated: {e}",
                self.domid
            )
            .into()
        })
    }

    /// Write `batch` (the next pfns of those given to `begin`, `None` for zeros): one copy per
    /// page into the mapped window, the next window mapped when this one is full.
    pub fn write(&mut self, batch: &[(Pfn, Option<&[u8]>)]) -> Result<(), BoxError> {
        let fm = self.fm;
        for &(pfn, page) in batch {
            if self.pfns.get(self.next) != Some(&pfn) {
                return Err(format!("pfn {pfn:#x} was not the next one announced").into());
            }
            let in_window = matches!(&self.window, Some((m, start)) if self.next < start + m.len());
            if !in_window {
                // Unmap the full window before mapping the next.
                self.window = None;
                let end = (self.next + WINDOW_PAGES).min(self.pfns.len());
                let map = fm.map_write(self.domid, &self.pfns[self.next..end])?;
                self.window = Some((map, self.next));
            }
            let Some((map, start)) = &self.window else {
                unreachable!("mapped above")
            };
            let dst = SharedPageMut::from_foreign(map, self.next - start).map_err(|errno| {
                format!(
                    "pfn {pfn:#x} of domain {} cannot be mapped: {}",
                    self.domid,
                    std::io::Error::from_raw_os_error(errno)
                )
            })?;
            match page {
                Some(p) => dst.write_from(p),
                None => dst.zero(),
            }
            self.next += 1;
        }
        Ok(())
    }
}

/// The first and the longest pause between two looks at the pipe while it drains.
const DRAIN_POLL: (Duration, Duration) = (Duration::from_micros(250), Duration::from_millis(2));

/// Return once the pipe whose write end is `pipe` holds nothing unread, checking between
/// polls whether its reader is `gone` (an error then: it exited before reading everything).
/// The pauses grow from [`DRAIN_POLL`]'s first to its longest: `xl restore` reads the stream
/// only once it has made the domain (a few hundred ms), and on a one-vCPU dom0 every look
/// takes CPU from it.
pub fn pipe_drained(
    pipe: &impl AsFd,
    mut gone: impl FnMut() -> std::io::Result<bool>,
) -> std::io::Result<()> {
    let mut pause = DRAIN_POLL.0;
    while rustix::io::ioctl_fionread(pipe)? > 0 {
        if gone()? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader exited before it read the whole stream",
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(DRAIN_POLL.1);
    }
    Ok(())
}
