//! A whole client connection: the input is written to a real in-process proxy on a new
//! connection, in one to three pieces a short pause apart, and the connection is half-closed; a
//! scripted backend behind the proxy reads what it is sent and answers `HTTP/1.1 200 OK` with an
//! empty body to each request once it has all of it.
//!
//! The proxy (a `Reactor` on 127.0.0.1:0 on its own thread) and the backend (a listener polled
//! by the fuzzing thread itself, so every byte the proxy sent is read before an input is judged)
//! are set up once per process; backend connections the proxy pools carry on across inputs.
//!
//! Must never happen, for any client bytes:
//! - a panic, in the proxy's thread or here (a panic anywhere aborts the process);
//! - the proxy neither answering nor closing within 5 s of the client's half-close (a request
//!   the proxy thinks complete that the backend does not, or a lost wake-up);
//! - a forwarded head that does not parse on its own, frames its body more than one way (both
//!   Content-Length and Transfer-Encoding, a Transfer-Encoding other than exactly `chunked`,
//!   several Content-Length) or carries a hop-by-hop header; a chunked body the backend cannot
//!   decode; bytes between requests;
//! - a forwarded request that differs from the reference reading of the client's bytes in
//!   method, target, version, framing or body, or that the reference refuses as ambiguous;
//! - anything forwarded after a request the proxy refused: the client sees one `200` per
//!   request the backend received whole, and the proxy's own error answer, if any, last;
//! - a backend connection left open with half a request on it.
#![no_main]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use lb::config::{BackendConfig, Config};
use lb::reactor::Reactor;
use lb_fuzz::{check_forwarded, chunked_end, split_requests, Framing, Splits};
use libfuzzer_sys::fuzz_target;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);
const CLIENT: Token = Token(1);
/// Backend connection `i` has token `FIRST_BACKEND + i`.
const FIRST_BACKEND: usize = 2;
const PATIENCE: Duration = Duration::from_secs(5);
/// The pause between two pieces of the client's input: long enough for the proxy to read the
/// first on its own, most of the time.
const PAUSE: Duration = Duration::from_micros(300);
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// A request as the backend received it.
#[derive(Debug)]
struct Received {
    method: String,
    target: String,
    version_minor: u8,
    framing: Framing,
    body: Vec<u8>,
    complete: bool,
}

/// One connection the proxy opened to the backend.
struct BackendConn {
    stream: TcpStream,
    /// Bytes read and not yet part of a request.
    buf: Vec<u8>,
    /// Index in `Harness::received` of the request whose body is arriving.
    current: Option<usize>,
    /// Answer bytes not yet written.
    out: Vec<u8>,
    eof: bool,
}

struct Harness {
    proxy: SocketAddr,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    backends: Vec<Option<BackendConn>>,
    /// Every request the backend received during the current input, in order.
    received: Vec<Received>,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

fn harness() -> &'static Mutex<Harness> {
    HARNESS.get_or_init(|| {
        // libFuzzer's main is not Rust's: a write to a closed socket would kill the process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let poll = Poll::new().expect("poll");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let backend_addr = std_listener.local_addr().expect("backend addr");
        let mut listener = TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .expect("register listener");

        let mut config = Config {
            backends: vec![BackendConfig {
                name: "fuzz".into(),
                address: backend_addr,
                weight: 1,
                tls: None,
                backup: false,
            }],
            access_log: false,
            ..Config::default()
        };
        // Small limits, so short inputs reach them.
        config.limits.max_header_bytes = 2048;
        config.limits.max_headers = 24;
        config.limits.max_target_bytes = 512;
        let proxy_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let mut reactor = Reactor::with_listener(proxy_listener, &config).expect("reactor");
        let proxy = reactor.local_addr();
        thread::Builder::new()
            .name("proxy".into())
            .spawn(move || reactor.run().expect("reactor run"))
            .expect("spawn proxy");
        Mutex::new(Harness {
            proxy,
            poll,
            events: Events::with_capacity(64),
            listener,
            backends: Vec::new(),
            received: Vec::new(),
        })
    })
}

