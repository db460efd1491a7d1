//! The admin API (docs/ADMIN_API.md) against a running balancer: the state document, the
//! Server-Sent Events stream, the Prometheus exposition (checked with the real
//! `prometheus_client` parser), runtime changes under load, the bearer token, bad input, a
//! stalled event listener, and the dashboard files.
//!
//! `metrics_parse_with_the_prometheus_client_parser` needs `python3` with `prometheus_client`
//! (`pip install prometheus_client`); without them it fails, it does not skip.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

// ---- a tiny admin client ----------------------------------------------------------------------

/// One admin request on its own connection (the admin API closes after each answer).
fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    roundtrip(admin, &request)
}

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    call(admin, "GET", path, &[], None)
}

fn admin_post(admin: SocketAddr, path: &str, body: Option<&str>) -> Response {
    call(admin, "POST", path, &[], body.map(str::as_bytes))
}

fn admin_delete(admin: SocketAddr, path: &str) -> Response {
    call(admin, "DELETE", path, &[], None)
}

/// The body as JSON, after checking it is declared so.
fn json_of(r: &Response) -> Value {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "status {}: {}",
        r.status,
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// An error answer: the status, and a JSON body `{"error": "<non-empty text>"}`.
fn assert_error(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let body = json_of(r);
    let message = body["error"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "no error message in {body}");
    message
}

fn state(admin: SocketAddr) -> Value {
    let r = admin_get(admin, "/api/state");
    assert_eq!(r.status, 200, "{}", r.text());
    json_of(&r)
}

/// The backend called `name` in a state document (the last one, should a removed backend and
/// a newer one share the name).
fn backend_in<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["backends"]
        .as_array()
        .expect("backends array")
        .iter()
        .rev()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {state}"))
}

fn backend_state(admin: SocketAddr, name: &str) -> String {
    backend_in(&state(admin), name)["state"]
        .as_str()
        .expect("state string")
        .to_string()
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no whole number at {pointer} in {value}"))
}

fn add_body(name: &str, address: SocketAddr) -> String {
    json!({ "name": name, "address": address.to_string(), "weight": 1 }).to_string()
}

// ---- an SSE listener --------------------------------------------------------------------------

/// One event off `GET /api/events`: when it arrived, its type and its data.
#[derive(Debug, Clone)]
struct SseEvent {
    at: Instant,
    kind: String,
    data: Value,
}

/// A client of `GET /api/events`; a thread parses frames into a channel.
struct Sse {
    head: Response,
    events: mpsc::Receiver<SseEvent>,
    stream: TcpStream,
}

