//! Answers the proxy makes itself (400, 408, 414, 431, 501, 502, 503, 504), what happens to the
//! connection afterwards, backend failover, request smuggling attempts, replays on pooled
//! connections, half-closing clients, and backends failing after their response began.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// Asserts that `resp` is an answer of the proxy's own: the status, `X-LB-Error: cause`, and
/// the short `NNN Reason\n` body.
fn assert_lb_answer(resp: &Response, status: u16, cause: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert_eq!(resp.header("x-lb-error"), Some(cause), "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("text/plain"), "{resp:?}");
    let body = resp.text();
    assert!(
        body.starts_with(&format!("{status} ")) && body.ends_with('\n') && body.len() < 64,
        "body {body:?}"
    );
    assert_eq!(resp.header("x-backend"), None, "{resp:?}");
}

/// Sends `request` and expects a proxy answer followed by the end of the connection.
fn expect_answer_and_close(
    addr: std::net::SocketAddr,
    request: &[u8],
    status: u16,
    cause: &str,
) -> Response {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    let resp = read_response(&mut s, false);
    assert_lb_answer(&resp, status, cause);
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    expect_closed_silently(&mut s);
    resp
}

/// A request through the proxy that the recorder answers: afterwards every connection the
/// proxy opened before it has been accepted (the accept queue is FIFO and the proxy connects
/// in order), so the recorder's connection count is final for everything sent earlier.
fn sentinel(addr: std::net::SocketAddr) {
    let resp = get(addr, "/sentinel");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "ok");
}

const GET_KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

// ---- backends that cannot be reached ---------------------------------------------------------

#[test]
fn no_backend_configured_is_503() {
    let proxy = Proxy::start_with(Vec::new(), |_| {});
    let resp = get(proxy.addr, "/");
    assert_lb_answer(&resp, 503, "no-backend");
    assert_eq!(resp.header("retry-after"), Some("1"));
}

#[test]
fn every_backend_refusing_is_a_fast_503() {
    let proxy = Proxy::start_with(
        vec![
            backend_at("dead-1", refused_addr()),
            backend_at("dead-2", refused_addr()),
        ],
        |c| c.timeouts.connect = Duration::from_secs(10),
    );
    for _ in 0..3 {
        let started = Instant::now();
        let resp = get(proxy.addr, "/");
        let took = started.elapsed();
        assert_lb_answer(&resp, 503, "all-backends-unreachable");
        // A refused connect is known at once; nothing may wait for the connect timeout.
        assert!(took < Duration::from_secs(2), "503 took {took:?}");
    }
}

#[test]
fn refused_backend_is_skipped() {
    let live = DemoBackend::start("live");
    let proxy = Proxy::start_with(
        vec![backend_at("dead", refused_addr()), live.config()],
        |c| c.timeouts.connect = Duration::from_secs(10),
    );
    // New connections each time, so each request picks a backend afresh.
    for i in 0..10 {
        let resp = get(proxy.addr, "/");
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.backend(), "live");
    }
    // And on one keep-alive connection.
    let mut s = connect(proxy.addr);
    for i in 0..10 {
        s.write_all(GET_KEEP_ALIVE).expect("write");
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 200, "keep-alive request {i}: {resp:?}");
        assert_eq!(resp.backend(), "live");
    }
}

#[test]
fn connect_timeout_moves_on_to_the_next_backend() {
    let hole = Blackhole::start();
    let live = DemoBackend::start("live");
    let connect = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![backend_at("hole", hole.addr), live.config()], |c| {
        c.timeouts.connect = connect
    });
    // Round robin starts at the black hole: the first request waits out the connect timeout
    // and is then served by the live backend.
    let started = Instant::now();
    let resp = get(proxy.addr, "/");
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.backend(), "live");
    assert!(
        took >= connect,
        "served in {took:?}, before the connect timeout"
    );
    for _ in 0..4 {
        let resp = get(proxy.addr, "/");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.backend(), "live");
    }
}

#[test]
fn connect_timeout_on_the_only_backend_is_503() {
    let hole = Blackhole::start();
    let connect = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![backend_at("hole", hole.addr)], |c| {
        c.timeouts.connect = connect
    });
    let started = Instant::now();
    let resp = get(proxy.addr, "/");
    let took = started.elapsed();
    assert_lb_answer(&resp, 503, "all-backends-unreachable");
    assert!(
        took >= connect,
        "answered in {took:?}, before the connect timeout"
    );
}

