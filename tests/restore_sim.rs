//! Restore as a library, on the simulated back-end: single and group restores through a fake
//! `xl restore` that parses the stream from a pipe as the real one reads it, the group's undo
//! when a member fails, and a damaged frame that leaves no domain.

mod sim_util;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use std::os::fd::AsFd;
use xckpt::backend::sim::SimConfig;
use xckpt::backend::sim::{page_digest, SimDomain, Truth, TruthMode, UNPOPULATED_DIGEST};
use xckpt::capture::{checkpoint, CaptureOptions};
use xckpt::compose::{FeedOptions, Image, PageSource, PageState};
use xckpt::disk::nbd::{CopyState, Export};
use xckpt::disk::{Backend, BackendKind, DiskPlan, DiskSnapshot, DiskSpec};
use xckpt::group::{checkpoint_group, GroupDir, LocalCoordinator};
use xckpt::hv::{PageType, Pfn, StateBlob, PAGE_SIZE};
use xckpt::layer::LayerReadError;
use xckpt::restore::fetch::{Copying, Mover, Serving};
use xckpt::restore::{
    restore_group, restore_group_across, restore_point, RestoreError, RestoreOptions, WriteStream,
    XlTool,
};
use xckpt::store::Store;
use xckpt::stream::format::pfinfo;
use xckpt::stream::{
    parse_save_file, GuestFill, SinkError, StreamSink, StreamStats, StreamWriteError,
};

/// A domain the fake `xl` made: its name, whether it is paused, one digest per pfn.
#[derive(Debug, Clone)]
struct FakeDomain {
    paused: bool,
    digests: Vec<u64>,
    /// The config's disks, as the stream carried them.
    disks: serde_json::Value,
}

/// `xl` in a test: `restore` parses the stream from a pipe on its own thread and makes a
/// domain only if the whole stream parses; `fail` names domains whose restore fails after the
/// stream was read (as a libxl error would).
#[derive(Default)]
struct FakeXl {
    domains: Mutex<BTreeMap<String, FakeDomain>>,
    fail: Option<String>,
    destroyed: Mutex<Vec<String>>,
    /// How long each restore takes beyond its stream (a slow host).
    slow: std::time::Duration,
    /// Writing the domain's memory fails (its frames cannot be mapped).
    fill_fails: bool,
    /// The fill populates whole 2 MiB regions itself (as the real one does with libxenctrl).
    populates: bool,
}

/// Collects what `xl restore` would load.
#[derive(Default)]
struct Loaded {
    name: String,
    memory: Arc<Mutex<Memory>>,
    disks: serde_json::Value,
}

/// The memory of a domain the fake `xl restore` builds: each pfn's digest, written by the
/// stream or by the restore's fill, and which pfns the stream populated without data and the
/// fill wrote.
#[derive(Default)]
struct Memory {
    pages: BTreeMap<Pfn, u64>,
    allocated: std::collections::BTreeSet<Pfn>,
    filled: std::collections::BTreeSet<Pfn>,
}

/// What a frame holds after `XALLOC` until it is written: not zeros (Xen's allocator does not
/// promise them), so a pfn the fill missed shows.
const UNWRITTEN_DIGEST: u64 = 0x5eed_f00d_6a4b_a6e0;

/// The fill of the fake: pages go into the shared [`Memory`].
struct FakeFill {
    pipe: std::os::fd::OwnedFd,
    memory: Arc<Mutex<Memory>>,
    fails: bool,
    populates: bool,
    /// The pfns `begin` announced, and how many were written: writes come in that order.
    announced: Vec<Pfn>,
    written: usize,
}

impl GuestFill for FakeFill {
    fn drained(&mut self) -> std::io::Result<()> {
        xckpt::restore::pipe_drained(&self.pipe, || Ok(false))
    }

    fn populates(&self) -> bool {
        self.populates
    }