impl Sse {
    fn connect(admin: SocketAddr) -> Sse {
        let mut stream = connect(admin);
        stream
            .write_all(
                b"GET /api/events HTTP/1.1\r\nHost: admin\r\nAccept: text/event-stream\r\n\r\n",
            )
            .expect("write events request");
        let raw = read_head(&mut stream);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut slots);
        assert!(
            matches!(parsed.parse(&raw), Ok(httparse::Status::Complete(_))),
            "bad SSE head {:?}",
            String::from_utf8_lossy(&raw)
        );
        let head = Response {
            status: parsed.code.unwrap_or(0),
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
        };
        let (tx, events) = mpsc::channel();
        let reader = stream.try_clone().expect("clone SSE stream");
        thread::Builder::new()
            .name("sse-client".into())
            .spawn(move || {
                let mut lines = BufReader::new(reader);
                let (mut kind, mut data) = (String::new(), String::new());
                let mut line = String::new();
                while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let text = line.trim_end_matches(['\r', '\n']);
                    if text.is_empty() {
                        if !data.is_empty() {
                            let value = serde_json::from_str(&data)
                                .unwrap_or_else(|e| panic!("event data not JSON ({e}): {data}"));
                            let event = SseEvent {
                                at: Instant::now(),
                                kind: std::mem::take(&mut kind),
                                data: value,
                            };
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                        data.clear();
                    } else if let Some(v) = text.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = text.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                    line.clear();
                }
            })
            .expect("spawn SSE reader");
        Sse {
            head,
            events,
            stream,
        }
    }

    /// The next event at all, within `PATIENCE`.
    fn next(&self, what: &str) -> SseEvent {
        self.events
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no event while waiting for {what}"))
    }

    /// Skips events until one of `kind` satisfies `matches`.
    fn find(&self, kind: &str, what: &str, matches: impl Fn(&Value) -> bool) -> SseEvent {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if e.kind == kind && matches(&e.data) => return e,
                Ok(_) => {}
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits for the first `stats` event: from then on the listener is registered and request
    /// events reach it. Returns what came before it (the history replay).
    fn until_first_stats(&self) -> Vec<SseEvent> {
        let mut before = Vec::new();
        loop {
            let e = self.next("the first stats event");
            if e.kind == "stats" {
                return before;
            }
            before.push(e);
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ---- keep-alive load --------------------------------------------------------------------------

/// Reads one response with a `Content-Length` body, without panicking.
fn try_read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Result<Response, String> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some((mut response, head_len)) = try_parse_head(pending)? {
            let length: usize = response
                .header("content-length")
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no Content-Length in {:?}", response.headers))?;
            while pending.len() < head_len + length {
                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            response.body = pending[head_len..head_len + length].to_vec();
            pending.drain(..head_len + length);
            return Ok(response);
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a response".into());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Client threads sending keep-alive GETs, each counted by the backend that answered it.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<HashMap<String, u64>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `threads` clients sending `GET path` until stopped, or `each` requests apiece.
    fn start(proxy: SocketAddr, threads: usize, path: &str, each: Option<u64>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let served: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n").into_bytes();
        let threads = (0..threads)
            .map(|_| {
                let (stop, done, failures, served) = (
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    Arc::clone(&failures),
                    Arc::clone(&served),
                );
                let request = request.clone();
                thread::spawn(move || {
                    let mut local: HashMap<String, u64> = HashMap::new();
                    let mut conn: Option<TcpStream> = None;
                    let mut pending = Vec::new();
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) && each.is_none_or(|n| sent < n) {
                        sent += 1;
                        let stream = conn.get_or_insert_with(|| {
                            pending.clear();
                            connect(proxy)
                        });
                        let result = stream
                            .write_all(&request)
                            .map_err(|e| e.to_string())
                            .and_then(|()| try_read_response(stream, &mut pending));
                        done.fetch_add(1, Ordering::Relaxed);
                        match result {
                            Ok(r) if r.status == 200 => {
                                *local.entry(r.backend().to_string()).or_default() += 1;
                                if r.header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                                {
                                    conn = None;
                                }
                            }
                            Ok(r) => {
                                failures.lock().expect("failures").push(format!(
                                    "status {}: {}",
                                    r.status,
                                    r.text()
                                ));
                                conn = None;
                            }
                            Err(e) => {
                                failures.lock().expect("failures").push(e);
                                conn = None;
                            }
                        }
                    }
                    let mut all = served.lock().expect("served");
                    for (backend, n) in local {
                        *all.entry(backend).or_default() += n;
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            failures,
            served,
            threads,
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops (or waits for) the clients; returns the failures and the count per backend.
    fn finish(self) -> (Vec<String>, HashMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let failures = self.failures.lock().expect("failures").clone();
        let served = self.served.lock().expect("served").clone();
        (failures, served)
    }
}

/// What the balancer itself counted as sent to a backend (each try counts).
fn attempts(proxy: &Proxy, name: &str) -> u64 {
    proxy
        .backends
        .snapshot()
        .iter()
        .rev()
        .find(|b| b.name == name)
        .map(|b| b.requests.load(Ordering::Relaxed))
        .unwrap_or_else(|| panic!("no backend {name}"))
}

// ---- 1. the state document --------------------------------------------------------------------

#[test]
fn state_reports_every_documented_field() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let proxy = Proxy::start_with_admin_and_health(vec![b1.config(), b2.config()], |c| {
        c.health.interval = Duration::from_millis(50);
    });
    let admin = proxy.admin_addr();

    let doc = state(admin);
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["uptime_ms"].is_u64(), "{doc}");
    let config = &doc["config"];
    assert_eq!(config["listen"], proxy.addr.to_string());
    assert_eq!(config["admin"], admin.to_string());
    assert_eq!(config["algorithm"], "round_robin");
    assert_eq!(config["retries"], 2);
    assert_eq!(
        config["health"],
        json!({ "path": "/health", "interval_ms": 50, "timeout_ms": 1000, "rise": 2, "fall": 2 })
    );
    for key in [
        "requests",
        "errors",
        "active_connections",
        "in_flight",
        "events_dropped",
    ] {
        assert!(doc["totals"][key].is_u64(), "totals.{key} in {doc}");
    }
    assert_eq!(doc["totals"]["requests"], 0);
    let backends = doc["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2);
    for (b, demo) in backends.iter().zip([&b1, &b2]) {
        assert_eq!(b["name"], demo.name);
        assert_eq!(b["address"], demo.addr.to_string());
        assert_eq!(b["weight"], 1);
        assert_eq!(b["state"], "up");
        assert!(b["last_change_ms"].is_u64(), "{b}");
        assert!(b["last_change_reason"].is_string(), "{b}");
        assert!(b.get("last_check").is_some(), "{b}");
        for key in [
            "flips",
            "in_flight",
            "requests",
            "errors",
            "retries",
            "redispatches",
            "connections",
            "consecutive_failures",
        ] {
            assert_eq!(b[key], 0, "{key} of {b}");
        }
        // A probe may or may not have run yet; a pass that ran is counted.
        let passes = b["consecutive_passes"].as_u64();
        let probed = b["last_check"].is_object();
        assert!(
            passes == Some(0) && !probed || passes >= Some(1) && probed,
            "consecutive_passes of {b}"
        );
        // No request yet: the latency fields are there, and null.
        for key in ["latency_p50_ms", "latency_p99_ms"] {
            assert!(b.get(key).is_some_and(Value::is_null), "{key} of {b}");
        }
    }

    // Health checks ran: last_check is filled in.
    wait_until("a health check of every backend", || {
        let doc = state(admin);
        doc["backends"]
            .as_array()
            .is_some_and(|bs| bs.iter().all(|b| !b["last_check"].is_null()))
    });
    let doc = state(admin);
    let started_ms = u64_at(&doc, "/backends/0/last_change_ms");
    for b in doc["backends"].as_array().expect("backends") {
        let check = &b["last_check"];
        assert_eq!(check["ok"], true, "{b}");
        assert_eq!(check["detail"], "status 200", "{b}");
        assert!(
            check["latency_ms"].as_f64().is_some_and(|l| l >= 0.0),
            "{b}"
        );
        assert!(u64_at(check, "/at_ms") >= started_ms, "{b}");
        assert_eq!(b["state"], "up");
    }

    // A slow request is in flight on b1 (round robin starts there) while a keep-alive client
    // sends ten more.
    let slow_addr = proxy.addr;
    let slow = thread::spawn(move || get(slow_addr, "/delay/400"));
    wait_until("the slow request to be in flight", || {
        u64_at(&state(admin), "/totals/in_flight") == 1
    });
    let doc = state(admin);
    assert_eq!(backend_in(&doc, "b1")["in_flight"], 1, "{doc}");
    let mut client = connect(proxy.addr);
    for _ in 0..10 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        assert_eq!(read_response(&mut client, false).status, 200);
    }
    let doc = state(admin);
    assert!(u64_at(&doc, "/totals/active_connections") >= 1, "{doc}");
    assert_eq!(slow.join().expect("slow request").status, 200);

    let doc = state(admin);
    assert_eq!(doc["totals"]["requests"], 11, "{doc}");
    assert_eq!(doc["totals"]["errors"], 0, "{doc}");
    assert_eq!(doc["totals"]["in_flight"], 0, "{doc}");
    assert_eq!(doc["totals"]["events_dropped"], 0, "{doc}");
    for (name, count) in [("b1", 6), ("b2", 5)] {
        let b = backend_in(&doc, name);
        assert_eq!(b["requests"], count, "{b}");
        assert_eq!(b["in_flight"], 0, "{b}");
        assert!(u64_at(b, "/connections") >= 1, "{b}");
        let p50 = b["latency_p50_ms"].as_f64().expect("p50 after traffic");
        let p99 = b["latency_p99_ms"].as_f64().expect("p99 after traffic");
        assert!(p50 > 0.0 && p50 <= p99, "{b}");
    }
    // b1's p99 is its 400 ms request.
    let p99 = backend_in(&doc, "b1")["latency_p99_ms"]
        .as_f64()
        .unwrap_or(0.0);
    assert!((400.0..1000.0).contains(&p99), "b1 p99 {p99}");

    drop(client);
    wait_until("the closed client to leave the count", || {
        u64_at(&state(admin), "/totals/active_connections") == 0
    });
    assert!(u64_at(&state(admin), "/uptime_ms") >= u64_at(&doc, "/uptime_ms"));
}

#[test]
fn a_connection_close_request_leaves_the_count_without_waiting_for_the_client() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |_| {});
    let admin = proxy.admin_addr();
    let mut client = connect(proxy.addr);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut client, false).status, 200);
    // The client sent nothing more and keeps its socket open: the proxy closes at once rather
    // than lingering (up to 2 s) for the client's FIN.
    let deadline = Instant::now() + Duration::from_millis(1000);
    while u64_at(&state(admin), "/totals/active_connections") != 0 {
        assert!(
            Instant::now() < deadline,
            "the session is still open 1 s after its Connection: close response"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("read to the end");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

// ---- 2. the event stream ----------------------------------------------------------------------

#[test]
fn request_events_carry_the_request_id_the_backend_got() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |c| c.request_id = true);
    let sse = Sse::connect(proxy.admin_addr());
    sse.until_first_stats();
    let r = get(proxy.addr, "/echo/rid");
    let (head, _) = echo_parts(&r);
    let ids = field_values(&head, "x-request-id");
    assert_eq!(ids.len(), 1, "{head}");
    let e = sse.find("request", "the request's event", |d| {
        d["target"] == "/echo/rid"
    });
    assert_eq!(e.data["request_id"], ids[0].as_str(), "{}", e.data);
    let kept = roundtrip(
        proxy.addr,
        b"GET /echo/kept HTTP/1.1\r\nHost: x\r\nX-Request-Id: mine-42\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(kept.status, 200);
    let e = sse.find("request", "the second request's event", |d| {
        d["target"] == "/echo/kept"
    });
    assert_eq!(e.data["request_id"], "mine-42", "{}", e.data);
}

#[test]
fn events_stream_requests_and_stats_every_second() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |_| {});
    let admin = proxy.admin_addr();
    let sse = Sse::connect(admin);
    assert_eq!(sse.head.status, 200);
    assert_eq!(sse.head.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.head.header("access-control-allow-origin"), Some("*"));
    // The first stats event comes at once, and the stream is live from then on.
    assert!(sse.until_first_stats().is_empty(), "no history yet");

    // A proxied request, on a connection whose every byte we count.
    let mut s = connect(proxy.addr);
    s.write_all(b"GET /delay/20?probe=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let client = s.local_addr().expect("local addr").to_string();
    let raw = read_to_close(&mut s);
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
    let e = sse.find("request", "the proxied request's event", |d| {
        d["target"] == "/delay/20?probe=1"
    });
    let d = &e.data;
    assert_eq!(d["method"], "GET");
    assert_eq!(d["status"], 200);
    assert_eq!(d["backend"], "b1");
    assert_eq!(d["client"], client);
    assert_eq!(d["bytes"], raw.len() as u64, "{d}");
    let ms = d["duration_ms"].as_f64().expect("duration_ms");
    assert!((20.0..5000.0).contains(&ms), "{d}");
    assert!(d["time_ms"].is_u64(), "{d}");

    // An answer the balancer made itself has no backend.
    let r = roundtrip(proxy.addr, b"GARBAGE\x01\r\n\r\n");
    assert_eq!(r.status, 400);
    let e = sse.find("request", "the refused request's event", |d| {
        d["status"] == 400
    });
    assert!(e.data["backend"].is_null(), "{}", e.data);

    // Stats: the state document, about every second.
    let first = sse.find("stats", "a stats event", |_| true);
    let second = sse.find("stats", "the next stats event", |_| true);
    let gap = second.at.duration_since(first.at);
    assert!(
        gap > Duration::from_millis(700) && gap < Duration::from_millis(1500),
        "stats {gap:?} apart"
    );
    let doc = &second.data;
    assert_eq!(doc["totals"]["requests"], 2, "{doc}");
    assert_eq!(doc["backends"][0]["name"], "b1");
    assert_eq!(doc["backends"][0]["requests"], 1);
    assert!(doc["config"]["listen"].is_string(), "{doc}");
}

/// A backend whose every answer (health checks included) is 200 or 503 as the switch says.
fn switchable_backend(healthy: Arc<AtomicBool>) -> ScriptedBackend {
    ScriptedBackend::start(move |mut s, _| {
        if read_head(&mut s).is_empty() {
            return;
        }
        let reply: &[u8] = if healthy.load(Ordering::SeqCst) {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        } else {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick"
        };
        let _ = s.write_all(reply);
    })
}

#[test]
fn events_report_health_and_config_changes_and_replay_them_to_late_listeners() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flaky = switchable_backend(Arc::clone(&healthy));
    let steady = DemoBackend::start("steady");
    let extra = DemoBackend::start("extra");
    let proxy =
        Proxy::start_with_admin_and_health(vec![flaky.config("flaky"), steady.config()], |c| {
            c.health.interval = Duration::from_millis(30);
        });
    let admin = proxy.admin_addr();
    let early = Sse::connect(admin);
    early.until_first_stats();

    healthy.store(false, Ordering::SeqCst);
    let down = early.find("health", "flaky going down", |d| d["backend"] == "flaky");
    assert_eq!(down.data["state"], "down", "{}", down.data);
    let reason = down.data["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("status 503"), "{reason}");
    assert!(down.data["time_ms"].is_u64());
    assert_eq!(backend_state(admin, "flaky"), "down");

    healthy.store(true, Ordering::SeqCst);
    let up = early.find("health", "flaky coming back", |d| d["backend"] == "flaky");
    assert_eq!(up.data["state"], "up", "{}", up.data);
    assert!(up.data["reason"]
        .as_str()
        .is_some_and(|r| r.contains("status 200")));

    let changes = [
        (
            "drain",
            admin_post(admin, "/api/backends/steady/drain", None),
        ),
        (
            "enable",
            admin_post(admin, "/api/backends/steady/enable", None),
        ),
        (
            "add",
            admin_post(admin, "/api/backends", Some(&add_body("extra", extra.addr))),
        ),
        ("remove", admin_delete(admin, "/api/backends/extra")),
    ];
    for (action, answer) in &changes {
        assert_eq!(answer.status, 200, "{action}: {}", answer.text());
        let backend = if *action == "add" || *action == "remove" {
            "extra"
        } else {
            "steady"
        };
        let e = early.find("config", action, |d| d["action"] == *action);
        assert_eq!(e.data["backend"], backend, "{}", e.data);
        assert!(e.data["time_ms"].is_u64());
    }

    // A listener that connects now is told the story first, in order.
    let late = Sse::connect(admin);
    let replayed: Vec<(String, String, String)> = late
        .until_first_stats()
        .into_iter()
        .map(|e| {
            let detail = if e.kind == "health" {
                &e.data["state"]
            } else {
                &e.data["action"]
            };
            (
                e.kind,
                e.data["backend"].as_str().unwrap_or_default().to_string(),
                detail.as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("health", "flaky", "down"),
        ("health", "flaky", "up"),
        ("config", "steady", "drain"),
        ("config", "steady", "enable"),
        ("config", "extra", "add"),
        ("config", "extra", "remove"),
    ]
    .iter()
    .map(|(k, b, d)| (k.to_string(), b.to_string(), d.to_string()))
    .collect();
    assert_eq!(replayed, expected);
}

// ---- 3. Prometheus metrics --------------------------------------------------------------------

/// Parses an exposition with `prometheus_client`'s own parser (Python), and returns its
/// families as JSON: `[{name, type, samples: [{name, labels, value}]}]`.
fn prometheus_parse(text: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type, "help": f.documentation,
                     "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
                                 for s in f.samples]})
print(json.dumps(families, allow_nan=False))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is required to check /metrics (then: pip install prometheus_client): {e}"
            )
        });
    child
        .stdin
        .take()
        .expect("python stdin")
        .write_all(text.as_bytes())
        .expect("feed the exposition to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics (is it installed? pip install \
         prometheus_client):\n{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("parser output")
}

fn family<'a>(families: &'a [Value], name: &str, kind: &str) -> &'a [Value] {
    let f = families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name}"));
    assert_eq!(f["type"], kind, "type of {name}");
    f["samples"].as_array().expect("samples")
}