// ---- backends that fail after accepting ------------------------------------------------------

#[test]
fn backend_closing_before_responding_is_502() {
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        drop(s);
    });
    let proxy = Proxy::start_with(vec![backend.config("closer")], |_| {});
    let resp = get(proxy.addr, "/");
    assert_lb_answer(&resp, 502, "backend-closed");
}

#[test]
fn backend_resetting_before_responding_is_502() {
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        set_linger_zero(&s);
        drop(s);
    });
    let proxy = Proxy::start_with(vec![backend.config("resetter")], |_| {});
    let resp = get(proxy.addr, "/");
    assert_lb_answer(&resp, 502, "backend-closed");
}

#[test]
fn backend_closing_mid_head_is_502() {
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Len");
    });
    let proxy = Proxy::start_with(vec![backend.config("half")], |_| {});
    let resp = get(proxy.addr, "/");
    assert_lb_answer(&resp, 502, "backend-closed");
}

#[test]
fn backend_sending_garbage_is_502() {
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n");
        // Stay open: the proxy must judge the bytes, not the close.
        read_to_close(&mut s);
    });
    let proxy = Proxy::start_with(vec![backend.config("garbage")], |_| {});
    let resp = get(proxy.addr, "/");
    assert_lb_answer(&resp, 502, "bad-response");
}

#[test]
fn backend_sending_an_endless_head_is_502() {
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nX-Long: ");
        // A header line that never ends: far more than any head buffer.
        let junk = vec![b'a'; 64 * 1024];
        for _ in 0..64 {
            if s.write_all(&junk).is_err() {
                return;
            }
        }
        read_to_close(&mut s);
    });
    let proxy = Proxy::start_with(vec![backend.config("endless")], |_| {});
    let resp = get(proxy.addr, "/");
    assert_lb_answer(&resp, 502, "bad-response");
}

#[test]
fn silent_backend_is_504() {
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        // Never answer; wait for the proxy to give up and close.
        read_to_close(&mut s);
    });
    let limit = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![backend.config("silent")], |c| {
        c.timeouts.backend_response = limit
    });
    let started = Instant::now();
    let resp = get(proxy.addr, "/");
    let took = started.elapsed();
    assert_lb_answer(&resp, 504, "backend-timeout");
    assert!(took >= limit, "504 after {took:?}");
    assert!(took < Duration::from_secs(5), "504 after {took:?}");
}

#[test]
fn error_answer_keeps_a_keep_alive_connection_usable() {
    // Round robin starts at the closer: with retries off, the first request gets a 502 and the
    // next one the recorder.
    let closer = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
    });
    let recorder = Recorder::start();
    let proxy = Proxy::start_with(
        vec![closer.config("closer"), recorder.config("recorder")],
        |c| c.retries = 0,
    );
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    s.write_all(GET_KEEP_ALIVE).expect("write");
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_lb_answer(&resp, 502, "backend-closed");
    assert_eq!(resp.header("connection"), None, "{resp:?}");
    s.write_all(GET_KEEP_ALIVE).expect("write");
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "ok");
    assert!(pending.is_empty());
}

#[test]
fn error_answer_to_head_has_no_body() {
    let proxy = Proxy::start_with(Vec::new(), |_| {});
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write");
    let resp = read_response_buffered(&mut s, &mut pending, true);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("x-lb-error"), Some("no-backend"));
    // The head announces the body a GET would get, and none follows.
    assert_eq!(resp.header("content-length"), Some("24"));
    // The next response on the connection must start right where the head ended.
    s.write_all(GET_KEEP_ALIVE).expect("write");
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_lb_answer(&resp, 503, "no-backend");
    assert_eq!(resp.text(), "503 Service Unavailable\n");
    assert!(pending.is_empty(), "{pending:?}");
}

// ---- requests the proxy refuses --------------------------------------------------------------

