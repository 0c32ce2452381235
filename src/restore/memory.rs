//! The domain memory of a filled restore (see `stream::fill`): [`XenMemory`] writes pages
//! into the domain `xl restore` is building, and [`pipe_drained`] tells when `xl restore` has
//! read the stream so far.

use std::error::Error as StdError;
use std::os::fd::AsFd;
use std::time::Duration;

use xen_sys::ForeignMemory;

use crate::guestmem::SharedPageMut;
use crate::hv::Pfn;

/// Writes pages into a domain of this host, by name; the domain and the foreign-memory handle
/// are looked up at the first write.
#[derive(Debug, Default)]
pub struct XenMemory {
    open: Option<(ForeignMemory, u32, String)>,
}

impl XenMemory {
    /// Write `batch` (ascending pfns, `None` for zeros) into domain `name`: one writable
    /// mapping of the batch, one copy per page.
    pub fn write(
        &mut self,
        name: &str,
        batch: &[(Pfn, Option<&[u8]>)],
    ) -> Result<(), Box<dyn StdError + Send + Sync>> {
        if self.open.as_ref().is_none_or(|(_, _, n)| n != name) {
            let domid = crate::backend::xen::domid_of(name)?;
            self.open = Some((ForeignMemory::open()?, domid, name.to_string()));
        }
        let Some((fm, domid, _)) = &self.open else {
            unreachable!("opened above")
        };
        let pfns: Vec<u64> = batch.iter().map(|&(pfn, _)| pfn).collect();
        let map = fm.map_write(*domid, &pfns)?;
        for (i, &(pfn, page)) in batch.iter().enumerate() {
            let dst = SharedPageMut::from_foreign(&map, i).map_err(|errno| {
                format!(
                    "pfn {pfn:#x} of domain {domid} cannot be mapped: {}",
                    std::io::Error::from_raw_os_error(errno)
                )
            })?;
            match page {
                Some(p) => dst.write_from(p),
                None => dst.zero(),
            }
        }
        Ok(())
    }
}

/// Return once the pipe whose write end is `pipe` holds nothing unread, checking between
/// polls whether its reader is `gone` (an error then: it exited before reading everything).
pub fn pipe_drained(
    pipe: &impl AsFd,
    mut gone: impl FnMut() -> std::io::Result<bool>,
) -> std::io::Result<()> {
    while rustix::io::ioctl_fionread(pipe)? > 0 {
        if gone()? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader exited before it read the whole stream",
            ));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}
