//! The TLS listener: the input is written raw to a new connection to a real in-process proxy's
//! TLS port, in one to three pieces a short pause apart, and the connection is half-closed. No
//! byte string the fuzzer can build completes a handshake (that takes the keys the proxy
//! derives), so everything here stays in rustls's record layer and handshake and lb's transport
//! around them (`src/transport/tls/`): the first-byte sniffing, the plain-HTTP answer, alerts,
//! the handshake counters, the close.
//!
//! The first byte chooses what is written, so the fuzzer also gets past the record layer:
//! - `0` (mod 4): the rest, as it is;
//! - `1`: a TLS 1.3 ClientHello recorded from `openssl s_client`, then the rest (what a client
//!   sends after its hello: ChangeCipherSpec, alerts, records the proxy cannot decrypt);
//! - `2`: the same with a TLS 1.2-only ClientHello (the client's second flight is plaintext:
//!   ClientKeyExchange, ChangeCipherSpec);
//! - `3`: the rest as a ClientHello's body, framed by a handshake and a record header whose
//!   lengths are right, so mutations land in the hello's fields and extensions.
//!
//! The recorded hellos are the seeds `client_hello_tls13` and `client_hello_tls12` without their
//! mode byte. The proxy (a `Reactor` with a `[tls]` listener on 127.0.0.1:0, certificate from
//! `fuzz/certs/`, on its own thread) and a backend polled by the fuzzing thread are set up once
//! per process.
//!
//! Must never happen, for any input:
//! - a panic, in the proxy's thread or here (a panic anywhere aborts the process);
//! - the proxy neither answering nor closing within 5 s of the client's half-close, or closing
//!   only when the handshake timeout (2 s) runs out (a client that half-closed mid-handshake
//!   can never finish it: lb must let it go at once). `LB_FUZZ_TLS_LENIENT=1` brings back the
//!   mode that worked around the bug this target found (an end of stream queued behind
//!   handshake bytes was missed; fixed in 0159459): the half-close waits 300 µs after the last
//!   byte, and such closes are only counted;
//! - a byte reaching the backend, or a handshake counted as completed;
//! - the handshake's end counted other than once (as a failure) per connection;
//! - the client receiving anything but whole TLS records (alerts, the proxy's first flight) or,
//!   when it spoke plain HTTP (an upper-case first byte), the proxy's `400` answer;
//! - every `PROBE_EVERY` inputs (and before the first), a real TLS client (rustls, TLS 1.3 and
//!   1.2 in turn, trusting only the test CA, resuming when it can) failing to get its request
//!   through the proxy to the backend and a `200` back, ended by a close_notify.
#![no_main]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use lb::config::{BackendConfig, CertificateConfig, Config, TlsConfig, TlsVersion};
use lb::reactor::Reactor;
use lb::transport::tls::TlsStats;
use lb_fuzz::Splits;
use libfuzzer_sys::fuzz_target;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

const LISTENER: Token = Token(0);
const CLIENT: Token = Token(1);
const PROBE: Token = Token(2);
/// Backend connection `i` has token `FIRST_BACKEND + i`.
const FIRST_BACKEND: usize = 3;
const PATIENCE: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two pieces of the client's input.
const PAUSE: Duration = Duration::from_micros(300);
/// Outside strict mode: a connection the proxy has not closed this long after the client's
/// half-close is taken to have missed the end of stream, and is reset (a new edge it cannot
/// miss) instead of waiting out the handshake timeout.
const STALL: Duration = Duration::from_millis(100);
/// A real client request every so many inputs: a full handshake costs more than most inputs.
const PROBE_EVERY: u64 = 64;
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const PROBE_REQUEST: &[u8] =
    b"GET /fuzz-probe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
/// What lb answers to plain HTTP on the TLS port begins with this.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";

const HELLO_TLS13: &[u8] = include_bytes!("../seeds/tls/client_hello_tls13");
const HELLO_TLS12: &[u8] = include_bytes!("../seeds/tls/client_hello_tls12");

struct BackendConn {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    eof: bool,
}