fn sample_value(samples: &[Value], name: &str, labels: &Value) -> f64 {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"] == *labels)
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {name}{labels} in {samples:?}"))
}

#[test]
fn metrics_parse_with_the_prometheus_client_parser() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let proxy = Proxy::start_with_admin(vec![b1.config(), b2.config()], |_| {});
    let admin = proxy.admin_addr();
    // A backend added at runtime with a name that needs escaping in a label value.
    let odd = DemoBackend::start("odd");
    let odd_name = r#"we"ird\name"#;
    let r = admin_post(admin, "/api/backends", Some(&add_body(odd_name, odd.addr)));
    assert_eq!(r.status, 200, "{}", r.text());

    // Round robin over three: each backend gets 2 x "/", one 404 and one 30 ms request.
    for path in ["/", "/", "/status/404", "/delay/30"] {
        for _ in 0..3 {
            get(proxy.addr, path);
        }
    }
    wait_until("the clients' connections to be closed", || {
        u64_at(&state(admin), "/totals/active_connections") == 0
    });
    let r = admin_get(admin, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let families = prometheus_parse(&r.text());

    let names = [b1.name.as_str(), b2.name.as_str(), odd_name];
    let up = family(&families, "lb_backend_up", "gauge");
    for name in names {
        assert_eq!(
            sample_value(
                up,
                "lb_backend_up",
                &json!({ "backend": name, "pool": "default" })
            ),
            1.0
        );
    }

    // Counters lose the _total suffix as a family, keep it on the samples.
    let requests = family(&families, "lb_requests", "counter");
    let mut total = 0.0;
    for name in names {
        let ok = json!({ "backend": name, "pool": "default", "code": "200" });
        let missing = json!({ "backend": name, "pool": "default", "code": "404" });
        assert_eq!(sample_value(requests, "lb_requests_total", &ok), 3.0);
        assert_eq!(sample_value(requests, "lb_requests_total", &missing), 1.0);
    }
    for s in requests {
        total += s["value"].as_f64().unwrap_or(0.0);
        let labels = s["labels"].as_object().expect("labels");
        assert!(
            labels.contains_key("backend") && labels.contains_key("code"),
            "{s}"
        );
    }
    assert_eq!(total, 12.0);

    let histogram = family(&families, "lb_request_duration_seconds", "histogram");
    for name in names {
        let mut buckets: Vec<(f64, f64)> = histogram
            .iter()
            .filter(|s| {
                s["name"] == "lb_request_duration_seconds_bucket" && s["labels"]["backend"] == name
            })
            .map(|s| {
                let le = s["labels"]["le"].as_str().expect("le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("numeric le")
                };
                (bound, s["value"].as_f64().expect("count"))
            })
            .collect();
        assert!(buckets.len() > 5, "{name}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].0 < w[1].0),
            "le ascending: {buckets:?}"
        );
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative: {buckets:?}"
        );
        let count = sample_value(
            histogram,
            "lb_request_duration_seconds_count",
            &json!({ "backend": name, "pool": "default" }),
        );
        let sum = sample_value(
            histogram,
            "lb_request_duration_seconds_sum",
            &json!({ "backend": name, "pool": "default" }),
        );
        let inf = buckets.pop().expect("+Inf bucket");
        assert_eq!(inf, (f64::INFINITY, count), "{name}");
        assert_eq!(count, 4.0, "{name}");
        // The 30 ms request alone makes the sum, and stays out of the buckets up to 25 ms.
        assert!((0.03..5.0).contains(&sum), "{name}: sum {sum}");
        let bucket = |bound: f64| buckets.iter().find(|(le, _)| *le == bound).map(|(_, n)| *n);
        assert!(
            bucket(0.025).is_some_and(|n| n <= 3.0),
            "{name}: {buckets:?}"
        );
        assert_eq!(bucket(10.0), Some(4.0), "{name}: {buckets:?}");
    }

    let retries = family(&families, "lb_retries", "counter");
    for name in names {
        assert_eq!(
            sample_value(
                retries,
                "lb_retries_total",
                &json!({ "backend": name, "pool": "default" })
            ),
            0.0
        );
    }
    let active = family(&families, "lb_active_connections", "gauge");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["labels"], json!({}));
    assert_eq!(active[0]["value"], 0.0);

    // A drained backend is still exported; a removed one is not.
    assert_eq!(
        admin_post(admin, "/api/backends/b2/drain", None).status,
        200
    );
    assert_eq!(admin_delete(admin, "/api/backends/b1").status, 200);
    let families = prometheus_parse(&admin_get(admin, "/metrics").text());
    let states = family(&families, "lb_backend_state", "gauge");
    let draining = json!({ "backend": "b2", "pool": "default", "state": "draining" });
    assert_eq!(sample_value(states, "lb_backend_state", &draining), 1.0);
    for f in &families {
        for s in f["samples"].as_array().expect("samples") {
            assert_ne!(
                s["labels"]["backend"], "b1",
                "removed b1 still exported: {s}"
            );
        }
    }
}

