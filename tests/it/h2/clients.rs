//! HTTP/2 with real clients: curl over TLS (ALPN) and with prior knowledge (h2c), nghttp
//! multiplexing a hundred streams over one connection to two routed pools, trailers, and an
//! upload under flow control.

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use crate::tls::{config_text, curl, parse_response, run_with_deadline, site, Lb};

const DEADLINE: Duration = Duration::from_secs(60);

fn h2c_proxy(backends: &[&DemoBackend]) -> Proxy {
    Proxy::start_with(backends.iter().map(|b| b.config()).collect(), |c| {
        c.http2.h2c = true;
    })
}

/// `curl --http2-prior-knowledge` to the plain listener.
fn curl_h2c(addr: std::net::SocketAddr, path: &str, extra: &[&str], stdin: &[u8]) -> Response {
    let out = run_with_deadline(
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-D",
                "-",
                "--http2-prior-knowledge",
            ])
            .args(extra)
            .arg(format!("http://{addr}{path}")),
        stdin,
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_response(&out.stdout)
}

#[test]
fn curl_over_tls_speaks_h2_by_alpn_and_the_access_log_says_so() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let out = curl(&lb, "a.test", "/", &["--http2"]);
    assert!(
        out.verbose.contains("ALPN: server accepted h2"),
        "{}",
        out.verbose
    );
    assert!(out.verbose.contains("< HTTP/2 200"), "{}", out.verbose);
    assert_eq!(out.response.status, 200);
    assert_eq!(out.response.backend(), "b1");
    assert!(out.response.text().contains("served by b1"));
    let line = lb.log_line("\"GET / HTTP/2.0\"");
    assert!(line.contains(" 200 "), "{line}");
    assert!(line.contains(" b1 "), "{line}");
    assert!(line.contains("tls=TLSv1.3/"), "{line}");
}

#[test]
fn h2c_prior_knowledge_is_served_only_when_enabled() {
    let b1 = DemoBackend::start("b1");
    let proxy = h2c_proxy(&[&b1]);
    let resp = curl_h2c(proxy.addr, "/", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.backend(), "b1");
    // HTTP/1.1 on the same listener is unchanged.
    assert_eq!(get(proxy.addr, "/").status, 200);

    // Without `h2c`, the preface is not a request lb knows: refused, never proxied.
    let plain = Proxy::start(&[&b1]);
    let before = b1.stats().1;
    let out = run_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
            .arg(format!("http://{}/", plain.addr)),
        b"",
        DEADLINE,
    );
    assert!(!out.status.success());
    // The one request more is the earlier `/stats` itself.
    assert_eq!(b1.stats().1, before + 1);
}

/// What `nghttp -v` printed: each stream's `:path` as sent and its response headers.
fn nghttp_streams(verbose: &str) -> HashMap<u32, (String, HashMap<String, String>)> {
    let mut streams: HashMap<u32, (String, HashMap<String, String>)> = HashMap::new();
    let mut sending: Option<u32> = None;
    for line in verbose.lines() {
        if let Some(rest) = line.split("send HEADERS frame").nth(1) {
            sending = rest
                .split("stream_id=")
                .nth(1)
                .and_then(|s| s.trim_end_matches('>').parse().ok());
            continue;
        }
        if let (Some(id), Some(path)) = (sending, line.trim().strip_prefix(":path: ")) {
            streams.entry(id).or_default().0 = path.to_string();
            sending = None;
            continue;
        }
        // `[  0.003] recv (stream_id=13) x-backend: b2`
        if let Some(rest) = line.split("recv (stream_id=").nth(1) {
            let Some((id, field)) = rest.split_once(") ") else {
                continue;
            };
            let Ok(id) = id.parse() else { continue };
            if let Some((name, value)) = field.split_once(": ") {
                streams
                    .entry(id)
                    .or_default()
                    .1
                    .insert(name.to_string(), value.to_string());
            }
        }
    }
    streams
}

#[test]
fn a_hundred_concurrent_streams_on_one_connection_each_reach_their_routed_pool() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let s = site();
    let text = config_text("", &[&s.a], &[&b1])
        + &format!(
            "[[pool]]\nname = \"api\"\n[[pool.backend]]\nname = \"b2\"\naddress = \"{}\"\n\
             [[route]]\npath = \"/echo\"\npool = \"api\"\n",
            b2.addr
        );
    let lb = Lb::start(&text);
    let urls: Vec<String> = (0..100)
        .map(|i| {
            let path = if i % 2 == 0 { "echo" } else { "" };
            format!("https://127.0.0.1:{}/{path}?i={i}", lb.tls.port())
        })
        .collect();
    let out = run_with_deadline(
        Command::new("nghttp").args(["-nv"]).args(&urls),
        b"",
        DEADLINE,
    );
    let verbose = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "nghttp failed: {verbose}");
    // One connection: one preface, one SETTINGS from us.
    assert_eq!(verbose.matches("recv SETTINGS frame <length=18").count(), 1);
    let streams = nghttp_streams(&verbose);
    assert_eq!(streams.len(), 100, "{verbose}");
    for (id, (path, fields)) in &streams {
        assert_eq!(
            fields.get(":status").map(String::as_str),
            Some("200"),
            "{id}"
        );
        let want = if path.starts_with("/echo?") {
            "b2"
        } else {
            "b1"
        };
        assert_eq!(
            fields.get("x-backend").map(String::as_str),
            Some(want),
            "stream {id} for {path}"
        );
    }
    // The access log reaches stderr within its flush interval.
    wait_until("100 access log lines", || {
        lb.log()
            .iter()
            .filter(|l| l.contains("HTTP/2.0\" 200"))
            .count()
            == 100
    });
}