    fn begin(
        &mut self,
        _name: &str,
        pfns: &[Pfn],
        regions: &[Pfn],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        assert!(
            self.populates || regions.is_empty(),
            "regions for a fill that does not populate"
        );
        let mut m = self.memory.lock().unwrap();
        for &start in regions {
            assert_eq!(start % 512, 0, "region {start:#x} not aligned");
            for pfn in start..start + 512 {
                assert!(m.allocated.insert(pfn), "pfn {pfn:#x} populated twice");
                m.pages.entry(pfn).or_insert(UNWRITTEN_DIGEST);
            }
        }
        drop(m);
        self.announced = pfns.to_vec();
        Ok(())
    }

    fn write(
        &mut self,
        batch: &[(Pfn, Option<&[u8]>)],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.fails {
            return Err("frame cannot be mapped: Operation not permitted".into());
        }
        let mut m = self.memory.lock().unwrap();
        for &(pfn, page) in batch {
            assert_eq!(
                self.announced.get(self.written),
                Some(&pfn),
                "write out of order"
            );
            self.written += 1;
            let digest = page_digest(page.unwrap_or(&[0u8; PAGE_SIZE]));
            m.pages.insert(pfn, digest);
            m.filled.insert(pfn);
        }
        Ok(())
    }
}

impl StreamSink for Loaded {
    fn config(&mut self, config: &[u8]) -> Result<(), SinkError> {
        let v: serde_json::Value = serde_json::from_slice(config).expect("libxl JSON");
        // libxl JSON names the domain in c_info; a sim's config (SimConfig) at the top.
        let name = v["c_info"]["name"].as_str().or(v["name"].as_str());
        self.name = name.unwrap_or_default().to_string();
        self.disks = v["disks"].clone();
        Ok(())
    }
    fn page(&mut self, pfn: Pfn, ty: PageType, data: Option<&[u8]>) -> Result<(), SinkError> {
        let mut m = self.memory.lock().unwrap();
        match data {
            Some(data) => {
                m.pages.insert(pfn, page_digest(data));
            }
            None => {
                assert_eq!(
                    ty,
                    PageType::Other(pfinfo::XALLOC),
                    "pfn {pfn:#x} without data"
                );
                m.allocated.insert(pfn);
                // The fill may have come first: it wins, as libxc populates before it.
                m.pages.entry(pfn).or_insert(UNWRITTEN_DIGEST);
            }
        }
        Ok(())
    }
    fn state_blob(&mut self, _blob: StateBlob) -> Result<(), SinkError> {
        Ok(())
    }
}

