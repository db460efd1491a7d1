//! Gigabyte transfers through TLS with curl (which speaks HTTP/2 to lb here, by ALPN), in
//! constant memory: the proxy decrypts and encrypts as it streams and never holds more than
//! its bounded buffers and windows (as `streaming.rs` checks for plain HTTP/1.1).

use std::io::{Read, Write};

use super::*;

const GIB: u64 = 1 << 30;
/// Peak RSS the proxy may reach while streaming any amount of data, as for plain HTTP.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
const IO_SIZE: usize = 256 * 1024;

fn lb_for_transfers(b: &DemoBackend) -> Lb {
    Lb::start(&format!(
        "access_log = false\n{}",
        config_text("", &[&site().a], &[b])
    ))
}

/// curl to `https://a.test:PORT{path}` at `addr`, its output piped to us.
fn curl_command(addr: SocketAddr, path: &str) -> Command {
    let port = addr.port();
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--cacert", site().pki.ca_path()])
        .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
        .arg(format!("https://a.test:{port}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for curl to finish; returns its stderr, failing the test if curl failed.
fn finish(mut child: Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read curl's stderr");
    let status = child.wait().expect("wait for curl");
    assert!(status.success(), "curl: {status}: {err}");
    err
}

/// Runs `transfer` against a fresh proxy and reports its time, rate and the proxy's peak RSS.
fn measured(what: &str, transfer: fn(SocketAddr)) {
    let backend = DemoBackend::start("b");
    let lb = lb_for_transfers(&backend);
    let before = lb.process.peak_rss_kib();
    let started = Instant::now();
    transfer(lb.tls);
    let took = started.elapsed();
    let peak = lb.process.peak_rss_kib();
    eprintln!(
        "TLS {what}: 1024 MiB in {:.2}s ({:.0} MiB/s), proxy peak RSS {peak} KiB (at start \
         {before} KiB)",
        took.as_secs_f64(),
        1024.0 / took.as_secs_f64(),
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "TLS {what}: proxy peak RSS {peak} KiB is over {RSS_LIMIT_KIB} KiB"
    );
}

#[test]
fn download_1gib_through_tls_in_constant_memory() {
    measured("download", download_1gib);
}

#[test]
fn upload_1gib_through_tls_in_constant_memory() {
    measured("upload", upload_1gib);
}

/// Downloads 1 GiB from `/bytes/N` with curl and checks every byte against the pattern.
pub fn download_1gib(addr: SocketAddr) {
    let mut child = curl_command(addr, &format!("/bytes/{GIB}"))
        .args([
            "-w",
            "%{stderr}status %{http_code} bytes %{size_download}\n",
        ])
        .spawn()
        .expect("spawn curl");
    let mut out = child.stdout.take().expect("stdout");
    // Every byte, checked against the pattern the backend sends.
    let mut check = PatternCheck::new(IO_SIZE);
    let mut chunk = vec![0u8; IO_SIZE];
    loop {
        let n = out.read(&mut chunk).expect("read curl's output");
        if n == 0 {
            break;
        }
        check.feed(&chunk[..n]);
    }
    let err = finish(child);
    assert!(err.contains("status 200"), "{err}");
    assert_eq!(check.offset, GIB, "{err}");
}

/// Uploads 1 GiB of the pattern to `/sink` with curl, from a pipe, and checks what the backend
/// says it received.
pub fn upload_1gib(addr: SocketAddr) {
    // From a pipe, curl does not know the size: it streams the body chunked.
    let mut child = curl_command(addr, "/sink")
        .args([
            "-X",
            "POST",
            "-T",
            "-",
            "-H",
            "Expect:",
            "-D",
            "-",
            "-o",
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let mut input = child.stdin.take().expect("stdin");
    let writer = thread::spawn(move || {
        let window = pattern_window(IO_SIZE);
        let mut sent = 0u64;
        while sent < GIB {
            let n = (IO_SIZE as u64).min(GIB - sent) as usize;
            let start = (sent % 251) as usize;
            input
                .write_all(&window[start..start + n])
                .expect("write to curl");
            sent += n as u64;
        }
    });
    let mut head = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut head)
        .expect("read curl's output");
    writer.join().expect("writer");
    let err = finish(child);
    let resp = parse_response(&head);
    assert_eq!(resp.status, 200, "{resp:?} {err}");
    assert_eq!(
        resp.header("x-received-bytes"),
        Some(GIB.to_string().as_str()),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("x-received-sum"),
        Some(pattern_sum(GIB).to_string().as_str()),
        "{resp:?}"
    );
}

/// Downloads `/bytes/{len}{query}` with curl, checking every byte; returns curl's report.
fn download_checked(addr: SocketAddr, len: u64, query: &str) -> String {
    let mut child = curl_command(addr, &format!("/bytes/{len}{query}"))
        .args(["-w", "%{stderr}status %{http_code}\n"])
        .spawn()
        .expect("spawn curl");
    let mut out = child.stdout.take().expect("stdout");
    let mut check = PatternCheck::new(IO_SIZE);
    let mut chunk = vec![0u8; IO_SIZE];
    loop {
        let n = out.read(&mut chunk).expect("read curl's output");
        if n == 0 {
            break;
        }
        check.feed(&chunk[..n]);
    }
    let err = finish(child);
    assert_eq!(check.offset, len, "{query}: {err}");
    err
}

#[test]
fn every_response_framing_arrives_whole_through_tls() {
    let backend = DemoBackend::start("b");
    let lb = lb_for_transfers(&backend);
    const LEN: u64 = 16 << 20;
    // A close-delimited body ends where the connection does: over TLS, only lb's close_notify
    // tells curl the end was not a truncation (curl fails on an EOF without it).
    for query in ["", "?chunked=1", "?close=1"] {
        let err = download_checked(lb.tls, LEN, query);
        assert!(err.contains("status 200"), "{query}: {err}");
    }
}

#[test]
fn clients_vanishing_mid_download_through_tls_leak_nothing() {
    let backend = DemoBackend::start("b");
    let mut lb = lb_for_transfers(&backend);
    lb.assert_serves();
    let fds = fd_count(lb.pid());
    for _ in 0..20 {
        // curl reads a megabyte or so of a 100 MB body, then we stop reading and it is gone.
        let mut child = curl_command(lb.tls, "/bytes/100000000")
            .spawn()
            .expect("spawn curl");
        let mut out = child.stdout.take().expect("stdout");
        let mut got = 0;
        let mut chunk = vec![0u8; IO_SIZE];
        while got < 1 << 20 {
            let n = out.read(&mut chunk).expect("read curl's output");
            assert!(n > 0, "curl's output ended early");
            got += n;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    // The pool keeps one backend connection at most.
    wait_until("lb's descriptors to come back", || {
        fd_count(lb.pid()) <= fds + 1
    });
    lb.assert_serves();
}

#[test]
fn an_early_answer_to_an_upload_through_tls_reaches_the_client() {
    // /echo refuses a body over 64 MiB as soon as it sees the head, while curl is still
    // sending: lb must get the 413 through the TLS connection it is reading an upload from.
    let backend = DemoBackend::start("b");
    let lb = lb_for_transfers(&backend);
    let body = site().pki.path("upload-100mb.bin");
    std::fs::write(&body, pattern(100_000_000)).expect("write upload file");
    let out = run_with_deadline(
        curl_command(lb.tls, "/echo")
            .args(["-H", "Expect:", "-D", "-", "-o", "/dev/null"])
            .args(["--data-binary", &format!("@{}", body.display())]),
        b"",
        PATIENCE * 3,
    );
    let _ = std::fs::remove_file(&body);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let resp = parse_response(&out.stdout);
    assert_eq!(resp.status, 413, "{resp:?} {stderr}");
    assert_eq!(resp.backend(), "b", "{resp:?}");
}

#[test]
fn a_slow_tls_reader_makes_the_proxy_stop_reading_from_the_backend() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const TOTAL: u64 = 200_000_000;
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    // A backend that writes as fast as the proxy takes the bytes, counting them.
    let backend = ScriptedBackend::start(move |mut s, _| {
        read_head(&mut s);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n");
        if s.write_all(head.as_bytes()).is_err() {
            return;
        }
        let window = pattern_window(64 * 1024);
        let mut sent = 0u64;
        while sent < TOTAL {
            let n = (64 * 1024u64).min(TOTAL - sent) as usize;
            let start = (sent % 251) as usize;
            if s.write_all(&window[start..start + n]).is_err() {
                return;
            }
            sent += n as u64;
            counter.store(sent, Ordering::SeqCst);
        }
    });
    let lb = Lb::start(&format!(
        "access_log = false\n{}",
        config_text_at("", &[&site().a], &[("slow", backend.addr)])
    ));
    // curl reads 100 KB a second: the rest must wait in the backend, not in lb's memory (nor in
    // rustls' buffers of encrypted records).
    let mut curl = curl_command(lb.tls, "/big")
        .args(["--limit-rate", "100k", "-o", "/dev/null"])
        .spawn()
        .expect("spawn curl");
    let mut last = 0;
    let mut still_since = Instant::now();
    wait_until("the backend's writes to block", || {
        let now = written.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        now > 0 && still_since.elapsed() > Duration::from_millis(500)
    });
    let stalled_at = written.load(Ordering::SeqCst);
    let peak = lb.process.peak_rss_kib();
    let _ = curl.kill();
    let _ = curl.wait();
    eprintln!(
        "slow TLS reader: backend blocked after {} KiB of {} KiB; proxy peak RSS {peak} KiB",
        stalled_at >> 10,
        TOTAL >> 10
    );
    // Socket buffers on both connections plus lb's bounded buffers: megabytes, not 200 MB.
    assert!(
        stalled_at < 48 << 20,
        "the backend wrote {stalled_at} bytes to a client reading 100 KB/s"
    );
    assert!(peak < RSS_LIMIT_KIB, "proxy peak RSS {peak} KiB");
}
