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

pub mod tls;

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
            // The management thread has no stop: it (and its event hub) outlive the proxy,
            // idle, until the test process exits.
            lb::admin::spawn(listener, admin).expect("spawn admin");
            admin_addr
        });
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
    }
}

/// The `lb` binary as a child process, for what only a process shows (RSS, exit codes).
pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub child: Child,
    pub output: mpsc::Receiver<String>,
}

impl ProxyProcess {
    pub fn start(args: &[&str]) -> ProxyProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb");
        let stderr = child.stderr.take().expect("lb stderr");
        let (addr, output) = read_listen_addr(stderr, "lb");
        ProxyProcess {
            addr,
            child,
            output,
        }
    }

    /// Waits until the log shows a line containing `needle` (lines before it are consumed);
    /// returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(line) = self.output.recv_timeout(Duration::from_millis(50)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no log line with {needle:?}");
    }

    /// The admin API's address, from the startup log (call before waiting for later lines).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("admin API and dashboard on http://");
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.trim().trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"))
    }

    /// Waits for the process to exit, at most `within`; returns how it ended.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lb did not exit within {within:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
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
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut slots);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(pending) {
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect::<Vec<_>>();
            break (resp.code.unwrap_or(0), headers, n);
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

/// TCP states as `/proc/net/tcp` writes them.
pub const TCP_ESTABLISHED: &str = "01";
pub const TCP_SYN_SENT: &str = "02";
pub const TCP_CLOSE_WAIT: &str = "08";

/// One row of `/proc/net/tcp`: addresses as the kernel writes them (`0100007F:1F90`), the state
/// (`01` ESTABLISHED ...) and the receive queue in bytes.
struct TcpRow {
    local: String,
    remote: String,
    state: String,
    rx_queue: u64,
}

/// The IPv4 TCP sockets of this machine, from `/proc/net/tcp`.
fn tcp_table() -> Vec<TcpRow> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, remote, state, queues, ..] = fields.as_slice() else {
                return None;
            };
            let (_, rx) = queues.split_once(':')?;
            Some(TcpRow {
                local: local.to_string(),
                remote: remote.to_string(),
                state: state.to_string(),
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// An IPv4 address as `/proc/net/tcp` writes it.
fn tcp_table_address(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        panic!("/proc/net/tcp is IPv4 only");
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    )
}

/// IPv4 connections from this machine to `remote` in one of `states`, from `/proc/net/tcp`.
pub fn connections_to(remote: SocketAddr, states: &[&str]) -> usize {
    let remote = tcp_table_address(remote);
    tcp_table()
        .iter()
        .filter(|row| row.remote == remote && states.contains(&row.state.as_str()))
        .count()
}

/// Bytes that arrived on IPv4 sockets bound to `local` and are not read yet, from the
/// `rx_queue` column of `/proc/net/tcp` (for the listening socket: connections not yet
/// accepted). Zero once the process behind `local` has taken in everything sent to it.
pub fn unread_bytes_at(local: SocketAddr) -> u64 {
    let local = tcp_table_address(local);
    tcp_table()
        .iter()
        .filter(|row| row.local == local)
        .map(|row| row.rx_queue)
        .sum()
}

/// The kernel's TCP state of the IPv4 connection `local` → `remote`, from `/proc/net/tcp`
/// (1 ESTABLISHED, 8 CLOSE_WAIT, ...); `None` once the socket is gone. Lets a test wait until a
/// close has actually reached the other side, not merely been sent.
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let (local, remote) = (tcp_table_address(local), tcp_table_address(remote));
    tcp_table()
        .iter()
        .find(|row| row.local == local && row.remote == remote)
        .and_then(|row| u8::from_str_radix(&row.state, 16).ok())
}

// ==== Error, streaming and config tests (tests/it/{errors,streaming,config}.rs) ================
//
// Additions for the error-path, streaming and config tests; kept apart from the helpers above.

/// A backend that records every byte it receives, per connection, and answers each complete
/// request head that has no body with `200 ok` (so it can also serve as the live backend of a
/// test). Requests with a body are recorded but never answered.
pub struct Recorder {
    pub backend: ScriptedBackend,
    conns: std::sync::Arc<std::sync::Mutex<Vec<RecordedConn>>>,
}

/// What arrived on one backend connection.
#[derive(Debug, Clone, Default)]
pub struct RecordedConn {
    pub bytes: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
}

