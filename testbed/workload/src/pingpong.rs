//! Ping-pong over TCP between two guests (`WL_PP_ROLE=ping|pong`, `WL_PP_PEER=IP` for ping,
//! port `WL_PP_PORT`, default 7000): ping sends 1, 2, 3, ... and waits for each echo; pong
//! checks each number is the previous one plus one and echoes it. Both print
//! `PP role=R n=N bad=B` every 50th message, so the two sides print the same `n` values. A
//! message one side saw but the other never sent (an inconsistent group checkpoint) shows as
//! `PPBAD` and `bad` > 0, or as a stalled connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Start the ping-pong thread if `WL_PP_ROLE` is set.
pub fn spawn_from_env() {
    let Ok(role) = std::env::var("WL_PP_ROLE") else {
        return;
    };
    let port: u16 = std::env::var("WL_PP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(7000);
    let gap: u64 = std::env::var("WL_PP_MS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(20);
    let peer = std::env::var("WL_PP_PEER").unwrap_or_default();
    std::thread::spawn(move || loop {
        let r = match role.as_str() {
            "pong" => pong(port),
            _ => ping(&peer, port, gap),
        };
        if let Err(e) = r {
            println!("PPERR role={role} {e}");
        }
        std::thread::sleep(Duration::from_secs(1));
    });
}

fn report(role: &str, n: u64, bad: u64) {
    if n.is_multiple_of(50) {
        println!("PP role={role} n={n} bad={bad}");
    }
}

fn ping(peer: &str, port: u16, gap: u64) -> std::io::Result<()> {
    let mut s = TcpStream::connect((peer, port))?;
    s.set_nodelay(true)?;
    println!("PPUP role=ping peer={peer}");
    let (mut n, mut bad) = (0u64, 0u64);
    let mut buf = [0u8; 8];
    loop {
        n += 1;
        s.write_all(&n.to_be_bytes())?;
        s.read_exact(&mut buf)?;
        let got = u64::from_be_bytes(buf);
        if got != n {
            bad += 1;
            println!("PPBAD role=ping sent={n} echo={got}");
        }
        report("ping", n, bad);
        std::thread::sleep(Duration::from_millis(gap));
    }
}

fn pong(port: u16) -> std::io::Result<()> {
    let l = TcpListener::bind(("0.0.0.0", port))?;
    let (mut s, from) = l.accept()?;
    s.set_nodelay(true)?;
    println!("PPUP role=pong from={from}");
    let (mut last, mut bad) = (0u64, 0u64);
    let mut buf = [0u8; 8];
    loop {
        s.read_exact(&mut buf)?;
        let got = u64::from_be_bytes(buf);
        if got != last + 1 {
            bad += 1;
            println!("PPBAD role=pong expected={} got={got}", last + 1);
        }
        last = got;
        s.write_all(&buf)?;
        report("pong", got, bad);
    }
}