impl XlTool for FakeXl {
    fn restore(
        &self,
        paused: bool,
        what: &str,
        write: &mut WriteStream<'_>,
    ) -> Result<StreamStats, RestoreError> {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        let (mut reader, mut writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
        let memory = Arc::new(Mutex::new(Memory::default()));
        let (written, parsed) = std::thread::scope(|s| {
            let shared = memory.clone();
            let xl = s.spawn(move || {
                let mut loaded = Loaded {
                    memory: shared,
                    ..Loaded::default()
                };
                let r = parse_save_file(&mut reader, &mut loaded).map(|h| (h, loaded));
                // Drain what is left, as a reader that stopped would let the pipe close.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                r
            });
            let mut fill = FakeFill {
                pipe: writer.as_fd().try_clone_to_owned().unwrap(),
                memory: memory.clone(),
                fails: self.fill_fails,
                populates: self.populates,
                announced: Vec::new(),
                written: 0,
            };
            let written = write(&mut writer, Some(&mut fill));
            drop(fill);
            drop(writer);
            (written, xl.join().unwrap())
        });
        let stats = written.map_err(|source| RestoreError::Stream {
            what: what.to_string(),
            source: Box::new(source),
        })?;
        let (header, loaded) = parsed.expect("a whole stream parses");
        std::thread::sleep(self.slow);
        if self.fail.as_deref() == Some(loaded.name.as_str()) {
            return Err(RestoreError::XlFailed {
                what: what.to_string(),
                status: "exit status: 1".into(),
            });
        }
        let m = memory.lock().unwrap();
        // The stream's pfns end at its last record; a fill may populate regions past it.
        let end = m.pages.keys().next_back().map_or(0, |&p| p + 1);
        let mut digests = vec![UNPOPULATED_DIGEST; header.pfn_count().max(end) as usize];
        assert_eq!(
            m.filled, m.allocated,
            "the fill wrote exactly the pfns populated for it"
        );
        for (&pfn, &d) in &m.pages {
            digests[pfn as usize] = d;
        }
        let mut doms = self.domains.lock().unwrap();
        assert!(
            !doms.contains_key(&loaded.name),
            "domain {} exists",
            loaded.name
        );
        let disks = loaded.disks;
        doms.insert(
            loaded.name,
            FakeDomain {
                paused,
                digests,
                disks,
            },
        );
        Ok(stats)
    }

    fn destroy(&self, name: &str) {
        self.domains.lock().unwrap().remove(name);
        self.destroyed.lock().unwrap().push(name.to_string());
    }

    fn unpause(&self, names: &[String]) -> Result<(), RestoreError> {
        let mut doms = self.domains.lock().unwrap();
        for n in names {
            doms.get_mut(n)
                .expect("unpause of a domain that exists")
                .paused = false;
        }
        Ok(())
    }
}

fn sim(name: &str, seed: u64, rate_mib_s: f64) -> Arc<SimDomain> {
    // The truth of each checkpoint, recorded at its pause.
    sim_util::uniform_sim(4096, name, seed, rate_mib_s, Some(TruthMode::Digest))
}

fn opts() -> CaptureOptions {
    sim_util::small_capture_options()
}

/// The restored domain's memory is the truth at the checkpoint's pause, pfn for pfn
/// (holes, zero pages and data).
fn assert_equal(truth: &Truth, dom: &FakeDomain, what: &str) {
    let mut digests = dom.digests.clone();
    digests.resize(truth.digests.len(), UNPOPULATED_DIGEST);
    let bad = truth.differing(&digests);
    assert!(
        bad.is_empty(),
        "{what}: {} pages differ, first {:?}",
        bad.len(),
        bad.first()
    );
}

#[test]
fn every_point_of_a_chain_restores_byte_equal_through_xl() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let dom = sim("solo", 7, 40.0);
    let chain = store.chain("solo").unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(checkpoint(&dom, &chain, &opts()).unwrap().layer.id);
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    dom.stop_workload();
    let truths = dom.truths();
    for (i, id) in ids.iter().enumerate() {
        let mut records = None;
        // `xl restore` populating every pfn, then the fill populating the whole regions.
        for populates in [false, true] {
            let xl = FakeXl {
                populates,
                ..FakeXl::default()
            };
            let ro = RestoreOptions {
                rename: None,
                paused: i == 1,
            };
            let r = restore_point(&store, "solo", Some(*id), None, &ro, &xl).unwrap();
            assert_eq!((r.id, r.name.as_str()), (*id, "solo"));
            // Every populated pfn was written into the domain, none sent through the stream.
            assert_eq!(r.stats.filled_pages, r.stats.pages, "layer {id}");
            assert!(
                r.stats.bytes < 1 << 20,
                "layer {id}: {} bytes",
                r.stats.bytes
            );
            // One PAGE_DATA record per 2 MiB region, whatever the pfns' type; none for the
            // whole regions the fill populates (the sim's hole leaves two partial ones).
            let regions = (r.stats.pages + r.stats.unpopulated_pfns).div_ceil(512);
            assert!(r.stats.page_records <= regions, "layer {id}: {:?}", r.stats);
            match records {
                None => records = Some(r.stats.page_records),
                Some(all) => assert!(
                    r.stats.page_records <= 2 && r.stats.page_records < all,
                    "layer {id}: {} records populating, {all} not",
                    r.stats.page_records
                ),
            }
            let doms = xl.domains.lock().unwrap();
            let d = &doms["solo"];
            assert_eq!(d.paused, i == 1);
            assert_equal(
                &truths[i],
                d,
                &format!("layer {id}, populating: {populates}"),
            );
        }
    }
    // Without @N: the newest layer.
    let xl = FakeXl::default();
    let r = restore_point(&store, "solo", None, None, &RestoreOptions::default(), &xl).unwrap();
    assert_eq!(r.id, *ids.last().unwrap());
    assert_equal(&truths[2], &xl.domains.lock().unwrap()["solo"], "newest");
    // A layer the chain does not have is refused by name, before xl runs.
    let err = restore_point(
        &store,
        "solo",
        Some(99),
        None,
        &RestoreOptions::default(),
        &xl,
    );
    assert!(
        matches!(err, Err(RestoreError::NoLayer { id: 99, .. })),
        "{err:?}"
    );
}