impl Recorder {
    pub fn start() -> Recorder {
        use std::sync::{Arc, Mutex};
        let conns: Arc<Mutex<Vec<RecordedConn>>> = Arc::default();
        let shared = Arc::clone(&conns);
        let backend = ScriptedBackend::start(move |mut stream, n| {
            {
                let mut all = shared.lock().expect("recorder lock");
                if all.len() <= n {
                    all.resize(n + 1, RecordedConn::default());
                }
            }
            let mut pending: Vec<u8> = Vec::new();
            // Cleared at the first request with a body: where it ends is not this helper's call.
            let mut answering = true;
            let mut chunk = [0u8; 16384];
            loop {
                let got = match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => 0,
                    Ok(got) => got,
                };
                let mut all = shared.lock().expect("recorder lock");
                if got == 0 {
                    all[n].closed = true;
                    return;
                }
                all[n].bytes.extend_from_slice(&chunk[..got]);
                drop(all);
                pending.extend_from_slice(&chunk[..got]);
                // Answer every complete bodiless head; stop answering at the first with a body.
                while answering {
                    let mut slots = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut slots);
                    let Ok(httparse::Status::Complete(len)) = req.parse(&pending) else {
                        break;
                    };
                    let has_body = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                    });
                    if has_body {
                        answering = false;
                        break;
                    }
                    pending.drain(..len);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Recorder-Connection: {n}\r\n\r\nok"
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        Recorder { backend, conns }
    }

    pub fn config(&self, name: &str) -> BackendConfig {
        self.backend.config(name)
    }

    /// A copy of what every connection received so far, in accept order.
    pub fn connections(&self) -> Vec<RecordedConn> {
        self.conns.lock().expect("recorder lock").clone()
    }

