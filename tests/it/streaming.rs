//! Streaming through the real `lb` binary: gigabyte uploads and downloads in constant memory,
//! backpressure from a client that does not read, and clients that vanish mid-transfer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

const GIB: u64 = 1 << 30;
/// Peak RSS the proxy may reach while streaming any amount of data.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// Size of each client write and read.
const IO_SIZE: usize = 256 * 1024;

fn start_proxy(backend: SocketAddr) -> ProxyProcess {
    ProxyProcess::start(&["--backend", &format!("b={backend}"), "--log-level", "warn"])
}

/// A client-side reader that parses a response head and then streams the body.
struct BodyReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl BodyReader {
    fn new(stream: TcpStream) -> BodyReader {
        BodyReader {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> usize {
        let mut chunk = vec![0u8; IO_SIZE];
        let n = self.stream.read(&mut chunk).expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads the head; returns the status and headers.
    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            if let Some((resp, n)) = parse_head(&self.buf) {
                let headers = resp
                    .headers
                    .into_iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value))
                    .collect();
                self.buf.drain(..n);
                return (resp.status, headers);
            }
            assert!(self.fill() > 0, "closed before the response head");
        }
    }

    /// Streams `len` body bytes into `sink`, in slices.
    fn body_length(&mut self, len: u64, sink: &mut impl FnMut(&[u8])) {
        let mut left = len;
        let take = (self.buf.len() as u64).min(left) as usize;
        sink(&self.buf[..take]);
        self.buf.drain(..take);
        left -= take as u64;
        let mut chunk = vec![0u8; IO_SIZE];
        while left > 0 {
            let want = (chunk.len() as u64).min(left) as usize;
            let n = self.stream.read(&mut chunk[..want]).expect("read body");
            assert!(n > 0, "closed with {left} body bytes missing");
            sink(&chunk[..n]);
            left -= n as u64;
        }
    }

    /// Decodes a chunked body into `sink`, streaming; returns the decoded length.
    fn body_chunked(&mut self, sink: &mut impl FnMut(&[u8])) -> u64 {
        let mut total = 0;
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill() > 0, "closed inside a chunk size line");
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            self.buf.drain(..line_end + 2);
            if size == 0 {
                while !self.buf.starts_with(b"\r\n") {
                    assert!(self.fill() > 0, "closed before the last CRLF");
                }
                self.buf.drain(..2);
                return total;
            }
            self.body_length(size, sink);
            total += size;
            while self.buf.len() < 2 {
                assert!(self.fill() > 0, "closed before a chunk's CRLF");
            }
            assert_eq!(&self.buf[..2], b"\r\n", "chunk not followed by CRLF");
            self.buf.drain(..2);
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Uploads `len` pattern bytes to `/sink`, chunked or with a Content-Length, and checks what
/// the backend reports having received.
fn upload(proxy: &ProxyProcess, len: u64, chunked: bool) {
    let mut s = connect(proxy.addr);
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {len}")
    };
    write!(
        s,
        "POST /sink HTTP/1.1\r\nHost: test\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    .expect("write head");
    let window = pattern_window(IO_SIZE);
    let mut sent = 0u64;
    while sent < len {
        let n = (IO_SIZE as u64).min(len - sent) as usize;
        let start = (sent % 251) as usize;
        let data = &window[start..start + n];
        if chunked {
            write!(s, "{n:x}\r\n").expect("write chunk size");
            s.write_all(data).expect("write chunk");
            s.write_all(b"\r\n").expect("write chunk end");
        } else {
            s.write_all(data).expect("write body");
        }
        sent += n as u64;
    }
    if chunked {
        s.write_all(b"0\r\n\r\n").expect("write last chunk");
    }
    let mut reader = BodyReader::new(s);
    let (status, headers) = reader.head();
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(
        header(&headers, "x-received-bytes"),
        Some(len.to_string().as_str())
    );
    assert_eq!(
        header(&headers, "x-received-sum"),
        Some(pattern_sum(len).to_string().as_str())
    );
}