#[test]
fn the_feed_decodes_each_needed_frame_once_and_skips_superseded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let dom = sim("feed", 3, 60.0);
    let chain = store.chain("feed").unwrap();
    for _ in 0..3 {
        checkpoint(&dom, &chain, &opts()).unwrap();
    }
    dom.stop_workload();
    let image = chain.compose(None).unwrap();
    let all_frames: usize = image.layers().iter().map(|l| l.frame_count()).sum();
    for workers in [1, 3] {
        std::thread::scope(|s| {
            let opts = FeedOptions {
                workers,
                read_ahead: 2,
            };
            let mut feed = image.feed(s, opts);
            let mut buf = vec![0u8; PAGE_SIZE];
            for pfn in 0..image.pfn_count() {
                if let PageState::Data(_) = image.page_state(pfn) {
                    image.read_page(pfn, &mut buf).unwrap();
                    assert_eq!(feed.page(pfn).unwrap().bytes(), &buf[..], "pfn {pfn:#x}");
                }
            }
            assert_eq!(feed.frames_decoded() as usize, feed.frames_needed());
            assert!(feed.frames_needed() <= all_frames);
        });
    }
    // The base's frames whose pages the incrementals all replaced are not needed.
    let needed = std::thread::scope(|s| image.feed(s, FeedOptions::default()).frames_needed());
    eprintln!("frames needed {needed} of {all_frames}");
}

/// Flip a byte every 4 KiB inside the frames of layer `path` (they follow a preamble of at
/// most 128 bytes), so that live frames are hit whatever the layout of the pages.
fn damage(path: &std::path::Path) {
    let frame_bytes = xckpt::layer::LayerReader::open(path)
        .unwrap()
        .figures()
        .frame_bytes as usize;
    assert!(frame_bytes > 512, "a layer with frames");
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    for at in (128..frame_bytes - 128).step_by(4096) {
        bytes[at] ^= 0x40;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_frame_stops_the_stream_and_leaves_no_domain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // No workload: the base has no superseded copies, so every frame is needed.
    let dom = sim("hurt", 5, 0.0);
    let chain = store.chain("hurt").unwrap();
    let rec = checkpoint(&dom, &chain, &opts()).unwrap().layer;
    damage(&chain.layer_path(&rec));
    let xl = FakeXl::default();
    let err = restore_point(&store, "hurt", None, None, &RestoreOptions::default(), &xl)
        .expect_err("a damaged frame must fail the restore");
    let RestoreError::Damaged {
        layer: 1, source, ..
    } = &err
    else {
        panic!("expected a stream error naming the layer, got {err:?}");
    };
    let StreamWriteError::ReadPage { source, .. } = &**source else {
        panic!("expected the page that failed, got {source:?}");
    };
    assert!(
        matches!(
            source,
            LayerReadError::FrameChecksum { .. }
                | LayerReadError::FrameDecode { .. }
                | LayerReadError::DigestMismatch { .. }
        ),
        "{source:?}"
    );
    // The message names the layer file.
    let chain_text = format!("{}", source);
    assert!(chain_text.contains("layer-"), "{chain_text}");
    assert!(xl.domains.lock().unwrap().is_empty(), "a domain was left");
    // `xckpt verify` still finds it.
    assert!(chain.verify(None).is_err());
}

#[test]
fn a_fill_that_fails_cuts_the_stream_and_leaves_no_domain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let dom = sim("nofill", 6, 0.0);
    let chain = store.chain("nofill").unwrap();
    checkpoint(&dom, &chain, &opts()).unwrap();
    let xl = FakeXl {
        fill_fails: true,
        ..FakeXl::default()
    };
    let err = restore_point(
        &store,
        "nofill",
        None,
        None,
        &RestoreOptions::default(),
        &xl,
    )
    .expect_err("a failed fill must fail the restore");
    let RestoreError::Stream { source, .. } = &err else {
        panic!("expected a stream error, got {err:?}");
    };
    let StreamWriteError::Fill { name, pfn, .. } = &**source else {
        panic!("expected the fill's error, got {source:?}");
    };
    assert_eq!((name.as_str(), *pfn), ("nofill", 0));
    let text = format!("{source}");
    assert!(
        text.contains("domain nofill") && text.contains("left no domain"),
        "{text}"
    );
    assert!(xl.domains.lock().unwrap().is_empty(), "a domain was left");
}