impl Harness {
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
                        current: None,
                        out: Vec::new(),
                        eof: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("backend accept: {e}"),
            }
        }
    }

    /// Reads what backend connection `slot` has, acts on every request completed, and writes
    /// its answers.
    fn serve(&mut self, slot: usize) {
        let Some(conn) = self.backends[slot].as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        while !conn.eof {
            match conn.stream.read(&mut chunk) {
                Ok(0) => conn.eof = true,
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset is the proxy's way of closing too.
                Err(_) => conn.eof = true,
            }
        }
        loop {
            let index = match conn.current {
                Some(index) => index,
                None => {
                    let head = check_forwarded(&conn.buf).unwrap_or_else(|why| {
                        panic!(
                            "backend received a bad head ({why}): {:?}",
                            String::from_utf8_lossy(&conn.buf)
                        )
                    });
                    let Some(head) = head else { break };
                    conn.buf.drain(..head.head_len);
                    self.received.push(Received {
                        method: head.method,
                        target: head.target,
                        version_minor: head.version_minor,
                        framing: head.framing,
                        body: Vec::new(),
                        complete: false,
                    });
                    conn.current = Some(self.received.len() - 1);
                    self.received.len() - 1
                }
            };
            let req = &mut self.received[index];
            match req.framing {
                Framing::None => req.complete = true,
                Framing::Length(n) => {
                    let want = (n - req.body.len() as u64).min(conn.buf.len() as u64) as usize;
                    req.body.extend(conn.buf.drain(..want));
                    req.complete = req.body.len() as u64 == n;
                }
                Framing::Chunked => {
                    let before = req.body.len();
                    req.body.append(&mut conn.buf);
                    match chunked_end(&req.body) {
                        Ok(Some(end)) => {
                            conn.buf = req.body.split_off(end);
                            req.complete = true;
                        }
                        Ok(None) => {}
                        Err(why) => panic!(
                            "backend received a bad chunked body ({why}): {:?} (new: {:?})",
                            String::from_utf8_lossy(&req.body),
                            String::from_utf8_lossy(&req.body[before..])
                        ),
                    }
                }
            }
            if !req.complete {
                break;
            }
            conn.current = None;
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

    /// Runs one client connection carrying `data`; returns the bytes the client read back.
    fn run_client(&mut self, data: &[u8]) -> Vec<u8> {
        let std_client = std::net::TcpStream::connect(self.proxy).expect("connect to proxy");
        std_client.set_nonblocking(true).expect("nonblocking");
        let mut client = TcpStream::from_std(std_client);
        self.poll
            .registry()
            .register(&mut client, CLIENT, Interest::READABLE | Interest::WRITABLE)
            .expect("register client");
        let deadline = Instant::now() + PATIENCE;
        let ends = piece_ends(data);
        let mut piece = 0;
        let mut resume_at: Option<Instant> = None;
        let mut written = 0;
        let mut write_shut = false;
        let mut response = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if resume_at.is_some_and(|at| Instant::now() >= at) {
                resume_at = None;
            }
            // Write what the socket takes, a piece at a time, then half-close: the proxy must
            // finish by itself.
            while !write_shut && resume_at.is_none() {
                if written == data.len() {
                    let _ = client.shutdown(Shutdown::Write);
                    write_shut = true;
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
                    // The proxy closed first (after refusing a request): fine.
                    Err(_) => write_shut = true,
                }
            }
            let closed = loop {
                match client.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            self.serve_all();
            if closed {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "the proxy neither answered nor closed within {PATIENCE:?} of the client's \
                     half-close; client got {:?}; backend received {:#?}",
                    String::from_utf8_lossy(&response),
                    self.received
                );
            }
            let wait = match resume_at {
                Some(at) => at.saturating_duration_since(now).min(deadline - now),
                None => deadline - now,
            };
            self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        }
        let _ = self.poll.registry().deregister(&mut client);
        drop(client);
        // The proxy wrote everything it was going to before it closed the client connection:
        // read it all now. Loopback delivery is immediate, so one more pass finds the rest.
        self.serve_all();
        thread::sleep(Duration::from_micros(200));
        self.serve_all();
        response
    }
}

/// Where the client's writes end: the input goes out in one to three pieces, a short pause
/// apart, so the proxy also meets heads and bodies that arrive in parts (where they are cut is
/// a function of the input, so a crash reproduces).
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

/// The statuses of the responses in the client's stream, in order.
fn statuses(mut stream: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut slots);
        let head_len = match resp.parse(stream) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "client received something that is not a response ({other:?}): {:?}",
                String::from_utf8_lossy(stream)
            ),
        };
        let status = resp.code.expect("status");
        let length = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("numeric Content-Length")
            })
            .unwrap_or(0);
        out.push(status);
        stream = &stream[(head_len + length).min(stream.len())..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    h.received.clear();
    let response = h.run_client(data);

    // No backend connection the proxy kept may hold part of a request.
    for conn in h.backends.iter().flatten() {
        assert!(
            conn.current.is_none() && conn.buf.is_empty(),
            "a backend connection left open mid-request: {:?}",
            String::from_utf8_lossy(&conn.buf)
        );
    }

    // What the backend received is what the reference reads in the client's bytes, in order,
    // and never a request the reference refuses.
    let (reference, stop) = split_requests(data);
    assert!(
        h.received.len() <= reference.len(),
        "forwarded {} requests where the reference reads {} (then: {stop:?}); backend \
         received {:#?}",
        h.received.len(),
        reference.len(),
        h.received
    );
    for (i, (got, want)) in h.received.iter().zip(&reference).enumerate() {
        let same_head = got.method == want.method
            && got.target == want.target
            && got.version_minor == want.version_minor
            && got.framing == want.framing;
        let same_body = if got.complete {
            want.complete && got.body == want.body
        } else {
            want.body.starts_with(&got.body)
        };
        assert!(
            same_head && same_body,
            "request {i} forwarded as {got:#?}, the reference reads {want:#?}"
        );
    }

    // The client got one 200 per request the backend received whole, and after the proxy's
    // own answer (a refusal) nothing: nothing of what followed reached the backend.
    let statuses = statuses(&response);
    let whole = h.received.iter().filter(|r| r.complete).count();
    let ok = statuses.iter().take_while(|&&s| s == 200).count();
    assert!(
        ok == statuses.len() || ok + 1 == statuses.len(),
        "a response after the proxy's own answer: {statuses:?}"
    );
    assert_eq!(
        ok, whole,
        "client got {statuses:?}, backend received {:#?}",
        h.received
    );
    if h.received.len() > whole {
        assert!(
            h.received.len() == whole + 1 && !h.received[whole].complete,
            "backend received {:#?}",
            h.received
        );
    }
});
