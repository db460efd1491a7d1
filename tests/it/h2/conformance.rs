//! HTTP/2 conformance with hand-made frames: `tests/h2/conformance.py` (an h2spec-like suite of
//! RFC 9113 frame-level cases and floods, on Python's h2 package) against an in-process proxy
//! with h2c on, and a PING flood that does not keep the proxy from serving other clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::*;
use crate::tls::run_with_deadline;

/// The whole suite takes a second or two; this is the bound past which it is stuck.
const SUITE_DEADLINE: Duration = Duration::from_secs(60);

fn h2c_proxy(b1: &DemoBackend) -> Proxy {
    Proxy::start_with(vec![b1.config()], |c| {
        c.http2.h2c = true;
    })
}

#[test]
fn the_conformance_suite_passes_against_h2c() {
    let b1 = DemoBackend::start("b1");
    let proxy = h2c_proxy(&b1);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/conformance.py");
    let out = run_with_deadline(
        Command::new("python3").args([script, "127.0.0.1", &proxy.addr.port().to_string()]),
        b"",
        SUITE_DEADLINE,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conformance suite failed ({:?}):\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    // The proxy is still fine after everything the suite threw at it.
    assert_eq!(get(proxy.addr, "/").status, 200);
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn ping_frame() -> [u8; 17] {
    let mut f = [0u8; 17];
    f[2] = 8; // length
    f[3] = 0x6; // PING
    f[9..].copy_from_slice(b"floodme!");
    f
}

/// Reads frames until a GOAWAY; returns its error code, or `None` if the connection ended
/// first.
fn read_goaway_code(s: &mut TcpStream) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 && len >= 8 {
                return Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn a_ping_flood_on_one_connection_does_not_stop_other_clients_being_served() {
    let b1 = DemoBackend::start("b1");
    let proxy = h2c_proxy(&b1);

    let mut flood = connect(proxy.addr);
    // The preface and an empty SETTINGS, then PINGs for as long as the proxy takes them.
    flood
        .write_all(&[PREFACE, &[0, 0, 0, 0x4, 0, 0, 0, 0, 0]].concat())
        .expect("preface");
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let mut s = flood.try_clone().expect("clone");
        let (written, stop) = (written.clone(), stop.clone());
        thread::spawn(move || {
            let batch: Vec<u8> = ping_frame().repeat(1000);
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&batch).is_err() {
                    break;
                }
                written.fetch_add(batch.len(), Ordering::Relaxed);
            }
            // Whatever happens to the flood, the wait below ends.
            written.fetch_add(usize::MAX / 2, Ordering::Relaxed);
        })
    };
    let reader = {
        let mut s = flood.try_clone().expect("clone");
        thread::spawn(move || read_goaway_code(&mut s))
    };
    // Well past the control-frame burst (1000 frames, 17 KB of PINGs).
    wait_until("the flood to be under way", || {
        written.load(Ordering::Relaxed) >= 256 * 1024
    });

    for _ in 0..3 {
        let r = get(proxy.addr, "/");
        assert_eq!(r.status, 200, "a plain client during the flood");
    }

    let code = reader.join().expect("reader");
    stop.store(true, Ordering::Relaxed);
    let _ = flood.shutdown(std::net::Shutdown::Both);
    flooder.join().expect("flooder");
    assert_eq!(
        code,
        Some(0xb),
        "the flood ends in GOAWAY ENHANCE_YOUR_CALM"
    );
    assert_eq!(get(proxy.addr, "/").status, 200);
}