fn group_of_two(store: &Store, root: &std::path::Path) -> (Vec<Arc<SimDomain>>, Vec<Truth>) {
    let doms = vec![sim("ga", 11, 30.0), sim("gb", 12, 30.0)];
    let members = sim_util::group_members(store, &doms);
    let report = checkpoint_group("job", 1, &members, &opts(), &mut LocalCoordinator).unwrap();
    GroupDir::open(root, "job")
        .unwrap()
        .record(report.point())
        .unwrap();
    for d in &doms {
        d.stop_workload();
    }
    let truths = doms
        .iter()
        .map(|d| d.truths().last().unwrap().clone())
        .collect();
    (doms, truths)
}

fn no_key(
    _: &str,
) -> Result<Option<xckpt::layer::LayerKey>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(None)
}

#[test]
fn a_group_restores_every_member_then_runs_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (_doms, truths) = group_of_two(&store, dir.path());
    let xl = FakeXl::default();
    let g = restore_group(dir.path(), "job", None, &mut no_key, &xl).unwrap();
    assert_eq!((g.id, g.members.len()), (1, 2));
    let doms = xl.domains.lock().unwrap();
    for (name, truth) in ["ga", "gb"].iter().zip(&truths) {
        let d = &doms[*name];
        assert!(!d.paused, "{name} left paused");
        assert_equal(truth, d, name);
    }
}

#[test]
fn a_failed_member_destroys_the_members_made_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    group_of_two(&store, dir.path());
    let xl = FakeXl {
        fail: Some("gb".into()),
        ..Default::default()
    };
    let err = restore_group(dir.path(), "job", Some(1), &mut no_key, &xl).unwrap_err();
    let RestoreError::Member { member, source, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(member, "gb");
    assert!(
        matches!(**source, RestoreError::XlFailed { .. }),
        "{source:?}"
    );
    assert!(xl.domains.lock().unwrap().is_empty(), "a member was left");
    assert_eq!(*xl.destroyed.lock().unwrap(), ["ga"]);
    // A damaged member: the same undo, and the error names the frame.
    let gb = store.chain("gb").unwrap();
    let rec = gb.manifest().unwrap().layers[0].clone();
    damage(&gb.layer_path(&rec));
    let xl = FakeXl::default();
    let err = restore_group(dir.path(), "job", None, &mut no_key, &xl).unwrap_err();
    assert!(
        matches!(&err, RestoreError::Member { member, .. } if member == "gb"),
        "{err:?}"
    );
    assert!(xl.domains.lock().unwrap().is_empty(), "a member was left");
    // A checkpoint the group does not have.
    let err = restore_group(dir.path(), "job", Some(9), &mut no_key, &xl).unwrap_err();
    assert!(
        matches!(err, RestoreError::NoGroupPoint { id: 9, .. }),
        "{err:?}"
    );
}

/// Record point 2 of group `job` at `root`: point 1 as a group across two hosts records it
/// (`ga` on slot 0, `gb` on slot 1).
fn place_on_two_hosts(root: &std::path::Path) {
    let g = GroupDir::open(root, "job").unwrap();
    let mut p = g.manifest().unwrap().points[0].clone();
    p.id = 2;
    p.members[0].slot = Some(0);
    p.members[1].slot = Some(1);
    g.record(p).unwrap();
}