// ---- 4. drain ---------------------------------------------------------------------------------

fn in_flight(proxy: &Proxy, name: &str) -> u64 {
    let (_, b) = proxy.backends.find(name).expect("backend");
    b.in_flight.load(Ordering::Relaxed)
}

#[test]
fn drain_finishes_in_flight_requests_and_stops_new_ones_enable_restores() {
    let x = DemoBackend::start("x");
    let y = DemoBackend::start("y");
    let proxy = Proxy::start_with_admin(vec![x.config(), y.config()], |_| {});
    let admin = proxy.admin_addr();

    // Round robin starts with x: the slow request is on it.
    let started = Instant::now();
    let slow_addr = proxy.addr;
    let slow = thread::spawn(move || get(slow_addr, "/delay/1500"));
    wait_until("the slow request to be on x", || {
        in_flight(&proxy, "x") == 1
    });

    let r = admin_post(admin, "/api/backends/x/drain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = json_of(&r);
    assert_eq!(answer["name"], "x");
    assert_eq!(answer["state"], "draining");
    assert_eq!(answer["in_flight"], 1, "{answer}");
    assert!(started.elapsed() < Duration::from_millis(1500));

    for _ in 0..20 {
        let r = get(proxy.addr, "/");
        assert_eq!((r.status, r.backend()), (200, "y"));
    }
    let r = slow.join().expect("slow request");
    assert_eq!((r.status, r.backend()), (200, "x"));
    assert_eq!(r.text(), "delayed 1500 ms");
    // x's own count: the slow request only (this /stats call is not counted).
    assert_eq!(x.stats().1, 1, "x got a request while drained");
    let doc = state(admin);
    let xs = backend_in(&doc, "x");
    assert_eq!(xs["state"], "draining");
    assert_eq!(xs["in_flight"], 0);
    assert_eq!(xs["requests"], 1);

    let r = admin_post(admin, "/api/backends/x/enable", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["state"], "up");
    let served: Vec<String> = (0..4)
        .map(|_| get(proxy.addr, "/").backend().to_string())
        .collect();
    assert_eq!(served.iter().filter(|b| *b == "x").count(), 2, "{served:?}");
    // The slow request, the earlier /stats call, and two of the four.
    assert_eq!(x.stats().1, 4);
}

// ---- 5. add and remove under load -------------------------------------------------------------

#[test]
fn add_and_remove_under_load_lose_no_request() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let b3 = DemoBackend::start("b3");
    let proxy = Proxy::start_with_admin(vec![b1.config(), b2.config()], |_| {});
    let admin = proxy.admin_addr();

    let load = Load::start(proxy.addr, 8, "/", None);
    wait_until("load to get going", || load.done() >= 1000);

    let r = admin_post(admin, "/api/backends", Some(&add_body("b3", b3.addr)));
    assert_eq!(r.status, 200, "{}", r.text());
    let added = json_of(&r);
    assert_eq!(
        (added["name"].as_str(), added["state"].as_str()),
        (Some("b3"), Some("up"))
    );
    assert_eq!(added["address"], b3.addr.to_string());
    wait_until("b3 to serve", || attempts(&proxy, "b3") >= 500);

    let r = admin_delete(admin, "/api/backends/b1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["state"], "removed");
    // The reactor applied the removal before answering: b1's count is final now.
    let b1_final = attempts(&proxy, "b1");
    let after_removal = load.done();
    wait_until("load to go on without b1", || {
        load.done() >= after_removal + 2000
    });
    let (failures, served) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    assert_eq!(
        attempts(&proxy, "b1"),
        b1_final,
        "b1 was picked after its removal"
    );
    // Every request has been answered: what b1 and b3 saw is final, and is exactly what the
    // balancer sent them.
    assert_eq!(b1.stats().1, b1_final);
    assert_eq!(b3.stats().1, attempts(&proxy, "b3"));
    assert!(served.get("b3").copied().unwrap_or(0) >= 500, "{served:?}");
    assert!(
        served
            .keys()
            .all(|b| ["b1", "b2", "b3"].contains(&b.as_str())),
        "{served:?}"
    );
    let doc = state(admin);
    assert_eq!(doc["totals"]["requests"], served.values().sum::<u64>());
    assert_eq!(backend_in(&doc, "b1")["state"], "removed");
    assert_eq!(backend_in(&doc, "b3")["state"], "up");
    assert_eq!(doc["totals"]["errors"], 0, "{doc}");
    // Removed means let go: no idle keep-alive connection to b1 is kept for later.
    wait_until("the balancer to close its connections to b1", || {
        connections_to(b1.addr, &[TCP_ESTABLISHED]) == 0
    });
}

// ---- 6. the bearer token ----------------------------------------------------------------------

#[test]
fn token_guards_changes_but_not_reads() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |c| {
        c.admin_token = Some("s3cret".into());
    });
    let admin = proxy.admin_addr();
    let add = add_body("b2", b2.addr);

    let bad_tokens: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[("Authorization", "Bearer s3cre")],
        &[("Authorization", "Bearer s3cret2")],
        &[("Authorization", "Basic czNjcmV0")],
    ];
    for headers in bad_tokens {
        let r = call(admin, "POST", "/api/backends/b1/drain", headers, None);
        assert_error(&r, 401);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_error(
            &call(
                admin,
                "POST",
                "/api/backends",
                headers,
                Some(add.as_bytes()),
            ),
            401,
        );
        assert_error(
            &call(admin, "DELETE", "/api/backends/b1", headers, None),
            401,
        );
        assert_error(
            &call(admin, "POST", "/api/backends/b1/enable", headers, None),
            401,
        );
    }
    // Nothing changed.
    let doc = state(admin);
    let backends = doc["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 1, "{doc}");
    assert_eq!(backends[0]["state"], "up");
    assert_eq!(get(proxy.addr, "/").backend(), "b1");

    // Reads need no token.
    for path in ["/api/state", "/metrics", "/", "/app.js", "/style.css"] {
        assert_eq!(admin_get(admin, path).status, 200, "{path}");
    }
    let sse = Sse::connect(admin);
    assert_eq!(sse.head.status, 200);
    drop(sse);

    // With the token, every change goes through. The scheme name is case-insensitive
    // (RFC 9110 §11.1).
    let auth: &[(&str, &str)] = &[("Authorization", "Bearer s3cret")];
    let r = call(admin, "POST", "/api/backends/b1/drain", auth, None);
    assert_eq!(
        (r.status, json_of(&r)["state"].clone()),
        (200, json!("draining"))
    );
    let lower: &[(&str, &str)] = &[("Authorization", "bearer s3cret")];
    let r = call(admin, "POST", "/api/backends/b1/enable", lower, None);
    assert_eq!((r.status, json_of(&r)["state"].clone()), (200, json!("up")));
    let r = call(admin, "POST", "/api/backends", auth, Some(add.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(admin, "DELETE", "/api/backends/b1", auth, None);
    assert_eq!(
        (r.status, json_of(&r)["state"].clone()),
        (200, json!("removed"))
    );
    assert_eq!(get(proxy.addr, "/").backend(), "b2");
}

#[test]
fn admin_beyond_loopback_without_token_is_refused_by_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "--admin",
            "0.0.0.0:0",
            "--backend",
            "127.0.0.1:1",
            "--check",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run lb --check");
    assert!(
        !out.status.success(),
        "lb accepted a public admin without a token"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
}

// ---- 7. bad input -----------------------------------------------------------------------------

#[test]
fn bad_admin_input_is_refused_and_everything_keeps_working() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |_| {});
    let admin = proxy.admin_addr();

    for body in [
        "{not json",
        "",
        "[]",
        r#"{"address":"127.0.0.1:9"}"#,
        r#"{"name":"x","address":"no port"}"#,
        r#"{"name":"x","address":"127.0.0.1:9","weight":0}"#,
    ] {
        assert_error(&admin_post(admin, "/api/backends", Some(body)), 400);
    }
    for (method, path) in [
        ("POST", "/api/backends/nope/drain"),
        ("POST", "/api/backends/nope/enable"),
        ("DELETE", "/api/backends/nope"),
    ] {
        let message = assert_error(&call(admin, method, path, &[], None), 404);
        assert!(message.contains("nope"), "{message}");
    }
    let duplicate = add_body("b1", b1.addr);
    assert!(
        assert_error(&admin_post(admin, "/api/backends", Some(&duplicate)), 409).contains("b1")
    );
    assert_error(&admin_get(admin, "/api/nope"), 404);
    assert_error(&call(admin, "PUT", "/api/backends/b1", &[], None), 404);
    assert_eq!(admin_get(admin, "/nope").status, 404);

    // A body past the limit, really sent: the answer must arrive whole, not be lost to a
    // reset from closing with the rest of the body unread.
    let body = vec![b'x'; 1024 * 1024];
    let mut s = connect(admin);
    let head = format!(
        "POST /api/backends HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    let mut writer = s.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let r = read_response(&mut s, false);
    assert_error(&r, 413);
    drop(s);
    let _ = sender.join();

    // Garbage, and a body cut short.
    let r = roundtrip(
        admin,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    );
    assert_error(&r, 400);
    let mut s = connect(admin);
    s.write_all(b"POST /api/backends HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n{\"na")
        .expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert_error(&read_response(&mut s, false), 400);
    // A connection that sends nothing at all is just closed.
    let mut s = connect(admin);
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(read_to_close(&mut s).is_empty());

    // The management thread and the proxy both carry on, unchanged.
    let doc = state(admin);
    assert_eq!(doc["backends"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(backend_in(&doc, "b1")["state"], "up");
    let r = get(proxy.addr, "/");
    assert_eq!((r.status, r.backend()), (200, "b1"));
    assert_eq!(
        admin_post(admin, "/api/backends/b1/drain", None).status,
        200
    );
}

/// Backend names may hold characters a URL path cannot carry as they are (`/`, `#`, `%`, `"`,
/// non-ASCII); a client percent-encodes them (`encodeURIComponent`), and the API must decode.
#[test]
fn backend_names_in_paths_are_percent_decoded() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let proxy = Proxy::start_with_admin(
        vec![backend_at("web/1", b1.addr), backend_at("café#2", b2.addr)],
        |_| {},
    );
    let admin = proxy.admin_addr();
    let r = admin_post(admin, "/api/backends/web%2F1/drain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["name"], "web/1");
    assert_eq!(backend_state(admin, "web/1"), "draining");
    let r = admin_post(admin, "/api/backends/web%2f1/enable", None);
    assert_eq!((r.status, json_of(&r)["state"].clone()), (200, json!("up")));
    let r = admin_delete(admin, "/api/backends/caf%C3%A9%232");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["name"], "café#2");
    assert_eq!(backend_state(admin, "café#2"), "removed");

    let odd = r#"50%"odd"\name"#;
    let r = admin_post(admin, "/api/backends", Some(&add_body(odd, b2.addr)));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin_post(admin, "/api/backends/50%25%22odd%22%5Cname/drain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["name"], odd);

    // Broken escapes are bad requests; an encoded slash is not a path separator.
    assert_error(&admin_post(admin, "/api/backends/web%2/drain", None), 400);
    assert_error(&admin_post(admin, "/api/backends/%zz/drain", None), 400);
    assert_error(&admin_post(admin, "/api/backends/%FF/drain", None), 400);
    assert_error(
        &admin_post(admin, "/api/backends%2Fweb%2F1%2Fdrain", None),
        404,
    );
    assert_eq!(backend_state(admin, "web/1"), "up");
}

// ---- 8. a stalled event listener ---------------------------------------------------------------

/// A client socket with a tiny receive buffer, so that a peer writing to it blocks quickly.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream right after creation.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let stream = TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// The admin address a running `lb` announced.
fn announced_admin(proxy: &ProxyProcess) -> SocketAddr {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = proxy
            .output
            .recv_timeout(left)
            .expect("lb did not announce its admin address");
        if let Some(rest) = line.split("admin API and dashboard on http://").nth(1) {
            return rest
                .trim()
                .trim_end_matches('/')
                .parse()
                .unwrap_or_else(|e| panic!("bad admin address in {line:?}: {e}"));
        }
    }
}

/// Sends `total` keep-alive GETs over `threads` connections; returns how long it took.
fn timed_load(proxy: SocketAddr, threads: u64, total: u64, path: &str) -> Duration {
    let started = Instant::now();
    let Load {
        threads: clients,
        failures,
        done,
        ..
    } = Load::start(proxy, threads as usize, path, Some(total / threads));
    // No stop: each client ends after its share.
    for t in clients {
        t.join().expect("load thread");
    }
    let took = started.elapsed();
    let failures = failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(done.load(Ordering::Relaxed), total);
    took
}

#[test]
fn stalled_event_listener_drops_events_instead_of_slowing_the_proxy() {
    const REQUESTS: u64 = 30_000;
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let config = temp_file("admin-stalled.toml", "access_log = false\n");
    let proxy = ProxyProcess::start(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--backend",
        &format!("b1={}", b1.addr),
        "--backend",
        &format!("b2={}", b2.addr),
    ]);
    let admin = announced_admin(&proxy);
    // The state names the addresses lb actually listens on, not the port 0 it was given.
    let doc = state(admin);
    assert_eq!(doc["config"]["listen"], proxy.addr.to_string(), "{doc}");
    assert_eq!(doc["config"]["admin"], admin.to_string(), "{doc}");

    // Big request events (a long target): a listener falls behind for sure, and events queued
    // without bound would show in the peak RSS.
    let path = format!("/?pad={}", "x".repeat(1000));
    let baseline = timed_load(proxy.addr, 4, REQUESTS, &path);
    let peak_before = proxy.peak_rss_kib();

    // A listener that reads the response head and the first event, then never reads again.
    let mut stalled = connect_with_small_receive_buffer(admin);
    stalled
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: admin\r\n\r\n")
        .expect("write");
    stalled
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"event: stats\n") {
        assert_eq!(stalled.read(&mut byte).expect("read SSE"), 1);
        seen.push(byte[0]);
    }
    let watched = timed_load(proxy.addr, 4, REQUESTS, &path);

    // Building and formatting the events costs CPU (the hub thread competes with the reactor
    // on a small machine), so some slowdown is expected; a reactor held up by the listener
    // would wait out the admin write timeout (10 s) instead.
    assert!(
        watched < baseline * 4 + Duration::from_secs(1),
        "with a stalled listener {REQUESTS} requests took {watched:?}, without {baseline:?}"
    );
    wait_until("dropped events to be counted", || {
        u64_at(&state(admin), "/totals/events_dropped") > 0
    });
    let doc = state(admin);
    assert_eq!(u64_at(&doc, "/totals/requests"), 2 * REQUESTS, "{doc}");
    assert_eq!(u64_at(&doc, "/totals/errors"), 0, "{doc}");
    let dropped = u64_at(&doc, "/totals/events_dropped");
    let peak_after = proxy.peak_rss_kib();
    // Each request event is over 1 KiB. Bounded, at most the reactor's channel (8192 events)
    // and the listener's queue (1024 frames) are full: about 10 MiB. The >20k dropped events,
    // had they been queued instead, would have added over 25 MiB.
    assert!(
        peak_after < peak_before + 20 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB ({dropped} events dropped)"
    );
    // Another listener is served normally meanwhile.
    let fresh = Sse::connect(admin);
    fresh.until_first_stats();
    drop(stalled);
}

