//! HTTP/2 to backends: `[[pool]] protocol = "h2"` in front of real gRPC servers (grpcio, from
//! `tests/h2/grpc_echo.py`), called by grpcio's own client through lb: unary, server-streaming,
//! client-streaming and failing calls with their `grpc-status` trailers, over h2c and over TLS,
//! to cleartext backends and to one over TLS (ALPN h2);
//! a hundred calls at once on one connection per backend; an HTTP/1.1 client reaching a gRPC
//! backend; the gRPC health check; and a backend that is gone.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::tls::{cert_entry, run_with_deadline, site, Lb};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/grpc_echo.py");
const DEADLINE: Duration = Duration::from_secs(60);

/// A Python server from `tests/h2` (grpc_echo.py, h2_backend.py): prints `port N` once
/// listening, then a line per thing it saw, which are kept.
pub(super) struct PyServer {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PyServer {
    pub fn start(script: &str, args: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("port ") {
                    let _ = port_tx.send(port.parse::<u16>().expect("port"));
                } else {
                    seen.lock().expect("lines").push(line);
                }
            }
        });
        let port = port_rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("{script} did not start (are h2 and grpcio installed?)"));
        PyServer {
            name: args
                .iter()
                .find(|a| !a.starts_with('-') && **a != "serve")
                .map_or(String::new(), |n| n.to_string()),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A grpcio server answering as `name`.
struct GrpcBackend(PyServer);

impl GrpcBackend {
    fn start(name: &str) -> GrpcBackend {
        GrpcBackend(PyServer::start(SCRIPT, &["serve", name]))
    }

    /// The calls it got.
    fn calls(&self) -> Vec<String> {
        self.0
            .lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix("call /echo.").map(|c| format!("/echo.{c}")))
            .collect()
    }
}

impl std::ops::Deref for GrpcBackend {
    type Target = PyServer;
    fn deref(&self) -> &PyServer {
        &self.0
    }
}

impl std::ops::DerefMut for GrpcBackend {
    fn deref_mut(&mut self) -> &mut PyServer {
        &mut self.0
    }
}

