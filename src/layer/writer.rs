//! Writing a layer file: frames as they come, then sections, table and trailer, then an
//! atomic rename into place.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{
    encode_state, preamble, FrameEntry, MetaDoc, SectionEntry, SectionKind, Trailer, MAGIC,
    SECTION_RAW, SECTION_ZSTD, VERSION, VERSION_SEALED,
};
use super::frame::MAX_FRAME_PAGES;
use super::seal::{FileSeal, LayerKey, MAX_SEALED_FRAMES};
use super::sink::Sink;
use super::{Codec, DigestKind, Frame, LayerIndex, LayerMeta, PageDigest};
use crate::failpoint::failpoint;
use crate::fileio::{create_private, sync_dir};
use crate::hv::{StateBlob, PAGE_SIZE};

/// Prefix of temporary layer files; the store removes leftovers with this prefix.
pub const TEMP_PREFIX: &str = ".tmp-layer-";
/// zstd level of the INDEX section.
const INDEX_LEVEL: i32 = 3;
/// Written through the page cache ([`Sink`]), the file is made durable, on a flusher thread,
/// every this many bytes.
const WRITEBACK_BYTES: u64 = 64 << 20;

/// Errors while writing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerWriteError {
    /// An I/O error on the named file.
    #[error("writing layer {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The destination name is taken; layers are never overwritten.
    #[error("layer {path} already exists; refusing to overwrite it")]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// A frame handed to the writer is malformed (a bug in the caller).
    #[error("layer {path}: frame {frame} is malformed: {reason}")]
    BadFrame {
        /// The temp file.
        path: PathBuf,
        /// Frame number.
        frame: u64,
        /// What is wrong.
        reason: String,
    },
    /// The header, index and frames disagree (a bug in the caller).
    #[error("layer {path}: {reason}")]
    Inconsistent {
        /// The temp file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
}

/// A layer being written to a temporary file in its chain directory. Dropping it unfinished
/// removes the temporary file.
pub struct LayerWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: Option<Sink>,
    pos: u64,
    frames: Vec<FrameEntry>,
    digests: Vec<u64>,
    /// Where frames start (the preamble's length).
    data_start: u64,
    seal: Option<FileSeal>,
    /// The flusher of the last full write-back window ([`Self::start_writeback`]).
    flushing: Option<std::thread::JoinHandle<()>>,
}

impl LayerWriter {
    /// Start a plain (version 1) layer in `dir` (a temp file, 0600, created exclusively, never
    /// through a symlink).
    pub fn create(dir: &Path) -> Result<Self, LayerWriteError> {
        Self::create_with_key(dir, None)
    }

    /// Start a layer in `dir`; with a key, an encrypted (version 2) layer that must be
    /// finished as layer `layer_id` (the id is bound into every frame and section).
    pub fn create_with_key(
        dir: &Path,
        key: Option<(&LayerKey, u64)>,
    ) -> Result<Self, LayerWriteError> {
        let (file, tmp) = create_temp(dir)?;
        let mut w = LayerWriter {
            dir: dir.to_path_buf(),
            tmp,
            out: Some(Sink::new(file)),
            pos: 0,
            frames: Vec::new(),
            digests: Vec::new(),
            data_start: 0,
            seal: None,
            flushing: None,
        };
        if let Some((key, id)) = key {
            w.seal = Some(FileSeal::new(key, id).map_err(|e| w.io(e))?);
        }
        failpoint("layer.create");
        match w.seal.as_ref().map(|s| *s.preamble()) {
            Some(p) => w.write(&p)?,
            None => w.write(&preamble())?,
        }
        w.data_start = w.pos;
        Ok(w)
    }

