//! Test support: real demo backends, an in-process or spawned balancer on port 0, scripted
//! backends that send exact bytes, and a raw HTTP/1.1 client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lb::config::{BackendConfig, Config};
use lb::reactor::{Handle, Reactor};

pub mod dns;
pub mod kernel;
pub mod process;
pub mod recorder;
pub mod tls;

pub use dns::*;
pub use kernel::*;
pub use process::*;
pub use recorder::*;

/// How long any single wait in a test may take before it counts as a failure.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds or `PATIENCE` runs out.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads lines from `reader` until one contains "listening on ADDR"; returns ADDR.
fn read_listen_addr(
    reader: impl Read + Send + 'static,
    what: &str,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let mut lines = BufReader::new(reader);
    let reader_name = what.to_string();
    let (addr_tx, addr_rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("{reader_name}-output"))
        .spawn(move || {
            let mut sent = false;
            let mut line = String::new();
            while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                            let _ = addr_tx.send(addr);
                            sent = true;
                        }
                    }
                }
                let _ = tx.send(std::mem::take(&mut line));
            }
        })
        .expect("spawn output reader");
    let addr = addr_rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} did not report its address"));
    (addr, rx)
}

/// A demo backend process (`backends/main.rs`) on an ephemeral port.
pub struct DemoBackend {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl DemoBackend {
    pub fn start(name: &str) -> DemoBackend {
        DemoBackend::start_on(name, 0)
    }

    /// On `port` (0: any free one): a backend brought back where it was.
    pub fn start_on(name: &str, port: u16) -> DemoBackend {
        let port = port.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_backend"))
            .args(["--port", &port, "--name", name, "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn backend");
        let stdout = child.stdout.take().expect("backend stdout");
        let (addr, _) = read_listen_addr(stdout, name);
        DemoBackend {
            name: name.to_string(),
            addr,
            child,
        }
    }

    pub fn config(&self) -> BackendConfig {
        BackendConfig {
            name: self.name.clone(),
            address: self.addr,
            weight: 1,
            tls: None,
            backup: false,
        }
    }

    /// `(connections, requests)` the backend has seen, from its `/stats` endpoint.
    pub fn stats(&self) -> (u64, u64) {
        let mut s = connect(self.addr);
        s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write stats request");
        let resp = read_response(&mut s, false);
        let body = resp.text();
        let field = |key: &str| -> u64 {
            body.split(&format!("\"{key}\":"))
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {body}"))
        };
        // The stats request itself counts as a connection and a request.
        (field("connections") - 1, field("requests") - 1)
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A balancer running in this process on its own thread.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The reactor's backends, for its own counters (requests, connections opened, errors).
    pub backends: std::sync::Arc<lb::upstream::Backends>,
    /// The admin API's address, for proxies started with one (`start_with_admin*`).
    pub admin: Option<SocketAddr>,
    admin_handle: Option<lb::admin::AdminHandle>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(backends: &[&DemoBackend]) -> Proxy {
        Proxy::start_with(backends.iter().map(|b| b.config()).collect(), |_| {})
    }

    /// A proxy without active health checks, so backends see only the test's own requests.
    pub fn start_with(backends: Vec<BackendConfig>, adjust: impl FnOnce(&mut Config)) -> Proxy {
        Proxy::launch(backends, adjust, false, false)
    }

    /// A proxy whose health thread probes the backends as configured.
    pub fn start_with_health(
        backends: Vec<BackendConfig>,
        adjust: impl FnOnce(&mut Config),
    ) -> Proxy {
        Proxy::launch(backends, adjust, true, false)
    }

    /// A proxy without health checks, with the admin API (management thread) on its own port,
    /// wired as `main` wires it.
    pub fn start_with_admin(
        backends: Vec<BackendConfig>,
        adjust: impl FnOnce(&mut Config),
    ) -> Proxy {
        Proxy::launch(backends, adjust, false, true)
    }

    /// A proxy with health checks and the admin API.
    pub fn start_with_admin_and_health(
        backends: Vec<BackendConfig>,
        adjust: impl FnOnce(&mut Config),
    ) -> Proxy {
        Proxy::launch(backends, adjust, true, true)
    }

    /// The admin API's address; panics for a proxy started without one.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .expect("this proxy was started without the admin API")
    }

    fn launch(
        backends: Vec<BackendConfig>,
        adjust: impl FnOnce(&mut Config),
        health_checks: bool,
        with_admin: bool,
    ) -> Proxy {
        let mut config = Config {
            backends,
            access_log: false,
            ..Config::default()
        };
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let mut reactor = Reactor::with_listener(listener, &config).expect("reactor");
        let addr = reactor.local_addr();
        let handle = reactor.handle();
        let admin = with_admin.then(|| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind admin");
            let admin_addr = listener.local_addr().expect("admin addr");
            // What the admin API reports are the addresses actually bound, as in `main`.
            config.listen = addr;
            config.admin = admin_addr;
            let admin = lb::admin::Admin::new(
                &config,
                reactor.backends(),
                reactor.events(),
                reactor.totals(),
                reactor.handle(),
            )
            .with_routes(reactor.routes());
            let handle = lb::admin::spawn(listener, admin).expect("spawn admin");
            (admin_addr, handle)
        });
        let (admin, admin_handle) = admin.unzip();
        let health = health_checks.then(|| reactor.start_health_checks().expect("health checks"));
        let discover: Vec<_> = config
            .pools_in_effect()
            .into_iter()
            .flat_map(|p| p.discover)
            .collect();
        let discovery = (!discover.is_empty()).then(|| {
            lb::discovery::spawn(discover, config.discovery.clone(), reactor.handle())
                .expect("discovery")
        });
        let backends = reactor.backends();
        let thread = thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                reactor.run().expect("reactor run");
                // Gone first, so a discovery thread's last questions fail at once.
                drop(reactor);
                drop(discovery);
                drop(health);
            })
            .expect("spawn proxy");
        Proxy {
            addr,
            backends,
            admin,
            admin_handle,
            handle,
            thread: Some(thread),
        }
    }
}

