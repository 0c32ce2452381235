//! A log of checksummed records on a disk (`WL_DLOG=FILE`, one record every `WL_DLOG_MS` ms):
//! each record is 64 bytes, `R <seq, 10 digits> <payload> <crc, 8 hex>\n`, appended and
//! fsync'ed; `DLOG wrote=N` is printed after record N is durable. `workload dlog-check FILE`
//! reads such a log (e.g. from a disk snapshot) and prints `DLOGCHECK last=N bad=B tail=T`:
//! the last valid record of an unbroken run 1..N, the number of damaged records, and the
//! bytes after the last whole record.

use std::io::Write;
use std::time::Duration;

const RECORD: usize = 64;

fn fnv(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Record `seq`, 64 bytes.
pub fn record(seq: u64) -> Vec<u8> {
    let body = format!(
        "R {seq:010} {:032x}",
        u128::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    let line = format!("{body} {:08x}\n", fnv(body.as_bytes()));
    let mut v = line.into_bytes();
    v.resize(RECORD, b'\n');
    v
}

/// Start the disk-log thread if `WL_DLOG` is set.
pub fn spawn_from_env() {
    let Ok(path) = std::env::var("WL_DLOG") else {
        return;
    };
    let gap: u64 = std::env::var("WL_DLOG_MS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    std::thread::spawn(move || {
        let mut f = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                println!("DLOGERR open {path}: {e}");
                return;
            }
        };
        let mut seq = 0u64;
        loop {
            seq += 1;
            if let Err(e) = f.write_all(&record(seq)).and_then(|()| f.sync_data()) {
                println!("DLOGERR write {seq}: {e}");
                return;
            }
            println!("DLOG wrote={seq}");
            std::thread::sleep(Duration::from_millis(gap));
        }
    });
}

/// `workload dlog-check FILE`.
pub fn check_cmd(path: &str) -> i32 {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("dlog-check: {path}: {e}");
            return 1;
        }
    };
    let mut last = 0u64;
    let mut bad = 0u64;
    let whole = data.len() / RECORD;
    for (i, chunk) in data.chunks_exact(RECORD).enumerate() {
        if chunk == record(i as u64 + 1).as_slice() && bad == 0 {
            last = i as u64 + 1;
        } else {
            bad += 1;
        }
    }
    println!(
        "DLOGCHECK last={last} bad={bad} tail={}",
        data.len() - whole * RECORD
    );
    i32::from(bad != 0)
}