#[test]
fn malformed_requests_are_400_and_close() {
    let recorder = Recorder::start();
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |_| {});
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad\x01Name: x\r\n\r\n",
        b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET nowhere HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for case in cases {
        let resp = expect_answer_and_close(proxy.addr, case, 400, "bad-request");
        assert_eq!(resp.text(), "400 Bad Request\n");
    }
    // Another major version in an HTTP/1 request line gets its own status (RFC 9110 §15.6.6).
    expect_answer_and_close(
        proxy.addr,
        b"GET / HTTP/9.1\r\nHost: a\r\n\r\n",
        505,
        "version-not-supported",
    );
    sentinel(proxy.addr);
    assert_eq!(
        recorder.backend.connection_count(),
        1,
        "only the sentinel may reach the backend: {:?}",
        recorder.connections()
    );
}

#[test]
fn head_over_max_header_bytes_is_431() {
    let recorder = Recorder::start();
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |c| {
        c.limits.max_header_bytes = 2048;
        c.limits.max_headers = 10;
    });
    let big = "a".repeat(3000);
    // Complete, but too large.
    let complete = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    expect_answer_and_close(proxy.addr, complete.as_bytes(), 431, "head-too-large");
    // Still arriving when it passes the limit: refused without waiting for its end.
    let endless = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}");
    expect_answer_and_close(proxy.addr, endless.as_bytes(), 431, "head-too-large");
    // Small, but more header fields than max_headers.
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: y\r\n".repeat(20));
    expect_answer_and_close(proxy.addr, many.as_bytes(), 431, "head-too-large");
    // Just under the limit still goes through.
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1900)
    );
    assert_eq!(roundtrip(proxy.addr, fits.as_bytes()).status, 200);
    assert_eq!(recorder.backend.connection_count(), 1);
}

#[test]
fn target_over_max_target_bytes_is_414() {
    let recorder = Recorder::start();
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |c| {
        c.limits.max_target_bytes = 100
    });
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200));
    expect_answer_and_close(proxy.addr, long.as_bytes(), 414, "target-too-long");
    // A request line still arriving, already far past the limit.
    let endless = format!("GET /{}", "a".repeat(1000));
    expect_answer_and_close(proxy.addr, endless.as_bytes(), 414, "target-too-long");
    let fits = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "a".repeat(99)
    );
    assert_eq!(roundtrip(proxy.addr, fits.as_bytes()).status, 200);
    assert_eq!(recorder.backend.connection_count(), 1);
}

// ---- client timeouts -------------------------------------------------------------------------

#[test]
fn slow_header_is_408_then_close() {
    let recorder = Recorder::start();
    let limit = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |c| {
        c.timeouts.client_header = limit
    });
    let started = Instant::now();
    let resp = expect_answer_and_close(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        408,
        "client-header-timeout",
    );
    let took = started.elapsed();
    assert_eq!(resp.text(), "408 Request Timeout\n");
    assert!(took >= limit, "408 after {took:?}");
    sentinel(proxy.addr);
    assert_eq!(recorder.backend.connection_count(), 1);
}

#[test]
fn trickled_header_does_not_extend_the_header_deadline() {
    let limit = Duration::from_millis(500);
    let proxy = Proxy::start_with(Vec::new(), |c| c.timeouts.client_header = limit);
    let mut s = connect(proxy.addr);
    let started = Instant::now();
    let mut writer = s.try_clone().expect("clone");
    // A slowloris: one byte of an endless header every 50 ms, until the proxy hangs up.
    let trickle = std::thread::spawn(move || {
        let _ = writer.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
        while writer.write_all(b"a").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            if started.elapsed() > PATIENCE {
                break;
            }
        }
    });
    let resp = read_response(&mut s, false);
    let took = started.elapsed();
    assert_lb_answer(&resp, 408, "client-header-timeout");
    assert!(took >= limit, "408 after {took:?}");
    // The deadline runs from the first byte; trickling must not push it back.
    assert!(took < limit * 6, "408 only after {took:?}");
    assert!(is_closed(&mut s));
    drop(s);
    trickle.join().expect("trickle thread");
}