struct Harness {
    tls_addr: SocketAddr,
    stats: Arc<TlsStats>,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    backends: Vec<Option<BackendConn>>,
    /// A probe is running: the backend may receive its request (and only that).
    probing: bool,
    probes: [Arc<ClientConfig>; 2],
    probes_done: u64,
    inputs: u64,
    /// Half-close right after the last byte and treat a connection the handshake timeout
    /// closed as a crash; `LB_FUZZ_TLS_LENIENT=1` turns it off (docs/FUZZING.md, Findings:
    /// the bug that made that mode necessary is fixed).
    strict: bool,
    /// Connections the handshake timeout closed (that bug, when the pause was not enough).
    timeouts_seen: u64,
    /// Connections reset after a `STALL` (the same bug, most likely).
    stalls: u64,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

fn harness() -> &'static Mutex<Harness> {
    HARNESS.get_or_init(|| {
        // libFuzzer's main is not Rust's: a write to a closed socket would kill the process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        if let Some(level) = std::env::var("LB_FUZZ_LOG")
            .ok()
            .and_then(|l| l.parse().ok())
        {
            log::set_logger(&StderrLog).expect("logger");
            log::set_max_level(level);
        }
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let poll = Poll::new().expect("poll");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let backend_addr = std_listener.local_addr().expect("backend addr");
        let mut listener = TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .expect("register listener");

        let config = Config {
            backends: vec![BackendConfig {
                name: "fuzz".into(),
                address: backend_addr,
                weight: 1,
                tls: None,
                backup: false,
            }],
            access_log: false,
            tls: Some(TlsConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                min_version: TlsVersion::Tls12,
                handshake_timeout: HANDSHAKE_TIMEOUT,
                redirect_http: false,
                session_cache: 100,
                session_tickets: true,
                certificates: vec![CertificateConfig {
                    cert: certs.join("leaf.pem"),
                    key: certs.join("leaf.key"),
                }],
            }),
            ..Config::default()
        };
        let plain_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let mut reactor = Reactor::with_listener(plain_listener, &config).expect("reactor");
        let tls_addr = reactor.tls_addr().expect("a TLS listener");
        let stats = Arc::clone(&reactor.tls().expect("a TLS acceptor").stats);
        thread::Builder::new()
            .name("proxy".into())
            .spawn(move || reactor.run().expect("reactor run"))
            .expect("spawn proxy");

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("read ca.pem") {
            roots.add(cert.expect("ca.pem")).expect("test CA");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let probe = |version: &'static rustls::SupportedProtocolVersion| {
            let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[version])
                .expect("protocol version")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        };
        let mut h = Harness {
            tls_addr,
            stats,
            poll,
            events: Events::with_capacity(64),
            listener,
            backends: Vec::new(),
            probing: false,
            probes: [
                probe(&rustls::version::TLS13),
                probe(&rustls::version::TLS12),
            ],
            probes_done: 0,
            inputs: 0,
            strict: std::env::var_os("LB_FUZZ_TLS_LENIENT").is_none_or(|v| v != "1"),
            timeouts_seen: 0,
            stalls: 0,
        };
        // Before any input: a setup that cannot serve a real client proves nothing.
        h.probe();
        h.probe();
        Mutex::new(h)
    })
}

/// `LB_FUZZ_LOG=debug` (or `trace`, `info`...): the proxy's log on stderr, to see why an input
/// fails.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

/// The TLS counters that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    handshakes: u64,
    failures: u64,
    timeouts: u64,
}

