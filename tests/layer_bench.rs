//! Throughput figures (not assertions): `cargo test --test layer_bench -- --ignored --nocapture`.
//! Set XCKPT_BENCH_MIB to change the image size (default 256 MiB).

mod layer_util;

use std::time::Instant;

use xckpt::compose::{ComposedImage, Image};
use xckpt::hv::PAGE_SIZE;
use xckpt::layer::{
    compress_frame, DigestKind, LayerIndex, LayerReadError, LayerReader, LayerWriter, PageEntry,
};

fn mib_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

/// A guest-like page: a third random, the rest structured and compressible.
fn guest_page(pfn: u64, out: &mut [u8]) {
    let mut rng = fastrand::Rng::with_seed(pfn);
    if pfn % 3 == 0 {
        rng.fill(out);
    } else {
        for (i, w) in out.chunks_exact_mut(8).enumerate() {
            let v = if i % 4 == 0 {
                rng.u64(..1 << 12)
            } else {
                pfn * 4096 + i as u64
            };
            w.copy_from_slice(&v.to_le_bytes());
        }
    }
}

#[test]
#[ignore]
fn bench_write_and_read() {
    let mib: usize = std::env::var("XCKPT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let pages = (mib << 20) / PAGE_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let mut image = vec![0u8; pages * PAGE_SIZE];
    for (pfn, p) in image.chunks_exact_mut(PAGE_SIZE).enumerate() {
        guest_page(pfn as u64, p);
    }
    let t = Instant::now();
    let frames: Vec<_> = image
        .chunks(64 * PAGE_SIZE)
        .map(|c| compress_frame(c, 1, DigestKind::PLAIN))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    let enc: usize = frames.iter().map(|f| f.data.len()).sum();
    println!(
        "compress_frame level 1, one thread: {:.0} MiB/s, ratio {:.2}",
        mib_per_s(image.len(), secs),
        image.len() as f64 / enc as f64
    );

    let t = Instant::now();
    let mut w = LayerWriter::create(dir.path()).unwrap();
    let mut index = LayerIndex::new(pages as u64 * 4);
    let mut pfn = 0u64;
    for f in &frames {
        let first = w.push_frame(f).unwrap();
        for i in 0..f.pages as u64 {
            index.set(pfn, PageEntry::Data, Some(first + i));
            pfn += 1;
        }
    }
    let push_secs = t.elapsed().as_secs_f64();
    let mut meta = layer_util::meta(1, None, pages as u64 * 4);
    meta.frame_pages = 64;
    let dest = dir.path().join("bench.xcl");
    let bytes = w.finish(&meta, &index, &[], &[], &dest).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "push_frame: {:.0} MiB/s of encoded frames; with finish+fsync {:.0} MiB/s ({bytes} bytes)",
        mib_per_s(enc, push_secs),
        mib_per_s(enc, secs)
    );

    let t = Instant::now();
    let r = LayerReader::open(&dest).unwrap();
    println!("open: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    r.verify().unwrap();
    println!(
        "verify: {:.0} MiB/s of pages",
        mib_per_s(image.len(), t.elapsed().as_secs_f64())
    );

    let t = Instant::now();
    let mut buf = vec![0u8; PAGE_SIZE];
    for pfn in 0..pages as u64 {
        r.read_page(pfn, &mut buf).unwrap();
    }
    println!(
        "read_page in pfn order: {:.0} MiB/s",
        mib_per_s(image.len(), t.elapsed().as_secs_f64())
    );
    drop(r);

    let t = Instant::now();
    let img = ComposedImage::from_layers(vec![LayerReader::open(&dest).unwrap()]).unwrap();
    println!(
        "compose open ({} pfns): {:.1} ms",
        img.pfn_count(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let mut n = 0usize;
    img.for_each_page(|pfn, _, data| -> Result<(), LayerReadError> {
        if let Some(d) = data {
            let at = pfn as usize * PAGE_SIZE;
            assert_eq!(d, &image[at..at + PAGE_SIZE]);
            n += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(n, pages);
    println!(
        "for_each_page (with compare): {:.0} MiB/s",
        mib_per_s(image.len(), t.elapsed().as_secs_f64())
    );
}