#[test]
fn silent_connection_is_closed_without_an_answer() {
    let limit = Duration::from_millis(300);
    let proxy = Proxy::start_with(Vec::new(), |c| c.timeouts.client_header = limit);
    let started = Instant::now();
    let mut s = connect(proxy.addr);
    expect_closed_silently(&mut s);
    assert!(started.elapsed() >= limit);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_client_idle() {
    let recorder = Recorder::start();
    // Long enough for the second request's round trip on a loaded machine.
    let idle = Duration::from_secs(1);
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |c| {
        c.timeouts.client_idle = idle
    });
    let mut s = connect(proxy.addr);
    s.write_all(GET_KEEP_ALIVE).expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    let answered = Instant::now();
    // Kept open at first...
    s.write_all(GET_KEEP_ALIVE).expect("write");
    assert_eq!(read_response(&mut s, false).status, 200);
    let answered_again = Instant::now();
    assert!(answered_again.duration_since(answered) < idle);
    // ...then closed, silently, once idle for client_idle.
    expect_closed_silently(&mut s);
    // The balancer's idle clock starts when it wrote the answer, a little before this client
    // read it: the close may come that much short of `idle` as seen from here.
    let took = answered_again.elapsed();
    assert!(
        took + Duration::from_millis(20) >= idle,
        "closed after {took:?}"
    );
}

#[test]
fn stalled_request_body_is_408() {
    let recorder = Recorder::start();
    let idle = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |c| {
        c.timeouts.client_idle = idle
    });
    let started = Instant::now();
    let resp = expect_answer_and_close(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        408,
        "client-body-timeout",
    );
    assert_eq!(resp.status, 408);
    assert!(started.elapsed() >= idle);
    // The backend saw the start of the request, and then its connection was closed.
    recorder.wait_all_closed();
    let got = recorder.all_bytes();
    assert!(got.starts_with(b"POST /upload HTTP/1.1\r\n"), "{got:?}");
    assert!(got.ends_with(b"\r\n\r\n0123456789"), "{got:?}");
}

// ---- request smuggling -----------------------------------------------------------------------

/// Sends an ambiguously framed request (with a second request hidden in its body) and checks
/// the proxy refuses it with a 400 and closes, and that no byte of it reached the backend.
fn assert_refused_unforwarded(request: &[u8], cause: &str) {
    let recorder = Recorder::start();
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |_| {});
    expect_answer_and_close(proxy.addr, request, 400, cause);
    sentinel(proxy.addr);
    let conns = recorder.connections();
    assert_eq!(
        recorder.backend.connection_count(),
        1,
        "the refused request reached the backend: {conns:?}"
    );
    let got = String::from_utf8_lossy(&conns[0].bytes).into_owned();
    assert!(got.starts_with("GET /sentinel HTTP/1.1\r\n"), "{got:?}");
    assert!(!got.contains("smuggled"), "{got:?}");
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    for (cl, te) in [
        ("Content-Length: 4", "Transfer-Encoding: chunked"),
        ("Content-Length: 0", "Transfer-Encoding: chunked"),
        ("Content-Length: 4", "transfer-encoding: CHUNKED"),
    ] {
        for order in [(cl, te), (te, cl)] {
            let request = format!(
                "POST / HTTP/1.1\r\nHost: a\r\n{}\r\n{}\r\n\r\n0\r\n\r\n{SMUGGLED}",
                order.0, order.1
            );
            assert_refused_unforwarded(request.as_bytes(), "bad-request");
        }
    }
}

#[test]
fn two_different_content_lengths_are_refused() {
    for lengths in [
        "Content-Length: 5\r\nContent-Length: 41",
        "Content-Length: 41\r\nContent-Length: 5",
        "Content-Length: 5, 41",
        "Content-Length: 5\r\ncontent-length: 05\r\nContent-Length: 41",
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\n{lengths}\r\n\r\nhello{SMUGGLED}");
        assert_refused_unforwarded(request.as_bytes(), "bad-request");
    }
}