impl Proxy {
    /// Applies `config` as SIGHUP does (the signal thread sends every reactor this command).
    pub fn reload(&self, config: Config) {
        self.handle
            .send(lb::reactor::Command::Reload(Box::new(config)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(admin) = self.admin_handle.take() {
            admin.stop(Instant::now() + lb::threads::STOP_WAIT);
        }
    }
}

/// A backend that runs `script` on each accepted connection (on its own thread), for exact
/// bytes no real server would send.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedBackend {
    pub fn start<F>(script: F) -> ScriptedBackend
    where
        F: Fn(TcpStream, usize) + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted backend");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(script);
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        thread::Builder::new()
            .name("scripted-backend".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let script = Arc::clone(&script);
                    thread::spawn(move || script(stream, n));
                }
            })
            .expect("spawn scripted backend");
        ScriptedBackend { addr, connections }
    }

    pub fn config(&self, name: &str) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            address: self.addr,
            weight: 1,
            tls: None,
            backup: false,
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one request head (up to the empty line) from a backend-side socket.
pub fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// A client socket with read and write timeouts, so a broken proxy fails a test, not hangs it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.set_write_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header (name, value) pairs in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
}

/// Reads one response from `stream`; `head_request` says the request was HEAD (no body).
/// Interim (1xx) responses are returned like any other.
pub fn read_response(stream: &mut TcpStream, head_request: bool) -> Response {
    let mut pending = Vec::new();
    read_response_buffered(stream, &mut pending, head_request)
}