    /// Whether the layer is being encrypted.
    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// The hash of this layer's page digests and frame check codes: the frames pushed must be
    /// encoded with it ([`super::frame::encode_frame`]).
    pub fn digest_kind(&self) -> DigestKind {
        if self.seal.is_some() {
            DigestKind::SEALED
        } else {
            DigestKind::PLAIN
        }
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Append the next frame; returns the slot of its first page.
    pub fn push_frame(&mut self, frame: &Frame) -> Result<u64, LayerWriteError> {
        self.check_frame(frame)?;
        failpoint("layer.frame");
        let first_slot = self.digests.len() as u64;
        let k = self.frames.len() as u64;
        let sealed = self
            .seal
            .as_ref()
            .map(|s| s.seal_frame(k, frame.pages, frame.codec.code(), &frame.data));
        let (data, crc) = match &sealed {
            Some(d) => (d.as_slice(), crc32c::crc32c(d)),
            None => (frame.data.as_slice(), frame.crc),
        };
        let entry = FrameEntry {
            offset: self.pos,
            len: data.len() as u32,
            pages: frame.pages,
            codec: frame.codec.code(),
            crc,
        };
        self.write(data)?;
        self.frames.push(entry);
        self.digests.extend_from_slice(&frame.digests);
        Ok(first_slot)
    }

    fn check_frame(&self, frame: &Frame) -> Result<(), LayerWriteError> {
        let reason = if frame.pages == 0 || frame.pages > MAX_FRAME_PAGES {
            format!("{} pages (1..={MAX_FRAME_PAGES} allowed)", frame.pages)
        } else if frame.digests.len() != frame.pages as usize {
            format!("{} digests for {} pages", frame.digests.len(), frame.pages)
        } else if frame.kind != self.digest_kind() {
            format!(
                "digests taken with {:?}, the layer's are {:?}",
                frame.kind,
                self.digest_kind()
            )
        } else if self.seal.is_some() && self.frames.len() as u64 >= MAX_SEALED_FRAMES {
            "too many frames for one encrypted layer".to_string()
        } else if u32::try_from(frame.data.len() + 16).is_err() {
            format!("{} encoded bytes", frame.data.len())
        } else if frame.codec == Codec::Raw && frame.data.len() != frame.pages as usize * PAGE_SIZE
        {
            format!(
                "raw frame of {} bytes for {} pages",
                frame.data.len(),
                frame.pages
            )
        } else {
            return Ok(());
        };
        Err(LayerWriteError::BadFrame {
            path: self.tmp.clone(),
            frame: self.frames.len() as u64,
            reason,
        })
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.pos
    }

    /// Pages (slots) pushed so far.
    pub fn slots(&self) -> u64 {
        self.digests.len() as u64
    }

    /// The digest of the page in `slot` (as [`super::LayerReader::slot_digest`] will read it).
    pub fn digest(&self, slot: u64) -> Option<PageDigest> {
        PageDigest::of_slot(self.digest_kind(), &self.digests, slot)
    }

    /// Write index, state, config, meta and trailer; fsync; rename to `dest`; fsync the
    /// directory. Returns the final file size.
    pub fn finish(
        mut self,
        meta: &LayerMeta,
        index: &LayerIndex,
        state: &[StateBlob],
        config: &[u8],
        dest: &Path,
    ) -> Result<u64, LayerWriteError> {
        self.check_consistent(meta, index)?;
        if dest.symlink_metadata().is_ok() {
            return Err(LayerWriteError::Exists {
                path: dest.to_path_buf(),
            });
        }
        failpoint("layer.sections.before");
        let frames_len = self.pos - self.data_start;
        let table = self.write_sections(meta, index, state, config)?;
        failpoint("layer.sections.after");
        let table_bytes: Vec<u8> = table.iter().flat_map(|e| e.encode()).collect();
        let table_offset = self.pos;
        self.write(&table_bytes)?;
        let version = if self.seal.is_some() {
            VERSION_SEALED
        } else {
            VERSION
        };
        let trailer = Trailer {
            version,
            sections: table.len() as u32,
            table_offset,
            table_len: table_bytes.len() as u64,
            file_len: self.pos + super::format::TRAILER_LEN,
            frames_len,
            frame_count: self.frames.len() as u64,
            table_crc: crc32c::crc32c(&table_bytes),
        };
        failpoint("layer.trailer");
        self.write(&trailer.encode())?;
        self.sync_file()?;
        failpoint("layer.rename.before");
        publish(&self.tmp, dest)?;
        self.tmp = PathBuf::new();
        sync_dir(&self.dir).map_err(|source| LayerWriteError::Io {
            path: self.dir.clone(),
            source,
        })?;
        failpoint("layer.rename.after");
        Ok(trailer.file_len)
    }

    fn check_consistent(
        &self,
        meta: &LayerMeta,
        index: &LayerIndex,
    ) -> Result<(), LayerWriteError> {
        let slots = self.slots();
        let reason = if index.pfn_count() != meta.pfn_count {
            format!(
                "index covers {} pfns, header says {}",
                index.pfn_count(),
                meta.pfn_count
            )
        } else if let Some(id) = self
            .seal
            .as_ref()
            .map(FileSeal::layer_id)
            .filter(|&i| i != meta.id)
        {
            format!("encrypted as layer {id}, finished as layer {}", meta.id)
        } else if let Some((pfn, slot)) = index.data_slots().find(|&(_, s)| s >= slots) {
            format!("pfn {pfn:#x} points at slot {slot:#x}, but only {slots} slots were written")
        } else {
            return Ok(());
        };
        Err(LayerWriteError::Inconsistent {
            path: self.tmp.clone(),
            reason,
        })
    }

    fn write_sections(
        &mut self,
        meta: &LayerMeta,
        index: &LayerIndex,
        state: &[StateBlob],
        config: &[u8],
    ) -> Result<Vec<SectionEntry>, LayerWriteError> {
        let doc = MetaDoc {
            magic: String::from_utf8_lossy(&MAGIC).into_owned(),
            version: VERSION,
            meta: meta.clone(),
        };
        let meta_json = serde_json::to_vec_pretty(&doc).map_err(|e| self.io(e.into()))?;
        let index_raw = index.to_bytes();
        let index_z = zstd::bulk::compress(&index_raw, INDEX_LEVEL).map_err(|e| self.io(e))?;
        let frametab: Vec<u8> = self.frames.iter().flat_map(|f| f.encode()).collect();
        let digests: Vec<u8> = self.digests.iter().flat_map(|d| d.to_le_bytes()).collect();
        Ok(vec![
            self.write_section(SectionKind::Meta, SECTION_RAW, &meta_json)?,
            self.write_section(SectionKind::Config, SECTION_RAW, config)?,
            self.write_section(SectionKind::State, SECTION_RAW, &encode_state(state))?,
            self.write_section(SectionKind::Index, SECTION_ZSTD, &index_z)?,
            self.write_section(SectionKind::FrameTab, SECTION_RAW, &frametab)?,
            self.write_section(SectionKind::Digests, SECTION_RAW, &digests)?,
        ])
    }

    fn write_section(
        &mut self,
        kind: SectionKind,
        codec: u32,
        bytes: &[u8],
    ) -> Result<SectionEntry, LayerWriteError> {
        let sealed = self
            .seal
            .as_ref()
            .map(|s| s.seal_section(kind as u32, codec, bytes));
        let bytes = sealed.as_deref().unwrap_or(bytes);
        let entry = SectionEntry {
            kind: kind as u32,
            codec,
            offset: self.pos,
            len: bytes.len() as u64,
            crc: crc32c::crc32c(bytes),
        };
        self.write(bytes)?;
        Ok(entry)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), LayerWriteError> {
        let out = self.out.as_mut().ok_or_else(|| LayerWriteError::Io {
            path: self.tmp.clone(),
            source: std::io::Error::other("writer already closed"),
        })?;
        out.write_all(bytes).map_err(|source| LayerWriteError::Io {
            path: self.tmp.clone(),
            source,
        })?;
        let before = self.pos;
        self.pos += bytes.len() as u64;
        if before / WRITEBACK_BYTES != self.pos / WRITEBACK_BYTES {
            self.start_writeback();
        }
        Ok(())
    }

    /// Through the page cache: make what is written so far durable (`fdatasync` on a flusher
    /// thread, while the writer goes on) and drop it from the page cache. The writer waits for
    /// the previous window's flush first, so at most two windows are in flight and the time
    /// writes take follows the device, not the page cache (the encoder's `auto` mode weighs it
    /// against compression); the final fsync has little left to do, and a checkpoint does not
    /// push the dom0's own page cache out. Direct writes need none of it: they wait for the
    /// device themselves. Errors here are ignored: the final fsync reports them.
    fn start_writeback(&mut self) {
        self.wait_flush();
        let Some(Some(Ok(file))) = self.out.as_mut().map(Sink::cached_file) else {
            return;
        };
        let Ok(file) = file.try_clone() else {
            return;
        };
        let upto = std::num::NonZeroU64::new(self.pos - self.pos % WRITEBACK_BYTES);
        self.flushing = std::thread::Builder::new()
            .name("xckpt-flush".into())
            .spawn(move || {
                let _ = file.sync_data();
                let _ = rustix::fs::fadvise(&file, 0, upto, rustix::fs::Advice::DontNeed);
            })
            .ok();
    }

    /// Wait for the flusher thread, if one runs.
    fn wait_flush(&mut self) {
        if let Some(h) = self.flushing.take() {
            let _ = h.join();
        }
    }

    fn sync_file(&mut self) -> Result<(), LayerWriteError> {
        self.wait_flush();
        let out = self
            .out
            .take()
            .ok_or_else(|| self.io(std::io::Error::other("writer closed")))?;
        let file = out.into_file().map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> LayerWriteError {
        LayerWriteError::Io {
            path: self.tmp.clone(),
            source,
        }
    }
}

impl Drop for LayerWriter {
    fn drop(&mut self) {
        self.wait_flush();
        if !self.tmp.as_os_str().is_empty() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Create a fresh temp file in `dir`: exclusive, 0600, not following symlinks.
fn create_temp(dir: &Path) -> Result<(File, PathBuf), LayerWriteError> {
    let mut last = None;
    for _ in 0..16 {
        let name = format!(
            "{TEMP_PREFIX}{}-{:016x}.xcl",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = dir.join(name);
        match create_private(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((e, path)),
            Err(source) => return Err(LayerWriteError::Io { path, source }),
        }
    }
    let (source, path) =
        last.unwrap_or_else(|| (std::io::Error::other("no name"), dir.to_path_buf()));
    Err(LayerWriteError::Io { path, source })
}

/// Give the finished temp file its name. Link + unlink rather than rename: linking fails if
/// `dest` exists, so a layer is never replaced, even by a racing writer. On filesystems without
/// hard links, fall back to a rename after checking that `dest` is free.
fn publish(tmp: &Path, dest: &Path) -> Result<(), LayerWriteError> {
    let exists = || LayerWriteError::Exists {
        path: dest.to_path_buf(),
    };
    let dest_io = |source| LayerWriteError::Io {
        path: dest.to_path_buf(),
        source,
    };
    match std::fs::hard_link(tmp, dest) {
        Ok(()) => std::fs::remove_file(tmp).map_err(|source| LayerWriteError::Io {
            path: tmp.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(e)
            if e.raw_os_error() == Some(libc::EPERM)
                || e.kind() == std::io::ErrorKind::Unsupported =>
        {
            if dest.symlink_metadata().is_ok() {
                return Err(exists());
            }
            std::fs::rename(tmp, dest).map_err(dest_io)
        }
        Err(e) => Err(dest_io(e)),
    }
}