#[test]
fn transfer_encoding_on_http10_is_refused() {
    let request = format!(
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    assert_refused_unforwarded(request.as_bytes(), "bad-request");
}

#[test]
fn chunked_twice_is_refused() {
    for codings in [
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "Transfer-Encoding:",
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\n{codings}\r\n\r\n0\r\n\r\n{SMUGGLED}");
        assert_refused_unforwarded(request.as_bytes(), "bad-request");
    }
}

#[test]
fn unknown_transfer_coding_is_501_and_unforwarded() {
    let recorder = Recorder::start();
    let proxy = Proxy::start_with(vec![recorder.config("recorder")], |_| {});
    for codings in ["gzip", "gzip, chunked", "xchunked"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {codings}\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        expect_answer_and_close(
            proxy.addr,
            request.as_bytes(),
            501,
            "unsupported-transfer-coding",
        );
    }
    sentinel(proxy.addr);
    assert_eq!(recorder.backend.connection_count(), 1);
}

#[test]
fn bad_chunk_size_is_refused_and_nothing_is_smuggled() {
    let head = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    for bad in [
        "zz\r\n",
        "-1\r\n",
        "0x5\r\n",
        "+5\r\n",
        "5 5\r\n",
        "11111111111111111\r\n",
        "5\nhello\r\n",
        "3\r\nabcdef\r\n",
        "0\r\n folded: trailer\r\n\r\n",
    ] {
        let recorder = Recorder::start();
        let proxy = Proxy::start_with(vec![recorder.config("recorder")], |_| {});
        let request = format!("{head}5\r\nhello\r\n{bad}0\r\n\r\n{SMUGGLED}");
        let mut s = connect(proxy.addr);
        s.write_all(request.as_bytes()).expect("write");
        // A 400, or (if the response had begun) a closed connection; never another answer.
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all).into_owned();
        if !text.is_empty() {
            assert!(
                text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{bad:?}: {text:?}"
            );
            assert!(
                text.contains("\r\nX-LB-Error: bad-chunked-body\r\n"),
                "{text:?}"
            );
            assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text:?}");
        }
        // The head (and the good chunk) may have been forwarded; nothing after the bad size.
        // The sentinel makes sure any connection made for the bad request has been accepted.
        sentinel(proxy.addr);
        recorder.wait_closed_before_last();
        let mut conns = recorder.connections();
        let last = conns.pop().expect("the sentinel's connection");
        let last = String::from_utf8_lossy(&last.bytes).into_owned();
        assert!(
            last.starts_with("GET /sentinel HTTP/1.1\r\n"),
            "{bad:?}: {last:?}"
        );
        assert!(conns.len() <= 1, "{bad:?}: {conns:?}");
        let got: Vec<u8> = conns.into_iter().flat_map(|c| c.bytes).collect();
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(
            got.is_empty() || got.starts_with("POST /upload HTTP/1.1\r\n"),
            "{bad:?}: {got:?}"
        );
        assert!(!got.contains("smuggled"), "{bad:?}: {got:?}");
        assert!(
            got.matches(" HTTP/1.1\r\n").count() <= 1,
            "{bad:?}: {got:?}"
        );
        if let Some(body_at) = got.find("\r\n\r\n") {
            // At most the bytes before the bad one, as the client sent them.
            let body = &got[body_at + 4..];
            let sent = format!("5\r\nhello\r\n{bad}");
            assert!(
                sent.starts_with(body) && body.len() < sent.len(),
                "{bad:?}: body {body:?}"
            );
        }
    }
}

#[test]
fn pipelined_request_after_a_complete_chunked_body_is_a_separate_request() {
    // Not smuggling: a correctly framed body followed by a second request. The proxy must see
    // the second request too, and answer it in order.
    let backend = DemoBackend::start("b");
    let proxy = Proxy::start(&[&backend]);
    let mut s = connect(proxy.addr);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /status/201 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut pending = Vec::new();
    let first = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(first.status, 200);
    // /echo reflects the head as received and the decoded body.
    assert!(
        first.text().ends_with("\r\n\r\nhello"),
        "{:?}",
        first.text()
    );
    let second = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(second.status, 201);
    assert!(is_closed(&mut s));
}

// ---- replays on pooled connections -----------------------------------------------------------

