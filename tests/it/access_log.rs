//! The access log as an operator reads it: JSON and text lines from the real `lb` binary into
//! a file, request ids from the client to the backend and into the log, every line written by
//! a graceful stop, and a stalled destination costing lines (counted) but never requests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn signal(proxy: &ProxyProcess, sig: i32) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    let rc = unsafe { libc::kill(proxy.child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

fn log_path(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}-access-{name}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn config(backend: &DemoBackend, log: &Path, extra: &str) -> PathBuf {
    temp_file(
        &format!(
            "access-{}.toml",
            log.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ),
        &format!(
            "access_log_path = \"{}\"\n{extra}\n[health]\ninterval = \"1h\"\n\
             [[backend]]\nname = \"{}\"\naddress = \"{}\"\n",
            log.display(),
            backend.name,
            backend.addr
        ),
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the log holds at least `n` lines; returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(
        &format!("{n} access log lines in {}", path.display()),
        || {
            got = lines(path);
            got.len() >= n
        },
    );
    got
}

fn json_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_lines(path, n)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_lines_name_every_field_with_the_timers_and_how_the_exchange_ended() {
    let backend = DemoBackend::start("j1");
    let log = log_path("json");
    let cfg = config(
        &backend,
        &log,
        "access_log_format = \"json\"\nrequest_id = true",
    );
    let proxy = ProxyProcess::start(&["--config", cfg.to_str().expect("path")]);

    // 1: a GET without an id: the backend gets a new one, and the log line has it.
    let mut s = connect(proxy.addr);
    s.write_all(b"GET /echo/one?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    let (head, _) = echo_parts(&r);
    let sent_ids = field_values(&head, "x-request-id");
    assert_eq!(sent_ids.len(), 1, "{head}");
    let id = sent_ids[0].clone();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    // 2: a POST with the client's own id, kept as it is; its body counts as bytes in.
    let body = pattern(3000);
    let mut post = format!(
        "POST /echo/two HTTP/1.1\r\nHost: t\r\nX-Request-Id: client-chose-this\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    let post_len = post.len() + body.len();
    post.extend_from_slice(&body);
    s.write_all(&post).expect("write");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    let (head, _) = echo_parts(&r);
    assert_eq!(
        field_values(&head, "x-request-id"),
        vec!["client-chose-this".to_string()],
        "{head}"
    );

    // 3: a request the balancer refuses before it is understood.
    let bad = roundtrip(proxy.addr, b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(bad.status, 400);

    // 4: a client that gives up halfway through its upload.
    let mut quitter = connect(proxy.addr);
    let partial = b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789";
    quitter.write_all(partial).expect("write");
    quitter
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    read_to_close(&mut quitter);

    let v = json_lines(&log, 4);
    let one = v
        .iter()
        .find(|l| l["target"] == "/echo/one?x=1")
        .expect("line of 1");
    let client = s.local_addr().expect("addr").to_string();
    assert_eq!(one["client"], client.as_str());
    assert_eq!(one["method"], "GET");
    assert_eq!(one["protocol"], "HTTP/1.1");
    assert_eq!(one["status"], 200);
    assert_eq!(one["backend"], "j1");
    assert_eq!(one["pool"], "default");
    assert!(one["route"].is_null());
    assert_eq!(one["request_id"], id.as_str());
    assert_eq!(one["termination"], "ok");
    assert!(one["tls"].is_null());
    assert!(one["bytes_out"].as_u64().unwrap_or(0) > 100, "{one}");
    let time = one["time"].as_str().expect("time");
    assert_eq!(time.len(), 27, "RFC 3339 with microseconds: {time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    for timer in ["head_ms", "connect_ms", "first_byte_ms", "total_ms"] {
        let ms = one[timer]
            .as_f64()
            .unwrap_or_else(|| panic!("{timer} in {one}"));
        assert!((0.0..5000.0).contains(&ms), "{timer} {one}");
    }
    let first_byte = one["first_byte_ms"].as_f64().unwrap_or(0.0);
    assert!(
        one["total_ms"].as_f64().unwrap_or(0.0) >= first_byte,
        "{one}"
    );

    let two = v
        .iter()
        .find(|l| l["target"] == "/echo/two")
        .expect("line of 2");
    assert_eq!(two["method"], "POST");
    assert_eq!(two["request_id"], "client-chose-this");
    assert_eq!(two["bytes_in"], post_len as u64, "{two}");
    assert_eq!(
        two["connect_ms"], 0.0,
        "the pooled connection was reused: {two}"
    );

    let refused = v.iter().find(|l| l["status"] == 400).expect("line of 3");
    assert_eq!(refused["method"], "-");
    assert!(refused["backend"].is_null());
    assert_ne!(refused["termination"], "ok", "{refused}");

    let quit = v
        .iter()
        .find(|l| l["target"] == "/sink")
        .expect("line of 4");
    assert_eq!(quit["status"], 0, "no answer went out: {quit}");
    assert_eq!(quit["termination"], "client-closed", "{quit}");
    assert!(quit["first_byte_ms"].is_null(), "{quit}");
    assert_eq!(
        quit["bytes_in"],
        partial.len() as u64,
        "the head and the 10 body bytes: {quit}"
    );
}

#[test]
fn text_lines_keep_their_shape_and_a_graceful_stop_writes_every_one() {
    let backend = DemoBackend::start("t1");
    let log = log_path("text");
    let cfg = config(&backend, &log, "request_id = true");
    let mut proxy = ProxyProcess::start(&["--config", cfg.to_str().expect("path")]);
    const N: usize = 500;
    let mut s = connect(proxy.addr);
    for i in 0..N {
        s.write_all(format!("GET /?n{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("write");
        assert_eq!(read_response(&mut s, false).status, 200);
    }
    drop(s);
    // At once: the last lines are still in the reactor's buffer, on their way.
    signal(&proxy, libc::SIGTERM);
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
    let got = lines(&log);
    assert_eq!(got.len(), N, "every request has its line");
    for (i, line) in got.iter().enumerate() {
        assert!(
            line.contains(&format!(" \"GET /?n{i} HTTP/1.1\" 200 ")),
            "line {i} in order: {line}"
        );
        assert!(line.contains(" [INFO] access: 127.0.0.1:"), "{line}");
        assert!(
            line.contains(" t1 ") && line.contains(" pool=default"),
            "{line}"
        );
        let id = line.split(" id=").nth(1).unwrap_or("");
        assert_eq!(id.len(), 32, "{line}");
    }
}

#[test]
fn a_stalled_destination_costs_counted_lines_never_requests() {
    let backend = DemoBackend::start("s1");
    let fifo = log_path("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("path")).expect("cstring");
    // SAFETY: mkfifo(3) on a path this test owns; open(2) of it without blocking.
    let reader = unsafe {
        assert_eq!(libc::mkfifo(c.as_ptr(), 0o600), 0, "mkfifo");
        libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK)
    };
    assert!(reader >= 0, "open the fifo");
    // The reader end stays open and unread: once its 64 KiB are full, every write blocks.
    let cfg = config(&backend, &fifo, "");
    let proxy = ProxyProcess::start(&["--config", cfg.to_str().expect("path")]);
    let admin = proxy.admin_addr();
    let started = Instant::now();
    let mut s = connect(proxy.addr);
    let target = format!("/?{}", "x".repeat(200));
    let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut served = 0;
    while served < 20_000 && started.elapsed() < Duration::from_secs(20) {
        s.write_all(request.as_bytes()).expect("write");
        assert_eq!(read_response(&mut s, false).status, 200);
        served += 1;
    }
    assert!(
        served >= 5_000,
        "only {served} requests in 20 s with the log stalled"
    );
    let metrics = get(admin, "/metrics").text();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lb_access_log_dropped_lines_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped-lines counter in {metrics}"));
    assert!(dropped > 0, "{served} requests, none dropped");
    // The stalled writer did not block anything else: one more request, answered at once.
    let quick = Instant::now();
    assert_eq!(get(proxy.addr, "/").status, 200);
    assert!(quick.elapsed() < Duration::from_secs(1));
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(reader) };
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn json_lines_of_a_running_stream_can_be_read_as_they_come() {
    // Lines reach the file within the flush interval, not only when a buffer fills.
    let backend = DemoBackend::start("f1");
    let log = log_path("fresh");
    let cfg = config(&backend, &log, "access_log_format = \"json\"");
    let proxy = ProxyProcess::start(&["--config", cfg.to_str().expect("path")]);
    assert_eq!(get(proxy.addr, "/?fresh").status, 200);
    let sent = Instant::now();
    let v = json_lines(&log, 1);
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(v[0]["target"], "/?fresh");
    assert!(v[0]["request_id"].is_null(), "request_id is off: {}", v[0]);
    let text = std::fs::read_to_string(&log).expect("read the log");
    assert!(text.ends_with('\n'), "whole lines only: {text:?}");
}