/// Like [`read_response`], keeping bytes past the response in `pending` for the next call
/// (pipelining).
pub fn read_response_buffered(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> Response {
    let mut chunk = [0u8; 16384];
    let (status, headers, head_len) = loop {
        if let Some((head, n)) = parse_head(pending) {
            break (head.status, head.headers, n);
        }
        let n = stream.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    };
    pending.drain(..head_len);
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    if no_body {
        return response;
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut fill = |pending: &mut Vec<u8>| -> bool {
        let n = stream.read(&mut chunk).unwrap_or(0);
        pending.extend_from_slice(&chunk[..n]);
        n > 0
    };
    if chunked {
        response.body = decode_chunked(pending, &mut fill);
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.trim().parse().expect("content-length");
        while pending.len() < len {
            assert!(fill(pending), "connection closed mid-body");
        }
        response.body = pending.drain(..len).collect();
    } else {
        while fill(pending) {}
        response.body = std::mem::take(pending);
    }
    response
}

fn decode_chunked(pending: &mut Vec<u8>, fill: &mut impl FnMut(&mut Vec<u8>) -> bool) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(fill(pending), "closed inside chunked body");
        };
        let line = String::from_utf8_lossy(&pending[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        pending.drain(..line_end + 2);
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let end = loop {
                    if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(fill(pending), "closed inside trailers");
                };
                pending.drain(..end + 2);
                if end == 0 {
                    return body;
                }
            }
        }
        while pending.len() < size + 2 {
            assert!(fill(pending), "closed inside a chunk");
        }
        body.extend_from_slice(&pending[..size]);
        pending.drain(..size + 2);
    }
}

/// Sends `request` on a new connection and reads one response.
pub fn roundtrip(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    read_response(&mut s, request.starts_with(b"HEAD "))
}

/// A plain `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    roundtrip(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Reads until the peer closes; returns what arrived.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    all
}

/// The byte pattern the demo backend's `/bytes/N` sends.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Splits a demo backend `/echo` response into the request head the backend received (byte for
/// byte, as text) and the body it decoded.
pub fn echo_parts(resp: &Response) -> (String, Vec<u8>) {
    assert_eq!(resp.status, 200, "echo failed: {}", resp.text());
    let head_len: usize = resp
        .header("x-echo-head-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no X-Echo-Head-Length in {:?}", resp.headers));
    let head = String::from_utf8_lossy(&resp.body[..head_len]).into_owned();
    (head, resp.body[head_len..].to_vec())
}

/// The header fields of a head (request or status line skipped), in order, as `(name, value)`.
pub fn head_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.to_string(), v.trim().to_string())
        })
        .collect()
}

/// Values of every field named `name` (case-insensitive) in a head, in order.
pub fn field_values(head: &str, name: &str) -> Vec<String> {
    head_fields(head)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// Asserts that the peer has closed (we read end-of-stream, not a timeout) with nothing unread.
pub fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "unexpected bytes before the close: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        // A reset also ends the connection, but only after everything sent was read.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed: {e}"),
    }
}

/// Request heads (and bodies, if the script reads them) a scripted backend received.
pub type Recorded = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A scripted backend that answers every request head on every connection with `response`,
/// recording each head it received. Requests must have no body.
pub fn recording_backend(response: &'static [u8]) -> (ScriptedBackend, Recorded) {
    let recorded: Recorded = Default::default();
    let heads = std::sync::Arc::clone(&recorded);
    let backend = ScriptedBackend::start(move |mut s, _| loop {
        let head = read_head(&mut s);
        if !head.ends_with(b"\r\n\r\n") {
            return;
        }
        heads.lock().expect("lock").push(head);
        if s.write_all(response).is_err() {
            return;
        }
    });
    (backend, recorded)
}

/// An address on which nothing listens: connects to it are refused at once.
pub fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

pub fn backend_at(name: &str, address: SocketAddr) -> BackendConfig {
    BackendConfig {
        name: name.to_string(),
        address,
        weight: 1,
        tls: None,
        backup: false,
    }
}

/// Writes `text` to a fresh file under the test temp directory and returns its path.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// The response head at the start of `raw` (its body left empty) and its length, once it is
/// complete.
pub fn parse_head(raw: &[u8]) -> Option<(Response, usize)> {
    try_parse_head(raw).ok().flatten()
}

/// As [`parse_head`], telling a head still arriving (`Ok(None)`) from one that is not a
/// response head at all.
pub fn try_parse_head(raw: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut slots);
    let n = match parsed.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let head = Response {
        status: parsed.code.unwrap_or(0),
        headers,
        body: Vec::new(),
    };
    Ok(Some((head, n)))
}