/// A backend whose connections answer their first request with a keep-alive `200`, then read
/// the next request whole (head and Content-Length body), record it, and close without an
/// answer: a backend that processed a request and died, or closed an idle connection just as a
/// request arrived. Returns the backend and the requests it read, as text, in arrival order.
fn answers_once_then_dies() -> (ScriptedBackend, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let backend = ScriptedBackend::start(move |mut s, _| {
        let read_request = |s: &mut std::net::TcpStream| -> Option<String> {
            let head = read_head(s);
            if head.is_empty() {
                return None;
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            s.read_exact(&mut body).ok()?;
            let request = text + &String::from_utf8_lossy(&body);
            log.lock().expect("lock").push(request.clone());
            Some(request)
        };
        if read_request(&mut s).is_none() {
            return;
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            .is_err()
        {
            return;
        }
        // The next request on this connection is read and never answered.
        read_request(&mut s);
    });
    (backend, seen)
}

#[test]
fn idempotent_request_on_a_dead_pooled_connection_is_replayed() {
    let (backend, seen) = answers_once_then_dies();
    let proxy = Proxy::start_with(vec![backend.config("dies")], |_| {});
    let mut s = connect(proxy.addr);
    s.write_all(GET_KEEP_ALIVE).expect("write");
    assert_eq!(read_response(&mut s, false).text(), "first");
    // Goes out on the pooled connection, which dies: sent again on a fresh one.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "first");
    assert_eq!(backend.connection_count(), 2);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[1].starts_with("GET /again ") && seen[2].starts_with("GET /again "));
}

#[test]
fn non_idempotent_request_is_never_sent_twice() {
    let (backend, seen) = answers_once_then_dies();
    let proxy = Proxy::start_with(vec![backend.config("dies")], |_| {});
    let mut s = connect(proxy.addr);
    s.write_all(GET_KEEP_ALIVE).expect("write");
    assert_eq!(read_response(&mut s, false).text(), "first");
    // The backend read the whole POST before it died: it may have acted on it. Sending it
    // again could, say, place an order twice (RFC 9112 §9.3.1: a proxy MUST NOT retry it).
    s.write_all(b"POST /order HTTP/1.1\r\nHost: test\r\nContent-Length: 7\r\n\r\nitem=42")
        .expect("write");
    let resp = read_response(&mut s, false);
    assert_lb_answer(&resp, 502, "backend-closed");
    let seen = seen.lock().expect("lock");
    let posts = seen
        .iter()
        .filter(|r| r.starts_with("POST /order "))
        .count();
    assert_eq!(posts, 1, "{seen:?}");
}

#[test]
fn backend_timeout_on_a_pooled_connection_is_504_not_a_replay() {
    // Every connection answers its first request at once and never answers a second.
    let backend = ScriptedBackend::start(|mut s, _| {
        read_head(&mut s);
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            .is_err()
        {
            return;
        }
        read_head(&mut s);
        read_to_close(&mut s);
    });
    let limit = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![backend.config("slow")], |c| {
        c.timeouts.backend_response = limit
    });
    let mut s = connect(proxy.addr);
    s.write_all(GET_KEEP_ALIVE).expect("write");
    assert_eq!(read_response(&mut s, false).text(), "first");
    let started = Instant::now();
    s.write_all(GET_KEEP_ALIVE).expect("write");
    let resp = read_response(&mut s, false);
    let took = started.elapsed();
    // A backend that is merely slow has the request; sending it again elsewhere would make it
    // do the work twice and make the client wait twice the timeout.
    assert_lb_answer(&resp, 504, "backend-timeout");
    assert_eq!(backend.connection_count(), 1, "the request was sent again");
    assert!(took >= limit, "504 after {took:?}");
}

// ---- half-closing clients --------------------------------------------------------------------