/// lb with h2c on its plain listener and TLS (`a.test`), one `protocol = "h2"` pool of
/// `backends` with `pool_keys` added to the pool's table.
pub(super) fn lb_for(backends: &[(&str, SocketAddr)], pool_keys: &str) -> Lb {
    let s = site();
    let mut text = format!(
        "[health]\ninterval = \"1h\"\n[http2]\nh2c = true\n[tls]\nlisten = \"127.0.0.1:0\"\n{}",
        cert_entry(&s.a)
    );
    text.push_str(&format!(
        "[[pool]]\nname = \"default\"\nprotocol = \"h2\"\n{pool_keys}\n"
    ));
    for (name, addr) in backends {
        text.push_str(&format!(
            "[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    Lb::start(&text)
}

fn grpc_client(args: &[&str]) -> serde_json::Value {
    let out = run_with_deadline(
        Command::new("python3").arg(SCRIPT).args(args),
        b"",
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "grpc client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the gRPC client")
}

/// Checks one `grpc_echo.py call` run; returns the backend that answered the unary call.
fn assert_calls(out: &serde_json::Value, names: &[&str]) -> String {
    let unary = out["unary"].as_str().expect("unary reply");
    let (name, rest) = unary.split_once(':').expect("NAME:request");
    assert!(names.contains(&name), "{out}");
    assert_eq!(rest, "hello");
    assert_eq!(out["unary_code"], "OK");
    // Trailing metadata comes back as HTTP/2 trailers, after the message.
    assert_eq!(out["unary_trailers"]["x-served-by"], name, "{out}");
    let stream: Vec<&str> = out["stream"]
        .as_array()
        .expect("stream replies")
        .iter()
        .map(|v| v.as_str().expect("text"))
        .collect();
    assert_eq!(stream.len(), 5, "{out}");
    let streamer = stream[0].split(':').next().expect("name");
    for (i, m) in stream.iter().enumerate() {
        assert_eq!(
            *m,
            format!("{streamer}:{i}"),
            "one call, one backend, in order"
        );
    }
    assert_eq!(out["stream_code"], "OK");
    assert_eq!(
        out["fail"],
        serde_json::json!(["NOT_FOUND", "no such thing"]),
        "grpc-status and grpc-message pass: {out}"
    );
    assert_eq!(
        out["upload"], "2000000",
        "a 2 MB client stream arrives whole"
    );
    name.to_string()
}

#[test]
fn grpc_calls_of_every_kind_pass_an_h2_pool_over_h2c_and_tls() {
    let g1 = GrpcBackend::start("g1");
    let g2 = GrpcBackend::start("g2");
    let lb = lb_for(&[("g1", g1.addr), ("g2", g2.addr)], "");

    let plain = grpc_client(&["call", &lb.plain().to_string()]);
    let first = assert_calls(&plain, &["g1", "g2"]);
    let tls = grpc_client(&[
        "call",
        &lb.tls.to_string(),
        "--tls",
        site().pki.ca_path(),
        "--name",
        "a.test",
    ]);
    assert_calls(&tls, &["g1", "g2"]);

    // Both backends took calls (round-robin), and each call reached one backend once.
    wait_until("8 calls recorded", || {
        g1.calls().len() + g2.calls().len() >= 8
    });
    let calls: Vec<String> = g1.calls().into_iter().chain(g2.calls()).collect();
    assert_eq!(calls.len(), 8, "{calls:?}");
    assert!(
        !g1.calls().is_empty() && !g2.calls().is_empty(),
        "{calls:?}"
    );
    let line = lb.log_line("\"POST /echo.Echo/Unary HTTP/2.0\" 200");
    assert!(line.contains(&format!(" {first} ")), "{line}");
}

#[test]
fn a_hundred_calls_at_once_share_one_connection_per_backend() {
    let g1 = GrpcBackend::start("g1");
    let g2 = GrpcBackend::start("g2");
    let lb = lb_for(
        &[("g1", g1.addr), ("g2", g2.addr)],
        "[pool.health]\ngrpc = true",
    );
    let replies = grpc_client(&["many", &lb.plain().to_string(), "100"]);
    let replies = replies.as_array().expect("replies");
    assert_eq!(replies.len(), 100);
    for (i, r) in replies.iter().enumerate() {
        let text = r.as_str().expect("reply");
        let (name, n) = text.split_once(':').expect("NAME:N");
        assert!(name == g1.name || name == g2.name, "{text}");
        assert_eq!(n, i.to_string(), "each call got its own answer");
    }
    // The streams were multiplexed: lb holds one connection to each backend (once the
    // health probe's own connection, from lb's start, is gone).
    for b in [&g1, &g2] {
        wait_until(&format!("one connection to {}", b.name), || {
            connections_to(b.addr, &[TCP_ESTABLISHED]) == 1
        });
    }
    // Each call reached a backend once (their reports may trail the replies a little).
    wait_until("100 calls recorded", || {
        g1.calls().len() + g2.calls().len() >= 100
    });
    assert_eq!(g1.calls().len() + g2.calls().len(), 100);
}

#[test]
fn an_http1_client_calls_a_grpc_backend_and_gets_the_trailers_chunked() {
    let g1 = GrpcBackend::start("g1");
    let lb = lb_for(&[("g1", g1.addr)], "");
    let mut s = connect(lb.plain());
    let message = b"\0\0\0\0\x05hello";
    let mut request = format!(
        "POST /echo.Echo/Unary HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nTE: trailers\r\nContent-Length: {}\r\n\r\n",
        message.len()
    )
    .into_bytes();
    request.extend_from_slice(message);
    s.write_all(&request).expect("write");
    let raw = read_until_contains(&mut s, b"\r\n0\r\n", b"\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("g1:hello"), "{text}");
    assert!(text.contains("\r\n0\r\ngrpc-status: 0\r\n"), "{text}");
    assert!(text.contains("x-served-by: g1\r\n"), "{text}");
}

/// Reads until `marker` has been seen and `end` follows it.
fn read_until_contains(s: &mut std::net::TcpStream, marker: &[u8], end: &[u8]) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Some(at) = find(&got, marker) {
            if find(&got[at + marker.len()..], end).is_some() {
                return got;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    panic!(
        "no {marker:?} then {end:?} in {:?}",
        String::from_utf8_lossy(&got)
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn the_grpc_health_check_takes_a_stopped_backend_out_and_calls_go_on() {
    let mut g1 = GrpcBackend::start("g1");
    let g2 = GrpcBackend::start("g2");
    let lb = lb_for(
        &[("g1", g1.addr), ("g2", g2.addr)],
        "[pool.health]\ngrpc = true\ninterval = \"200ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
    );
    // Probes pass (a failed one would mark the backend down at once with fall = 1).
    let probed = |b: &GrpcBackend| {
        b.0.lines()
            .iter()
            .filter(|l| l.ends_with("Health/Check"))
            .count()
    };
    wait_until("two probes of each backend", || {
        probed(&g1) >= 2 && probed(&g2) >= 2
    });
    assert!(
        !lb.log().iter().any(|l| l.contains("is down")),
        "{:#?}",
        lb.log()
    );
    g1.stop();
    lb.log_line("backend g1 is down");
    for _ in 0..3 {
        let out = grpc_client(&["call", &lb.plain().to_string()]);
        assert_eq!(assert_calls(&out, &["g2"]), "g2");
    }
}

#[test]
fn a_backend_that_refuses_connections_sends_the_call_to_another() {
    let g2 = GrpcBackend::start("g2");
    let lb = lb_for(&[("gone", refused_addr()), ("g2", g2.addr)], "");
    for _ in 0..2 {
        let out = grpc_client(&["call", &lb.plain().to_string()]);
        assert_eq!(assert_calls(&out, &["g2"]), "g2");
    }
    wait_until("8 calls recorded", || g2.calls().len() >= 8);
    assert_eq!(g2.calls().len(), 8);
    // Every backend gone: an answer of lb's own, not a hang.
    let lb = lb_for(&[("gone", refused_addr())], "");
    let mut s = connect(lb.plain());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 503);
}

#[test]
fn a_grpc_backend_over_tls_is_reached_with_alpn_h2() {
    let s = site();
    let g = GrpcBackend(PyServer::start(
        SCRIPT,
        &["serve", "gtls", "--tls", s.a.cert_path(), s.a.key_path()],
    ));
    let mut text = format!(
        "[health]\ninterval = \"1h\"\n[http2]\nh2c = true\n[tls]\nlisten = \"127.0.0.1:0\"\n{}",
        cert_entry(&s.a)
    );
    text.push_str(&format!(
        "[[pool]]\nname = \"default\"\nprotocol = \"h2\"\n[pool.health]\ngrpc = true\n\
         [[pool.backend]]\nname = \"gtls\"\naddress = \"{}\"\ntls = true\n\
         tls_server_name = \"a.test\"\ntls_ca = \"{}\"\n",
        g.addr,
        s.pki.ca_path()
    ));
    let lb = Lb::start(&text);
    let out = grpc_client(&["call", &lb.plain().to_string()]);
    assert_eq!(assert_calls(&out, &["gtls"]), "gtls");
    assert!(
        !lb.log().iter().any(|l| l.contains("is down")),
        "the TLS probe passes: {:#?}",
        lb.log()
    );
}