/// Restore `job` on two hosts at once, the hub being slot 1 (the hosts swapped).
fn restore_on_two_hosts(
    root: &std::path::Path,
    xl0: &FakeXl,
    xl1: &FakeXl,
) -> (
    Result<xckpt::restore::GroupRestored, RestoreError>,
    Result<xckpt::restore::GroupRestored, RestoreError>,
) {
    let clients = Clients::default();
    let m0 = FakeMover::new("h0", &clients);
    let m1 = FakeMover::new("h1", &clients);
    restore_moving(root, (xl0, &m0), (xl1, &m1))
}

/// Restore `job` on two hosts at once (the hub on slot 1), each with its `xl` and mover.
fn restore_moving(
    root: &std::path::Path,
    (xl0, m0): (&FakeXl, &FakeMover),
    (xl1, m1): (&FakeXl, &FakeMover),
) -> (
    Result<xckpt::restore::GroupRestored, RestoreError>,
    Result<xckpt::restore::GroupRestored, RestoreError>,
) {
    let port = sim_util::free_port();
    // Far shorter than a member's restore: a restore has no barrier with running members
    // stopped, so the hosts wait for each other by the group timeout.
    let t = std::time::Duration::from_millis(50);
    std::thread::scope(|s| {
        let h0 = s.spawn(|| {
            let r = sim_util::rendezvous(port, 0, 2, false, t);
            restore_group_across(root, "job", None, &mut no_key, xl0, &r, m0)
        });
        let h1 = s.spawn(|| {
            let r = sim_util::rendezvous(port, 1, 2, true, t);
            restore_group_across(root, "job", None, &mut no_key, xl1, &r, m1)
        });
        (h0.join().unwrap(), h1.join().unwrap())
    })
}

#[test]
fn a_group_across_hosts_restores_each_member_on_the_host_of_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (_doms, truths) = group_of_two(&store, dir.path());
    place_on_two_hosts(dir.path());
    // Host 0 restores its member long after the hub has: the hub waits for it.
    let xl0 = FakeXl {
        slow: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let xl1 = FakeXl::default();
    let (r0, r1) = restore_on_two_hosts(dir.path(), &xl0, &xl1);
    let (r0, r1) = (r0.unwrap(), r1.unwrap());
    assert_eq!((r0.id, r1.id), (2, 2));
    for (xl, name, truth) in [(&xl0, "ga", &truths[0]), (&xl1, "gb", &truths[1])] {
        let doms = xl.domains.lock().unwrap();
        assert_eq!(doms.keys().collect::<Vec<_>>(), [name], "placed by slot");
        assert!(!doms[name].paused, "{name} left paused");
        assert_equal(truth, &doms[name], name);
    }
    // One host's member fails: the other host destroys its own, and says why.
    let xl0 = FakeXl {
        fail: Some("ga".into()),
        ..Default::default()
    };
    let xl1 = FakeXl::default();
    let (r0, r1) = restore_on_two_hosts(dir.path(), &xl0, &xl1);
    assert!(matches!(r0, Err(RestoreError::Member { .. })), "{r0:?}");
    let err = r1.unwrap_err().to_string();
    assert!(
        err.contains("h0 (slot 0)") && err.contains("destroyed"),
        "{err}"
    );
    assert!(xl1.domains.lock().unwrap().is_empty(), "a member was left");
    assert_eq!(*xl1.destroyed.lock().unwrap(), ["gb"]);
}

/// The NBD clients of each export (by name), shared by every fake host.
type Clients = Arc<Mutex<BTreeMap<String, usize>>>;

/// A host's disk mover in a test: serving records its export, an overlay is a name, and a
/// copy reads its export (a client) for a few polls, then completes.
struct FakeMover {
    name: &'static str,
    clients: Clients,
}

impl FakeMover {
    fn new(name: &'static str, clients: &Clients) -> FakeMover {
        FakeMover {
            name,
            clients: clients.clone(),
        }
    }
}

struct FakeServing(Export, Clients);