// ---- 9. dashboard and CORS --------------------------------------------------------------------

#[test]
fn dashboard_files_and_cors() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |_| {});
    let admin = proxy.admin_addr();
    let frontend = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend");
    // Every script the page loads is served (the page also works from file://).
    let page = std::fs::read_to_string(frontend.join("index.html")).expect("index.html");
    for script in page.split("<script src=\"").skip(1) {
        let name = script.split('"').next().unwrap_or_default();
        let r = admin_get(admin, &format!("/{name}"));
        assert_eq!(
            r.status, 200,
            "/{name} is loaded by index.html but not served"
        );
    }
    for (path, file, kind) in [
        ("/", "index.html", "text/html"),
        ("/index.html", "index.html", "text/html"),
        ("/util.js", "util.js", "text/javascript"),
        ("/charts.js", "charts.js", "text/javascript"),
        ("/log.js", "log.js", "text/javascript"),
        ("/timeline.js", "timeline.js", "text/javascript"),
        ("/pools.js", "pools.js", "text/javascript"),
        ("/app.js", "app.js", "text/javascript"),
        ("/style.css", "style.css", "text/css"),
    ] {
        let r = admin_get(admin, path);
        assert_eq!(r.status, 200, "{path}");
        let content_type = r.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let expected = std::fs::read(frontend.join(file)).expect("frontend file");
        assert_eq!(r.body, expected, "{path}");
    }

    for r in [
        admin_get(admin, "/api/state"),
        admin_get(admin, "/metrics"),
        admin_get(admin, "/api/nope"),
        admin_post(admin, "/api/backends/nope/drain", None),
        admin_post(admin, "/api/backends/b1/drain", None),
    ] {
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("*"),
            "{} {:?}",
            r.status,
            r.headers
        );
    }

    // A browser's preflight for a mutating call with a token.
    let r = call(
        admin,
        "OPTIONS",
        "/api/backends/b1/drain",
        &[
            ("Origin", "null"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let methods = r.header("access-control-allow-methods").unwrap_or_default();
    for m in ["POST", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    // RFC 9110 §8.6: no Content-Length in a 204.
    assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    // The preflight changed nothing.
    assert_eq!(backend_state(admin, "b1"), "draining");
}