#[test]
fn a_backends_trailers_end_the_stream_as_a_headers_frame() {
    let backend = ScriptedBackend::start(|mut s, _| loop {
        let head = read_head(&mut s);
        if head.is_empty() {
            return;
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n\
            Transfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n\
            5\r\nhello\r\n0\r\nGrpc-Status: 0\r\nGrpc-Message: ok\r\n\r\n";
        if s.write_all(answer).is_err() {
            return;
        }
    });
    let proxy = Proxy::start_with(vec![backend.config("g")], |c| c.http2.h2c = true);
    let out = run_with_deadline(
        Command::new("nghttp")
            .args(["-v"])
            .arg(format!("http://{}/svc/Method", proxy.addr)),
        b"",
        DEADLINE,
    );
    let verbose = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{verbose}");
    assert!(
        verbose.contains("recv (stream_id=13) grpc-status: 0"),
        "{verbose}"
    );
    assert!(
        verbose.contains("recv (stream_id=13) grpc-message: ok"),
        "{verbose}"
    );
    // The trailers come in a HEADERS frame with END_STREAM and END_HEADERS (0x05), after
    // DATA without END_STREAM.
    let data_at = verbose
        .find("recv DATA frame <length=5, flags=0x00")
        .expect(&verbose);
    let trailers_at = verbose[data_at..]
        .find("recv HEADERS frame")
        .map(|i| &verbose[data_at + i..])
        .expect("trailers");
    assert!(trailers_at.contains("flags=0x05"), "{verbose}");
    assert!(!verbose.contains("transfer-encoding"), "{verbose}");
}

#[test]
fn an_h2c_upload_of_64_mib_arrives_whole_under_flow_control() {
    let b1 = DemoBackend::start("b1");
    let proxy = h2c_proxy(&[&b1]);
    const LEN: usize = 64 << 20;
    // From stdin curl does not know the length: DATA without content-length, which lb sends
    // on chunked.
    let resp = curl_h2c(proxy.addr, "/sink", &["-T", "-"], &pattern(LEN));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("x-received-bytes"),
        Some(LEN.to_string().as_str())
    );
    assert_eq!(
        resp.header("x-received-sum"),
        Some(pattern_sum(LEN as u64).to_string().as_str())
    );
}

#[test]
fn an_h2c_download_of_64_mib_arrives_whole() {
    let b1 = DemoBackend::start("b1");
    let proxy = h2c_proxy(&[&b1]);
    const LEN: usize = 64 << 20;
    let out = run_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "--http2-prior-knowledge"])
            .arg(format!("http://{}/bytes/{LEN}", proxy.addr)),
        b"",
        DEADLINE,
    );
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), LEN);
    let mut check = PatternCheck::new(1 << 20);
    check.feed(&out.stdout);
}

#[test]
fn a_graceful_stop_sends_goaway_and_finishes_the_stream_in_flight() {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let arrived_tx = Arc::new(Mutex::new(arrived_tx));
    let release_rx = Arc::new(Mutex::new(release_rx));
    let backend = ScriptedBackend::start(move |mut s, _| {
        let head = read_head(&mut s);
        if head.is_empty() {
            return;
        }
        // Health probes are answered at once; the test's request waits for its release.
        if head.starts_with(b"GET /slow ") {
            let _ = arrived_tx.lock().map(|tx| tx.send(()));
            let _ = release_rx
                .lock()
                .map(|rx| rx.recv_timeout(Duration::from_secs(20)));
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let text = format!(
        "access_log = true\n[health]\ninterval = \"1h\"\n[http2]\nh2c = true\n\
         [[backend]]\nname = \"slow\"\naddress = \"{}\"\n",
        backend.addr
    );
    let path = crate::tls::config_file(&text);
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("utf-8 path")]);
    let client = Command::new("nghttp")
        .args(["-v"])
        .arg(format!("http://{}/slow", proxy.addr))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn nghttp");
    arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reaches the backend");
    // SAFETY: kill(2) on a child process this test started and still owns.
    assert_eq!(
        unsafe { libc::kill(proxy.child.id() as i32, libc::SIGTERM) },
        0
    );
    proxy.wait_for_log("draining");
    release.send(()).expect("release the backend");
    let out = client.wait_with_output().expect("nghttp output");
    let verbose = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{verbose}");
    let goaway = verbose
        .split("recv GOAWAY frame")
        .nth(1)
        .unwrap_or_else(|| panic!("no GOAWAY from lb: {verbose}"));
    assert!(goaway.contains("last_stream_id=13"), "{verbose}");
    assert!(goaway.contains("error_code=NO_ERROR"), "{verbose}");
    assert!(
        verbose.contains("recv (stream_id=13) :status: 200"),
        "{verbose}"
    );
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
}