impl Serving for FakeServing {
    fn export(&self) -> &Export {
        &self.0
    }
    fn clients(&self) -> usize {
        self.1
            .lock()
            .unwrap()
            .get(&self.0.name)
            .copied()
            .unwrap_or(0)
    }
}

struct FakeCopy {
    export: String,
    left: Mutex<u64>,
    clients: Clients,
}

impl Copying for FakeCopy {
    fn progress(&self) -> Result<CopyState, String> {
        let mut left = self.left.lock().unwrap();
        if *left == 0 {
            return Ok(CopyState::Complete);
        }
        *left -= 1;
        if *left == 0 {
            // The overlay drops its backing file: the device model disconnects.
            *self.clients.lock().unwrap().get_mut(&self.export).unwrap() -= 1;
            return Ok(CopyState::Complete);
        }
        Ok(CopyState::Copying {
            done: (3 - *left) << 20,
            len: 3 << 20,
        })
    }
}

impl Mover for FakeMover {
    fn host(&self) -> String {
        self.name.to_string()
    }
    fn serve(&self, snap: &DiskSnapshot, name: &str) -> Result<Box<dyn Serving>, String> {
        assert_eq!(snap.host.as_deref(), Some(self.name), "serves only its own");
        let export = Export {
            host: self.name.into(),
            port: 10809,
            name: name.into(),
        };
        Ok(Box::new(FakeServing(export, self.clients.clone())))
    }
    fn overlay(&self, export: &Export, chain: &str, vdev: &str) -> Result<String, String> {
        assert_ne!(export.host, self.name, "fetches only from another host");
        Ok(format!("/local/{}/{chain}-{vdev}.qcow2", self.name))
    }
    fn copy(&self, domain: &str, _overlay: &str, vdev: &str) -> Result<Box<dyn Copying>, String> {
        let export = format!("{domain}-{vdev}");
        *self
            .clients
            .lock()
            .unwrap()
            .entry(export.clone())
            .or_default() += 1;
        Ok(Box::new(FakeCopy {
            export,
            left: Mutex::new(3),
            clients: self.clients.clone(),
        }))
    }
}

/// A disk back-end that takes a snapshot by naming it.
struct NamedSnapshots;

impl Backend for NamedSnapshots {
    fn kind(&self) -> BackendKind {
        BackendKind::Reflink
    }
    fn check(&self, _disk: &DiskSpec) -> Result<(), String> {
        Ok(())
    }
    fn snapshot(&self, _disk: &DiskSpec, name: &str) -> Result<String, String> {
        Ok(format!("/snap/{name}"))
    }
    fn clone_writable(&self, _s: &DiskSnapshot, name: &str) -> Result<String, String> {
        Ok(format!("/clone/{name}"))
    }
    fn discard(&self, _s: &DiskSnapshot) -> Result<(), String> {
        Ok(())
    }
}

/// Group `job`@1 of `ga` (slot 0) and `gb` (slot 1), each with disk xvda held by `holders`.
fn group_with_disks(root: &std::path::Path, holders: [&str; 2]) -> Vec<Truth> {
    let store = Store::open(root).unwrap();
    let doms: Vec<Arc<SimDomain>> = [("ga", 21), ("gb", 22)]
        .into_iter()
        .map(|(name, seed)| {
            let mut cfg = SimConfig::small(4096);
            cfg.name = name.into();
            cfg.seed = seed;
            cfg.auto_truth = Some(TruthMode::Digest);
            cfg.disks = vec![serde_json::json!({ "vdev": "xvda",
                "pdev_path": format!("/d/{name}.img"), "backend": "phy", "format": "raw" })];
            Arc::new(SimDomain::new(cfg).unwrap())
        })
        .collect();
    let mut members = sim_util::group_members(&store, &doms);
    for (m, holder) in members.iter_mut().zip(holders) {
        let spec = DiskSpec {
            vdev: "xvda".into(),
            pdev_path: format!("/d/{}.img", m.chain.name()),
            backend: "phy".into(),
            format: "raw".into(),
            domid: 1,
        };
        let plan = DiskPlan::choose(m.chain.name(), vec![spec], &BTreeMap::new(), |_| {
            Some(Box::new(NamedSnapshots) as Box<dyn Backend>)
        });
        m.disks = plan.unwrap().held_by(holder);
    }
    let report = checkpoint_group("job", 1, &members, &opts(), &mut LocalCoordinator).unwrap();
    let mut point = report.point();
    point.members[0].slot = Some(0);
    point.members[1].slot = Some(1);
    GroupDir::open(root, "job").unwrap().record(point).unwrap();
    doms.iter()
        .map(|d| d.truths().last().unwrap().clone())
        .collect()
}