impl Harness {
    fn counts(&self) -> Counts {
        let failures = self.stats.failures();
        Counts {
            handshakes: self.stats.handshakes.load(Ordering::Relaxed),
            failures: failures.iter().map(|(_, n)| n).sum(),
            timeouts: failures
                .iter()
                .find(|(reason, _)| *reason == "timeout")
                .map_or(0, |(_, n)| *n),
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let slot = self
                        .backends
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or_else(|| {
                            self.backends.push(None);
                            self.backends.len() - 1
                        });
                    self.poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(FIRST_BACKEND + slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .expect("register backend connection");
                    self.backends[slot] = Some(BackendConn {
                        stream,
                        buf: Vec::new(),
                        out: Vec::new(),
                        eof: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("backend accept: {e}"),
            }
        }
    }

    /// Reads what backend connection `slot` has; outside a probe that must be nothing, and in
    /// one only the probe's request, which is answered.
    fn serve(&mut self, slot: usize) {
        let Some(conn) = self.backends[slot].as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        while !conn.eof {
            match conn.stream.read(&mut chunk) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    assert!(
                        self.probing,
                        "the backend received bytes from a client that never completed a \
                         handshake: {:?}",
                        String::from_utf8_lossy(&chunk[..n])
                    );
                    conn.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => conn.eof = true,
            }
        }
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut slots);
            let head_len = match req.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(e) => panic!(
                    "the backend received a bad head ({e}): {:?}",
                    String::from_utf8_lossy(&conn.buf)
                ),
            };
            assert!(
                req.method == Some("GET") && req.path == Some("/fuzz-probe"),
                "the backend received a request that is not the probe's: {:?}",
                String::from_utf8_lossy(&conn.buf[..head_len])
            );
            conn.buf.drain(..head_len);
            conn.out.extend_from_slice(ANSWER);
        }
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.out.clear();
                    conn.eof = true;
                }
            }
        }
        if conn.eof {
            let mut conn = self.backends[slot].take().expect("connection");
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    fn serve_all(&mut self) {
        self.accept_all();
        for slot in 0..self.backends.len() {
            self.serve(slot);
        }
    }

    fn connect(&self, token: Token) -> TcpStream {
        let std_client = std::net::TcpStream::connect(self.tls_addr).expect("connect to proxy");
        std_client.set_nonblocking(true).expect("nonblocking");
        let mut client = TcpStream::from_std(std_client);
        self.poll
            .registry()
            .register(&mut client, token, Interest::READABLE | Interest::WRITABLE)
            .expect("register client");
        client
    }

    /// Runs one raw client connection carrying `data`; returns the bytes the client read back
    /// and whether the stream ended in a reset rather than a clean close (ours, after a
    /// `STALL`, counted in `stalls`).
    fn run_client(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut client = self.connect(CLIENT);
        let deadline = Instant::now() + PATIENCE;
        let ends = piece_ends(data);
        let mut piece = 0;
        let mut resume_at: Option<Instant> = None;
        let mut written = 0;
        let mut write_shut = false;
        // Outside strict mode the half-close waits a pause after the last byte (see `strict`).
        let mut eof_paused = self.strict || data.is_empty();
        let mut shut_at: Option<Instant> = None;
        let mut response = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let reset = loop {
            if resume_at.is_some_and(|at| Instant::now() >= at) {
                resume_at = None;
            }
            while !write_shut && resume_at.is_none() {
                if written == data.len() {
                    if !eof_paused {
                        eof_paused = true;
                        resume_at = Some(Instant::now() + PAUSE);
                        break;
                    }
                    let _ = client.shutdown(Shutdown::Write);
                    write_shut = true;
                    shut_at = Some(Instant::now());
                    break;
                }
                match client.write(&data[written..ends[piece]]) {
                    Ok(n) => {
                        written += n;
                        if written == ends[piece] && written < data.len() {
                            piece += 1;
                            resume_at = Some(Instant::now() + PAUSE);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The proxy closed first (after refusing the bytes): fine.
                    Err(_) => write_shut = true,
                }
            }
            let closed = loop {
                match client.read(&mut buf) {
                    Ok(0) => break Some(false),
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break Some(true),
                }
            };
            self.serve_all();
            if let Some(reset) = closed {
                break reset;
            }
            let now = Instant::now();
            let stall_at = shut_at.filter(|_| !self.strict).map(|at| at + STALL);
            if stall_at.is_some_and(|at| now >= at) {
                // Closed with a reset: the proxy gets an error edge and must count the end of
                // the handshake at once (`check_counted` waits for it).
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                let rc = unsafe {
                    libc::setsockopt(
                        client.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
                self.stalls += 1;
                break true;
            }
            assert!(
                now < deadline,
                "the proxy neither answered nor closed within {PATIENCE:?} of the client's \
                 half-close ({written} of {} bytes written); client got {:?}",
                data.len(),
                response
            );
            let wait = resume_at
                .or(stall_at)
                .map_or(deadline - now, |at| at.saturating_duration_since(now))
                .min(deadline - now);
            self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        };
        let _ = self.poll.registry().deregister(&mut client);
        drop(client);
        // Anything the proxy sent the backend for this input is there by now; a byte arriving
        // later still fails, with the next input (but a forward needs a completed handshake,
        // which `check_counted` catches first).
        self.serve_all();
        (response, reset)
    }

    /// A real TLS client's request through the proxy, TLS 1.3 and 1.2 in turn: it must get the
    /// backend's answer and a close_notify, and count one completed handshake.
    fn probe(&mut self) {
        let config = Arc::clone(&self.probes[(self.probes_done % 2) as usize]);
        self.probes_done += 1;
        let before = self.counts();
        self.probing = true;
        let mut stream = self.connect(PROBE);
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = ClientConnection::new(config, name).expect("client connection");
        tls.writer()
            .write_all(PROBE_REQUEST)
            .expect("buffer request");
        let deadline = Instant::now() + PATIENCE;
        let mut plain = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let mut write_blocked = false;
            while tls.wants_write() {
                match tls.write_tls(&mut stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        write_blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("probe: write: {e}"),
                }
            }
            let mut eof = false;
            loop {
                match tls.read_tls(&mut stream) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {
                        if let Err(e) = tls.process_new_packets() {
                            panic!("probe: TLS error from the proxy: {e}");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!(
                        "probe: read: {e} (got {:?})",
                        String::from_utf8_lossy(&plain)
                    ),
                }
            }
            let closed = loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) => panic!(
                        "probe: {e} (no close_notify?); got {:?}",
                        String::from_utf8_lossy(&plain)
                    ),
                }
            };
            self.serve_all();
            if closed {
                break;
            }
            assert!(
                !eof,
                "probe: the proxy closed without a close_notify; got {:?}",
                String::from_utf8_lossy(&plain)
            );
            if tls.wants_write() && !write_blocked {
                // What the proxy's flight called for (our Finished, the request) goes out first.
                continue;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "probe: no answer within {PATIENCE:?} (handshaking: {}); got {:?}",
                tls.is_handshaking(),
                String::from_utf8_lossy(&plain)
            );
            self.poll
                .poll(&mut self.events, Some(deadline - now))
                .expect("poll");
        }
        let _ = self.poll.registry().deregister(&mut stream);
        drop(stream);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut slots);
        let parsed = resp.parse(&plain);
        assert!(
            matches!(parsed, Ok(httparse::Status::Complete(n)) if resp.code == Some(200) && &plain[n..] == b"ok"),
            "probe: not the backend's answer: {:?}",
            String::from_utf8_lossy(&plain)
        );
        let after = self.counts();
        assert_eq!(
            after.handshakes,
            before.handshakes + 1,
            "probe: one completed handshake counted"
        );
        self.serve_all();
        self.probing = false;
    }

    /// The counters once the proxy is done with the connection (it may count just after it
    /// closes): the handshake's end counted once, as a failure.
    fn check_counted(&mut self, before: Counts, response: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = self.counts();
        while after.failures == before.failures && Instant::now() < deadline {
            thread::sleep(Duration::from_micros(50));
            after = self.counts();
        }
        assert_eq!(
            after.handshakes, before.handshakes,
            "a handshake counted as completed for raw bytes; client got {response:?}"
        );
        if after.timeouts != before.timeouts {
            assert!(
                !self.strict,
                "the connection was closed by the handshake timeout ({HANDSHAKE_TIMEOUT:?}), \
                 not when the client half-closed; client got {response:?}"
            );
            self.timeouts_seen += 1;
        }
        assert_eq!(
            after.failures,
            before.failures + 1,
            "the handshake's end counted {} times (want once); client got {response:?}",
            after.failures - before.failures
        );
    }
}