    /// Everything received on all connections, concatenated.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect()
    }

    /// Waits until every connection but the last has been closed by the proxy, so what they
    /// received is final. Call it after a sentinel request answered on the last connection:
    /// the accept queue is FIFO, so every earlier connection has been accepted by then.
    pub fn wait_closed_before_last(&self) {
        wait_until("the proxy to close its earlier backend connections", || {
            let accepted = self.backend.connection_count();
            let conns = self.connections();
            conns.len() == accepted
                && conns
                    .iter()
                    .take(accepted.saturating_sub(1))
                    .all(|c| c.closed)
        });
    }

    /// Waits until every accepted connection has been closed by the proxy, so what they
    /// received is final.
    pub fn wait_all_closed(&self) {
        wait_until("the proxy to close its backend connections", || {
            let accepted = self.backend.connection_count();
            let conns = self.connections();
            conns.len() == accepted && conns.iter().all(|c| c.closed)
        });
    }
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

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs, so
/// a connect to it neither succeeds nor fails until the connecting side gives up. The loopback
/// stand-in for an address that black-holes packets.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind blackhole");
        // SAFETY: re-listening on a listening socket only changes its backlog.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(rc, 0, "listen(0)");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        // Connect until one does not complete: from then on the queue is full.
        loop {
            assert!(fillers.len() < 16, "backlog 0 never filled up");
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// Reads from a client socket until the proxy closes it, failing if a byte arrives.
pub fn expect_closed_silently(stream: &mut TcpStream) {
    let rest = read_to_close(stream);
    assert!(
        rest.is_empty(),
        "expected the connection to close with nothing more; got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Whether the peer has closed: a read returns end of stream (or a reset) before `PATIENCE`.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Makes `close` send a reset instead of a FIN.
pub fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// The wrapping sum of the first `n` bytes of [`pattern`], as `/sink` reports it.
pub fn pattern_sum(n: u64) -> u64 {
    // One period (0..=250) sums to 250 * 251 / 2.
    let full = n / 251;
    let rest = n % 251;
    full.wrapping_mul(31375)
        .wrapping_add(rest * rest.saturating_sub(1) / 2)
}

/// One period of the pattern plus `len` more bytes: any `len`-byte window of the infinite
/// pattern is a slice of it, so streams are checked with `memcmp` rather than a byte loop (the
/// tests run unoptimised).
pub fn pattern_window(len: usize) -> Vec<u8> {
    pattern(len + 251)
}

/// Checks a stream of bytes against the pattern, slice by slice.
pub struct PatternCheck {
    window: Vec<u8>,
    pub offset: u64,
}

impl PatternCheck {
    pub fn new(max_slice: usize) -> PatternCheck {
        PatternCheck {
            window: pattern_window(max_slice),
            offset: 0,
        }
    }

    /// Checks the next bytes of the stream; panics at the first mismatch.
    pub fn feed(&mut self, data: &[u8]) {
        let max = self.window.len() - 251;
        for part in data.chunks(max) {
            let start = (self.offset % 251) as usize;
            if part != &self.window[start..start + part.len()] {
                let at = part
                    .iter()
                    .zip(&self.window[start..])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                panic!(
                    "stream differs from the pattern at byte {}",
                    self.offset + at as u64
                );
            }
            self.offset += part.len() as u64;
        }
    }
}

/// Writes `text` to a fresh file under the test temp directory and returns its path.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// CPU time a process has used so far (user + system), in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    field(11) + field(12)
}

// ==== A DNS server for discovery tests ===================================================
/// Records a test DNS server answers with; change them while it runs.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// name -> IPv4 addresses (A records).
    pub a: std::collections::HashMap<String, Vec<std::net::Ipv4Addr>>,
    /// name -> (target, port) (SRV records); the targets' A records go in the additional section.
    pub srv: std::collections::HashMap<String, Vec<(String, u16)>>,
}

impl Zone {
    /// An SRV record `srv` naming each backend as `NAME.domain` (an A record to loopback) at
    /// its port.
    pub fn srv_of(srv: &str, domain: &str, backends: &[&DemoBackend]) -> Zone {
        let mut zone = Zone::default();
        let mut targets = Vec::new();
        for b in backends {
            let host = format!("{}.{domain}", b.name);
            zone.a
                .insert(host.clone(), vec![std::net::Ipv4Addr::LOCALHOST]);
            targets.push((host, b.addr.port()));
        }
        zone.srv.insert(srv.to_string(), targets);
        zone
    }
}

/// A DNS server on UDP 127.0.0.1, port 0, answering from a [`Zone`] the test can change.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub zone: std::sync::Arc<std::sync::Mutex<Zone>>,
    pub queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> DnsServer {
        use simple_dns::rdata::{RData, A, SRV};
        use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
        use std::sync::atomic::Ordering;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        let addr = socket.local_addr().expect("dns addr");
        let zone = std::sync::Arc::new(std::sync::Mutex::new(zone));
        let queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shared, count) = (
            std::sync::Arc::clone(&zone),
            std::sync::Arc::clone(&queries),
        );
        thread::Builder::new()
            .name("dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let Ok(query) = Packet::parse(&buf[..n]) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let zone = shared.lock().expect("zone").clone();
                    let mut reply = Packet::new_reply(query.id());
                    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
                    let mut found = false;
                    for q in &query.questions {
                        reply.questions.push(q.clone());
                        let name = q.qname.to_string().trim_end_matches('.').to_string();
                        let a_records = |owner: &str| -> Vec<ResourceRecord<'static>> {
                            zone.a
                                .get(owner)
                                .into_iter()
                                .flatten()
                                .map(|ip| {
                                    ResourceRecord::new(
                                        Name::new_unchecked(owner).into_owned(),
                                        CLASS::IN,
                                        1,
                                        RData::A(A {
                                            address: u32::from(*ip),
                                        }),
                                    )
                                })
                                .collect()
                        };
                        if q.qtype == QTYPE::TYPE(TYPE::A) {
                            let records = a_records(&name);
                            found |= zone.a.contains_key(&name);
                            reply.answers.extend(records);
                        } else if q.qtype == QTYPE::TYPE(TYPE::SRV) {
                            for (target, port) in zone.srv.get(&name).into_iter().flatten() {
                                found = true;
                                reply.answers.push(ResourceRecord::new(
                                    Name::new_unchecked(&name).into_owned(),
                                    CLASS::IN,
                                    1,
                                    RData::SRV(SRV {
                                        priority: 0,
                                        weight: 1,
                                        port: *port,
                                        target: Name::new_unchecked(target).into_owned(),
                                    }),
                                ));
                                reply.additional_records.extend(a_records(target));
                            }
                        } else {
                            found |= zone.a.contains_key(&name) || zone.srv.contains_key(&name);
                        }
                    }
                    if !found {
                        *reply.rcode_mut() = RCODE::NameError;
                    }
                    if let Ok(bytes) = reply.build_bytes_vec() {
                        let _ = socket.send_to(&bytes, peer);
                    }
                }
            })
            .expect("spawn dns");
        DnsServer {
            addr,
            zone,
            queries,
        }
    }

    pub fn set(&self, zone: Zone) {
        *self.zone.lock().expect("zone") = zone;
    }
}

// ==== Resource limit tests (tests/it/limits.rs) ================================================

impl ProxyProcess {
    /// Like [`ProxyProcess::start`], with both listeners on port 0 of `host` (such as
    /// `127.0.0.2`: a loopback address no other test uses, so that no other test's client can
    /// reach them through a port it believes unused), and the child's descriptor limit
    /// (`RLIMIT_NOFILE`, soft and hard) set to `nofile` between fork and exec, when given.
    pub fn start_on(host: &str, args: &[&str], nofile: Option<u64>) -> ProxyProcess {
        use std::os::unix::process::CommandExt;
        let any_port = format!("{host}:0");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command
            .args(["--listen", &any_port, "--admin", &any_port])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: between fork and exec only async-signal-safe calls are allowed; setrlimit
            // is a plain system call on a value on the stack.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("spawn lb");
        let stderr = child.stderr.take().expect("lb stderr");
        let (addr, output) = read_listen_addr(stderr, "lb");
        ProxyProcess {
            addr,
            child,
            output,
        }
    }
}

/// Raises this process's soft descriptor limit to its hard limit; returns the new soft limit.
/// Children started afterwards inherit it.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}