#[test]
fn across_hosts_each_disk_follows_its_domain_and_its_source_serves_until_the_copy_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    // ga's disk is held by h0, gb's by h1; the restore puts ga (slot 0) on the host named h1
    // and gb on h0: the hosts swapped, each disk comes from the other host.
    let truths = group_with_disks(dir.path(), ["h0", "h1"]);
    let clients = Clients::default();
    let (m0, m1) = (
        FakeMover::new("h1", &clients),
        FakeMover::new("h0", &clients),
    );
    let (xl0, xl1) = (FakeXl::default(), FakeXl::default());
    let (r0, r1) = restore_moving(dir.path(), (&xl0, &m0), (&xl1, &m1));
    let (r0, r1) = (r0.unwrap(), r1.unwrap());
    for (r, xl, name, here, from, truth) in [
        (&r0, &xl0, "ga", "h1", "h0", &truths[0]),
        (&r1, &xl1, "gb", "h0", "h1", &truths[1]),
    ] {
        let doms = xl.domains.lock().unwrap();
        assert!(!doms[name].paused, "{name} left paused");
        assert_equal(truth, &doms[name], name);
        // The domain's disk is the local overlay of the other host's export, on qdisk.
        let disk = &doms[name].disks[0];
        assert_eq!(
            disk["pdev_path"],
            format!("/local/{here}/{name}-xvda.qcow2")
        );
        assert_eq!(
            (&disk["backend"], &disk["format"]),
            (&"qdisk".into(), &"qcow2".into())
        );
        let [c] = r.copies.as_slice() else {
            panic!("{name}: copies {:?}", r.copies)
        };
        assert_eq!((c.chain.as_str(), c.from.as_str()), (name, from));
        assert_eq!(c.to.as_deref(), Some(here));
        assert_eq!(c.state, Some(CopyState::Complete));
        assert!(
            c.updated_unix_ms >= c.since_unix_ms + 1000,
            "the copy took three polls: {c:?}"
        );
        assert!(r.local_after.unwrap() >= r.running_after);
    }
    // Every copy is complete in the shared store, and no export has a client left.
    let records = GroupDir::open(dir.path(), "job").unwrap().copies().unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|c| c.state == Some(CopyState::Complete)));
    assert!(clients.lock().unwrap().values().all(|n| *n == 0));
}

#[test]
fn across_hosts_a_disk_whose_holder_serves_no_one_is_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    // ga's disk is on host gone, which takes no part in the restore; gb's on h0, which
    // serves it to h1.
    group_with_disks(dir.path(), ["gone", "h0"]);
    let clients = Clients::default();
    let (m0, m1) = (
        FakeMover::new("h0", &clients),
        FakeMover::new("h1", &clients),
    );
    let (xl0, xl1) = (FakeXl::default(), FakeXl::default());
    let (r0, r1) = restore_moving(dir.path(), (&xl0, &m0), (&xl1, &m1));
    let Err(RestoreError::Member { member, source, .. }) = r0 else {
        panic!("{r0:?}")
    };
    assert_eq!(member, "ga");
    let why = source.to_string();
    assert!(
        why.contains("disk xvda of ga")
            && why.contains("on host gone")
            && why.contains("task on gone"),
        "{why}"
    );
    assert!(
        matches!(&r1, Err(RestoreError::GroupAborted { reason, .. }) if reason.contains("h0 (slot 0) failed") && reason.contains("on host gone")),
        "{r1:?}"
    );
    assert!(xl0.domains.lock().unwrap().is_empty() && xl1.domains.lock().unwrap().is_empty());
}