/// What the client writes for `data` (see the module's comment).
fn client_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    match mode % 4 {
        0 => rest.to_vec(),
        1 => [&HELLO_TLS13[1..], rest].concat(),
        2 => [&HELLO_TLS12[1..], rest].concat(),
        _ => {
            let body = &rest[..rest.len().min(16384 - 4)];
            let mut out = vec![0x16, 0x03, 0x01];
            out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
            out.push(0x01);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(body);
            out
        }
    }
}

/// Where the client's writes end: one to three pieces, cut where the input says.
fn piece_ends(data: &[u8]) -> Vec<usize> {
    let mut splits = Splits::new(data);
    let mut ends = vec![data.len()];
    if data.len() >= 2 {
        for _ in 0..splits.below(3) {
            ends.push(1 + splits.below(data.len() - 1));
        }
    }
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// The client must get nothing, the plain-HTTP answer (when it spoke plain HTTP), or whole TLS
/// records; after a reset the last record may be cut short.
fn check_response(sent: &[u8], response: &[u8], reset: bool) {
    if response.is_empty() {
        return;
    }
    if sent.first().is_some_and(u8::is_ascii_uppercase) {
        let n = response.len().min(PLAIN_HTTP_ANSWER.len());
        assert!(
            response[..n] == PLAIN_HTTP_ANSWER[..n] && (reset || n == PLAIN_HTTP_ANSWER.len()),
            "plain HTTP got {:?}, not the proxy's 400",
            String::from_utf8_lossy(response)
        );
        return;
    }
    let mut rest = response;
    while !rest.is_empty() {
        if rest.len() < 5 {
            assert!(reset, "a cut record header at the end: {response:?}");
            return;
        }
        let (kind, major, len) = (rest[0], rest[1], u16::from_be_bytes([rest[3], rest[4]]));
        assert!(
            (0x14..=0x17).contains(&kind) && major == 3 && (rest[2] <= 4) && len <= 16384 + 256,
            "the client received something that is not a TLS record: {rest:?} (all: {response:?})"
        );
        let end = 5 + len as usize;
        if rest.len() < end {
            assert!(reset, "a cut record at the end: {response:?}");
            return;
        }
        rest = &rest[end..];
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    let sent = client_bytes(data);
    let before = h.counts();
    let (response, reset) = h.run_client(&sent);
    h.check_counted(before, &response);
    check_response(&sent, &response, reset);
    h.inputs += 1;
    if h.inputs.is_multiple_of(PROBE_EVERY) {
        h.probe();
    }
    if h.inputs.is_power_of_two() || h.inputs.is_multiple_of(100_000) {
        eprintln!(
            "tls: {} inputs, {} probes, {} connections reset after a {STALL:?} stall, {} \
             closed by the handshake timeout",
            h.inputs, h.probes_done, h.stalls, h.timeouts_seen
        );
    }
});