#[test]
fn half_closed_client_still_gets_its_response() {
    let backend = DemoBackend::start("b");
    let proxy = Proxy::start(&[&backend]);
    let mut s = connect(proxy.addr);
    s.write_all(b"GET /delay/100 HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "delayed 100 ms");
    assert!(is_closed(&mut s));
}

#[test]
fn half_closed_client_gets_every_pipelined_response() {
    let backend = DemoBackend::start("b");
    let proxy = Proxy::start(&[&backend]);
    let mut s = connect(proxy.addr);
    // Like `printf '...' | nc -N host port`: all requests, then end of input.
    s.write_all(
        b"GET /status/201 HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /status/202 HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /status/203 HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut pending = Vec::new();
    for status in [201, 202, 203] {
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(resp.status, status, "{resp:?}");
        // The last response says the connection ends with it.
        let last = status == 203;
        assert_eq!(resp.header("connection") == Some("close"), last, "{resp:?}");
    }
    assert!(pending.is_empty());
    assert!(is_closed(&mut s));

    // A head cut short by the half-close is never answered; the complete one before it is.
    let mut s = connect(proxy.addr);
    s.write_all(
        b"GET /status/201 HTTP/1.1
Host: test

GET /status/202 HTTP/1.1
Ho",
    )
    .expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut pending = Vec::new();
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert!(pending.is_empty());
    assert!(is_closed(&mut s));
}

#[test]
fn error_answer_to_an_http10_keep_alive_client_says_keep_alive() {
    let proxy = Proxy::start_with(Vec::new(), |_| {});
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .expect("write");
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_lb_answer(&resp, 503, "no-backend");
        // A 1.0 client keeps the connection only when told so, as it is for backend answers.
        assert_eq!(resp.header("connection"), Some("keep-alive"), "{resp:?}");
    }
    // Without the token a 1.0 connection ends after the answer.
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(is_closed(&mut s));
}

// ---- backends failing after their response began -----------------------------------------------

/// Reads a response head, then the body until the proxy closes; returns both.
fn read_head_and_rest(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let all = read_to_close(s);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (
        String::from_utf8_lossy(&all[..end]).into_owned(),
        all[end..].to_vec(),
    )
}

#[test]
fn backend_closing_mid_body_still_delivers_what_it_sent() {
    for chunked in [false, true] {
        let backend = ScriptedBackend::start(move |mut s, _| {
            read_head(&mut s);
            // Promises 100 bytes, sends 40 (all in one write with the head), and closes.
            let response: &[u8] = if chunked {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  28\r\n0123456789012345678901234567890123456789\r\n64\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\
                  0123456789012345678901234567890123456789"
            };
            let _ = s.write_all(response);
        });
        let proxy = Proxy::start_with(vec![backend.config("short")], |_| {});
        let mut s = connect(proxy.addr);
        s.write_all(GET_KEEP_ALIVE).expect("write");
        let (head, body) = read_head_and_rest(&mut s);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        // The client gets every byte the backend sent, then the close that tells it the body
        // is incomplete; not a close with bytes missing.
        let want: &[u8] = if chunked {
            b"28\r\n0123456789012345678901234567890123456789\r\n64\r\n"
        } else {
            b"0123456789012345678901234567890123456789"
        };
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(want),
            "chunked: {chunked}"
        );
    }
}

// ---- empty lines before a request ------------------------------------------------------------

#[test]
fn empty_lines_before_a_request_are_skipped_without_spinning() {
    let backend = DemoBackend::start("b");
    let proxy = ProxyProcess::start(&["--backend", &format!("b={}", backend.addr)]);
    let pid = proxy.child.id();
    let mut s = connect(proxy.addr);
    // RFC 9112 §2.2: empty lines before a request line are ignored. Until the request comes,
    // there is nothing to do.
    s.write_all(b"\r\n\r\n").expect("write");
    let before = cpu_ticks(pid);
    let window = Duration::from_millis(500);
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - before;
    // 10 ticks = 100 ms of CPU in a 500 ms window: an idle proxy uses none.
    assert!(
        used < 10,
        "the proxy used {used} ticks of CPU waiting for a request"
    );
    s.write_all(GET_KEEP_ALIVE).expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    // Also between keep-alive requests, and in the same packet as the request.
    s.write_all(b"\r\n\nGET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut s, false).status, 200);
}

// ---- Expect: 100-continue ----------------------------------------------------------------------

#[test]
fn expect_continue_goes_through_and_errors_close() {
    let backend = DemoBackend::start("b");
    let proxy = Proxy::start(&[&backend]);
    let mut s = connect(proxy.addr);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .expect("write");
    // The client holds the body back until the backend's 100 comes through the proxy.
    let mut pending = Vec::new();
    let interim = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(interim.status, 100, "{interim:?}");
    s.write_all(b"hello").expect("write body");
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.text().ends_with("\r\n\r\nhello"), "{:?}", resp.text());
    // The connection goes on.
    s.write_all(GET_KEEP_ALIVE).expect("write");
    assert_eq!(
        read_response_buffered(&mut s, &mut pending, false).status,
        200
    );

    // With nothing to forward to, the proxy answers at once; the body it did not ask for
    // will not follow in a way it can frame, so the connection closes.
    let proxy = Proxy::start_with(Vec::new(), |_| {});
    let resp = expect_answer_and_close(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        503,
        "no-backend",
    );
    assert_eq!(resp.header("retry-after"), Some("1"));
}