/// Downloads `/bytes/len` (chunked or not) and checks every byte against the pattern.
fn download(proxy: &ProxyProcess, len: u64, chunked: bool) {
    let mut s = connect(proxy.addr);
    let query = if chunked { "?chunked=1" } else { "" };
    write!(
        s,
        "GET /bytes/{len}{query} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut reader = BodyReader::new(s);
    let (status, headers) = reader.head();
    assert_eq!(status, 200, "{headers:?}");
    let mut check = PatternCheck::new(IO_SIZE);
    if chunked {
        assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
        let total = reader.body_chunked(&mut |d| check.feed(d));
        assert_eq!(total, len);
    } else {
        assert_eq!(
            header(&headers, "content-length"),
            Some(len.to_string().as_str())
        );
        reader.body_length(len, &mut |d| check.feed(d));
    }
    assert_eq!(check.offset, len);
    assert!(
        is_closed(&mut reader.stream),
        "Connection: close not honoured"
    );
}

/// Runs `transfer` through a fresh proxy and reports its duration and the proxy's peak RSS.
fn measured(what: &str, len: u64, transfer: impl FnOnce(&ProxyProcess)) {
    let backend = DemoBackend::start("b");
    let proxy = start_proxy(backend.addr);
    let before = proxy.peak_rss_kib();
    let started = Instant::now();
    transfer(&proxy);
    let took = started.elapsed();
    let peak = proxy.peak_rss_kib();
    eprintln!(
        "{what}: {} MiB in {:.2}s ({:.0} MiB/s), proxy peak RSS {} KiB (at start {} KiB)",
        len >> 20,
        took.as_secs_f64(),
        (len >> 20) as f64 / took.as_secs_f64(),
        peak,
        before
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "{what}: proxy peak RSS {peak} KiB is over {RSS_LIMIT_KIB} KiB"
    );
}

#[test]
fn upload_1gib_with_content_length_in_constant_memory() {
    measured("upload, Content-Length", GIB, |p| upload(p, GIB, false));
}

#[test]
fn download_1gib_with_content_length_in_constant_memory() {
    measured("download, Content-Length", GIB, |p| download(p, GIB, false));
}

#[test]
fn upload_1gib_chunked_in_constant_memory() {
    let len = GIB;
    measured("upload, chunked", len, |p| upload(p, len, true));
}

#[test]
fn download_1gib_chunked_in_constant_memory() {
    let len = GIB;
    measured("download, chunked", len, |p| download(p, len, true));
}

#[test]
fn slow_reader_makes_the_proxy_stop_reading_from_the_backend() {
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
    let proxy = start_proxy(backend.addr);
    let mut s = connect(proxy.addr);
    s.write_all(b"GET /big HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("write request");

    // Read nothing until the backend's writes block: the count stops moving.
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
    let peak = proxy.peak_rss_kib();
    eprintln!(
        "slow reader: backend blocked after {} KiB of {} KiB; proxy peak RSS {peak} KiB",
        stalled_at >> 10,
        TOTAL >> 10
    );
    // Socket buffers on three connections plus the proxy's own buffers: megabytes, not the
    // 200 MB the backend wants to send.
    assert!(
        stalled_at < 48 << 20,
        "the backend wrote {stalled_at} bytes to a client that read nothing"
    );
    assert!(peak < RSS_LIMIT_KIB, "proxy peak RSS {peak} KiB");

    // Now read everything: nothing was lost while the proxy held back.
    let mut reader = BodyReader::new(s);
    let (status, headers) = reader.head();
    assert_eq!(status, 200, "{headers:?}");
    let mut check = PatternCheck::new(IO_SIZE);
    reader.body_length(TOTAL, &mut |d| check.feed(d));
    assert_eq!(check.offset, TOTAL);
    assert_eq!(written.load(Ordering::SeqCst), TOTAL);
    let peak = proxy.peak_rss_kib();
    assert!(peak < RSS_LIMIT_KIB, "proxy peak RSS {peak} KiB");
}

/// The proxy's descriptors before any client came: no session and an empty pool.
fn idle_fds(proxy: &ProxyProcess) -> usize {
    fd_count(proxy.child.id())
}

/// Waits for the proxy's descriptors to return to `baseline` after its clients are gone.
fn wait_for_fds(proxy: &ProxyProcess, baseline: usize) {
    let pid = proxy.child.id();
    let mut now = 0;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        now = fd_count(pid);
        // At most: a health probe's socket may have been open when the baseline was taken.
        if now <= baseline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    panic!("proxy has {now} descriptors, expected {baseline}: {fds:?}");
}

/// A normal request still works while clients come and go.
fn assert_still_serving(proxy: &ProxyProcess) {
    let resp = get(proxy.addr, "/");
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn clients_vanishing_mid_upload_leak_nothing() {
    let backend = DemoBackend::start("b");
    let proxy = start_proxy(backend.addr);
    let baseline = idle_fds(&proxy);
    let chunk = pattern_window(IO_SIZE);
    for i in 0..50 {
        let mut s = connect(proxy.addr);
        s.write_all(b"POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 100000000\r\n\r\n")
            .expect("write head");
        for _ in 0..4 {
            s.write_all(&chunk[..IO_SIZE]).expect("write body");
        }
        // Half leave with a FIN, half with a reset.
        if i % 2 == 1 {
            set_linger_zero(&s);
        }
        drop(s);
        if i % 10 == 9 {
            assert_still_serving(&proxy);
        }
    }
    // The last request leaves one idle backend connection in the pool.
    assert_still_serving(&proxy);
    wait_for_fds(&proxy, baseline + 1);
    let (connections, requests) = backend.stats();
    eprintln!("vanishing uploads: backend saw {connections} connections, {requests} requests");
}

#[test]
fn clients_vanishing_mid_download_leak_nothing() {
    let backend = DemoBackend::start("b");
    let proxy = start_proxy(backend.addr);
    let baseline = idle_fds(&proxy);
    for i in 0..50 {
        let mut s = connect(proxy.addr);
        s.write_all(b"GET /bytes/100000000 HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("write request");
        // Wait for some of the body, so the response is well under way.
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 256 * 1024 {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed early");
            got += n;
        }
        if i % 2 == 1 {
            set_linger_zero(&s);
        }
        drop(s);
        if i % 10 == 9 {
            assert_still_serving(&proxy);
        }
    }
    // The last request leaves one idle backend connection in the pool.
    assert_still_serving(&proxy);
    wait_for_fds(&proxy, baseline + 1);
}

// ---- whose fault is a stall ------------------------------------------------------------------

#[test]
fn paused_reader_is_not_cut_off_by_the_backend_timeout() {
    const LEN: u64 = 50_000_000;
    let backend = DemoBackend::start("b");
    let backend_response = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![backend.config()], |c| {
        c.timeouts.backend_response = backend_response;
        c.timeouts.client_idle = Duration::from_secs(10);
    });
    let mut s = connect(proxy.addr);
    write!(
        s,
        "GET /bytes/{LEN} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut reader = BodyReader::new(s);
    let (status, _) = reader.head();
    assert_eq!(status, 200);
    // The client stops reading for a while (well within client_idle). Buffers fill, the proxy
    // stops reading the backend, and the backend goes quiet: that silence is the client's
    // doing and must not count against the backend's time to answer.
    std::thread::sleep(backend_response * 4);
    let mut check = PatternCheck::new(IO_SIZE);
    reader.body_length(LEN, &mut |d| check.feed(d));
    assert_eq!(check.offset, LEN);
}

#[test]
fn backend_that_stops_reading_an_upload_is_a_504() {
    // Reads the head, then neither the body nor anything else, and never answers, until the
    // test lets go of `gate`.
    let gate = Arc::new(std::sync::Mutex::new(()));
    let held = gate.lock().expect("gate");
    let backend_gate = Arc::clone(&gate);
    let backend = ScriptedBackend::start(move |mut s, _| {
        read_head(&mut s);
        let _released = backend_gate.lock();
    });
    let limit = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![backend.config("stuck")], |c| {
        c.timeouts.backend_response = limit;
        c.timeouts.client_idle = limit;
    });
    let s = connect(proxy.addr);
    let mut writer = s.try_clone().expect("clone");
    // The client sends as fast as it is allowed to, until the proxy stops taking bytes.
    let upload = std::thread::spawn(move || {
        let _ = writer
            .write_all(b"POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 100000000\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        while writer.write_all(&chunk).is_ok() {}
    });
    let mut s = s;
    let resp = read_response(&mut s, false);
    // The client sent everything it could: the backend held it up.
    assert_eq!(resp.status, 504, "{resp:?}");
    assert_eq!(resp.header("x-lb-error"), Some("backend-timeout"));
    assert_eq!(resp.header("connection"), Some("close"));
    drop(s);
    upload.join().expect("upload thread");
    drop(held);
}

/// Uploads `len` bytes of body after `head` on a thread, as fast as the proxy takes them, until
/// done or the connection fails; returns the socket to read the answer from.
fn upload_in_background(
    addr: SocketAddr,
    head: String,
    len: u64,
) -> (TcpStream, std::thread::JoinHandle<()>) {
    let s = connect(addr);
    let mut writer = s.try_clone().expect("clone");
    let upload = std::thread::spawn(move || {
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        let window = pattern_window(IO_SIZE);
        let mut sent = 0u64;
        while sent < len {
            let n = (IO_SIZE as u64).min(len - sent) as usize;
            let start = (sent % 251) as usize;
            if writer.write_all(&window[start..start + n]).is_err() {
                return;
            }
            sent += n as u64;
        }
    });
    (s, upload)
}

#[test]
fn backend_answering_before_the_upload_ends_closes_the_connection() {
    // /echo refuses a body over 64 MiB as soon as it sees the head.
    let backend = DemoBackend::start("b");
    let proxy = Proxy::start(&[&backend]);
    let len = 100_000_000;
    let (mut s, upload) = upload_in_background(
        proxy.addr,
        format!("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n"),
        len,
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 413, "{resp:?}");
    assert_eq!(resp.backend(), "b");
    // The rest of the body was never read: the connection cannot carry another request.
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(is_closed(&mut s));
    drop(s);
    upload.join().expect("upload thread");
    // The proxy is fine afterwards.
    assert_eq!(get(proxy.addr, "/").status, 200);
}

#[test]
fn backend_resetting_mid_upload_is_502() {
    // Reads the head and about a megabyte of body, then resets.
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < 1 << 20 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        set_linger_zero(&s);
    });
    let proxy = Proxy::start_with(vec![backend.config("resetter")], |_| {});
    let len = 100_000_000;
    let (mut s, upload) = upload_in_background(
        proxy.addr,
        format!("POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n"),
        len,
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 502, "{resp:?}");
    assert_eq!(resp.header("x-lb-error"), Some("backend-closed"));
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(is_closed(&mut s));
    drop(s);
    upload.join().expect("upload thread");
}

#[test]
fn early_answer_survives_the_backend_resetting_the_upload() {
    // Answers 413 as soon as it has the head and closes with the body unread, which makes its
    // kernel reset the connection right behind the answer.
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        let _ = s.write_all(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large",
        );
        set_linger_zero(&s);
    });
    let proxy = Proxy::start_with(vec![backend.config("refuser")], |_| {});
    for _ in 0..5 {
        let len = 100_000_000;
        let (mut s, upload) = upload_in_background(
            proxy.addr,
            format!("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n"),
            len,
        );
        // The answer arrived before the reset: the client must get it, not a proxy 502.
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 413, "{resp:?}");
        assert_eq!(resp.text(), "too large");
        assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
        assert!(is_closed(&mut s));
        drop(s);
        upload.join().expect("upload thread");
    }
}

#[test]
fn clients_vanishing_while_the_proxy_connects_leak_nothing() {
    let hole = Blackhole::start();
    let config = temp_file(
        "vanish-connect.toml",
        "log_level = \"warn\"\n[timeouts]\nconnect = \"300ms\"\n",
    );
    let proxy = ProxyProcess::start(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--backend",
        &format!("hole={}", hole.addr),
    ]);
    let baseline = idle_fds(&proxy);
    for i in 0..20 {
        let s = connect(proxy.addr);
        (&s).write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("write");
        if i % 2 == 1 {
            set_linger_zero(&s);
        }
        drop(s);
    }
    // Whether each connect is abandoned at once or times out, every descriptor comes back.
    wait_for_fds(&proxy, baseline);
    // And the proxy still answers (the black hole makes it a 503 after the connect timeout).
    let resp = get(proxy.addr, "/");
    assert_eq!(resp.status, 503, "{resp:?}");
    wait_for_fds(&proxy, baseline);
}
