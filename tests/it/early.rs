//! Heads refused before they are complete: a request line without a version (HTTP/0.9), a bad
//! method, version or field line, a limit already passed. The client hears the answer as soon
//! as its bytes show it, not when `timeouts.client_header` (30 s here) gives up waiting for
//! the rest, and no backend hears anything.
//!
//! What stays valid is not refused early: heads a byte at a time, empty lines before a request,
//! pipelined requests, a PROXY header, and the HTTP/2 preface with h2c.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

/// Well under the header timeout: an answer that took longer waited for bytes that never came.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A proxy whose header timeout is far longer than `ANSWER_WITHIN`, with small limits so the
/// limit rows stay small.
fn start_proxy(recorder: &Recorder, adjust: impl FnOnce(&mut lb::config::Config)) -> Proxy {
    Proxy::start_with(vec![recorder.config("recorder")], |c| {
        c.timeouts.client_header = Duration::from_secs(30);
        c.limits.max_header_bytes = 4096;
        c.limits.max_headers = 20;
        c.limits.max_target_bytes = 512;
        adjust(c);
    })
}

/// Reads until the proxy closes, which must happen within `ANSWER_WITHIN` of `since`; returns
/// the one response that came before the close (`already` is what was read of it before).
fn answer_then_close(s: &mut TcpStream, since: Instant, what: &str) -> Response {
    answer_then_close_after(s, Vec::new(), since, what)
}

fn answer_then_close_after(
    s: &mut TcpStream,
    mut all: Vec<u8>,
    since: Instant,
    what: &str,
) -> Response {
    let mut chunk = [0u8; 4096];
    loop {
        let left = ANSWER_WITHIN.saturating_sub(since.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: not answered and closed within {ANSWER_WITHIN:?}; got {:?}",
            String::from_utf8_lossy(&all)
        );
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            // A reset after the answer: the proxy closed with our unread bytes in its buffer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted) => {}
            Err(e) => panic!(
                "{what}: {e} after {:?}; got {:?}",
                since.elapsed(),
                String::from_utf8_lossy(&all)
            ),
        }
    }
    let Some((mut resp, head_len)) = parse_head(&all) else {
        panic!(
            "{what}: no complete head in {:?}",
            String::from_utf8_lossy(&all)
        );
    };
    resp.body = all[head_len..].to_vec();
    resp
}

/// Asserts that `resp` is the proxy's own refusal with `status`, whole, and saying it closes.
fn assert_refusal(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    assert!(resp.header("x-lb-error").is_some(), "{what}: {resp:?}");
    assert_eq!(resp.header("connection"), Some("close"), "{what}: {resp:?}");
    let body = resp.text();
    assert_eq!(
        resp.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{what}: one response, nothing after it: {resp:?}"
    );
    assert!(body.starts_with(&format!("{status} ")), "{what}: {body:?}");
}

/// Sends `bytes` on a fresh connection and expects `status` and the close at once.
fn expect_refused_at_once(addr: SocketAddr, bytes: &[u8], status: u16, what: &str) {
    let mut s = connect(addr);
    s.write_all(bytes).expect("write");
    let resp = answer_then_close(&mut s, Instant::now(), what);
    assert_refusal(&resp, status, what);
}

/// After a sentinel request, the recorder's connections: the sentinel's must be the only one,
/// so nothing refused reached a backend.
fn assert_only_the_sentinel_reached_the_backend(proxy: &Proxy, recorder: &Recorder) {
    let resp = get(proxy.addr, "/sentinel");
    assert_eq!(resp.status, 200, "{resp:?}");
    let conns = recorder.connections();
    assert_eq!(conns.len(), 1, "the backend got {conns:?}");
    let bytes = String::from_utf8_lossy(&conns[0].bytes).into_owned();
    assert!(bytes.starts_with("GET /sentinel HTTP/1.1\r\n"), "{bytes:?}");
    assert_eq!(bytes.matches("HTTP/1.").count(), 1, "{bytes:?}");
}

/// (bytes sent, none of them ending the head; the status; why)
#[rustfmt::skip]
fn rows() -> Vec<(Vec<u8>, u16, &'static str)> {
    let head = |rest: &[u8]| [b"GET / HTTP/1.1\r\nHost: a\r\n".as_slice(), rest].concat();
    vec![
        (b"GET /\r\n".to_vec(), 400, "HTTP/0.9: a request line without a version (9112 §3)"),
        (b"GET /\n".to_vec(), 400, "the same with a bare LF"),
        (b"GET /index.html\r".to_vec(), 400, "the CR alone already ends the line without a version"),
        (b"GET / \r\n".to_vec(), 400, "an empty version"),
        (b"G@T / HTTP/1.1\r\n".to_vec(), 400, "method = token; @ is not a tchar"),
        (b"GE\x00T".to_vec(), 400, "NUL in the method, before any line end"),
        (b"GET /a\x01".to_vec(), 400, "a control byte in the target"),
        (b"GET / HTTP/1.2\r\n".to_vec(), 400,
            "only 1.0 and 1.1 are taken, as for a complete head (nginx and HAProxy read 1.2 as 1.1)"),
        (b"GET / HTTP/3\r\n".to_vec(), 400, "HTTP-version is DIGIT \".\" DIGIT (HAProxy: 400; nginx: 505)"),
        (b"GET / HTTP/2.0\r\n".to_vec(), 505, "another major version: 505 (9110 §15.6.6), as nginx"),
        (b"PRI * HTTP/2.0\r\n".to_vec(), 505, "the HTTP/2 preface's first line, h2c being off"),
        (b"CONNECT a:443 HTTP/1.1\r\n".to_vec(), 405, "CONNECT is not served, whatever follows"),
        (b"GET x HTTP/1.1\r\n".to_vec(), 400, "neither origin-form nor absolute-form"),
        (format!("GET /{} ", "a".repeat(600)).into_bytes(), 414, "a target over max_target_bytes"),
        (head(b"X: a\x00b"), 400, "NUL in a field value (9110 §5.5), before its line ends"),
        (head(b"X: a\rb"), 400, "a bare CR in a field value"),
        (head(b"Foo Bar: x\r\n"), 400, "a space in a field name"),
        (head(b"X : x\r\n"), 400, "whitespace before the colon (9112 §5.1)"),
        (head(b"X: a\r\n b"), 400, "obs-fold (9112 §5.2)"),
        (head(b"X: y\r\n".repeat(20).as_slice()), 431, "more fields than max_headers"),
        (head(format!("X: {}", "a".repeat(5000)).as_bytes()), 431, "a head over max_header_bytes"),
    ]
}

#[test]
fn heads_that_cannot_become_valid_are_answered_at_once() {
    let recorder = Recorder::start();
    let proxy = start_proxy(&recorder, |_| {});
    for (bytes, status, why) in rows() {
        let what = format!("{:?} ({why})", String::from_utf8_lossy(&bytes));
        expect_refused_at_once(proxy.addr, &bytes, status, &what);
    }
    assert_only_the_sentinel_reached_the_backend(&proxy, &recorder);
}

#[test]
fn heads_written_a_byte_at_a_time() {
    let recorder = Recorder::start();
    let proxy = start_proxy(&recorder, |_| {});
    let byte_by_byte = |bytes: &[u8]| {
        let mut s = connect(proxy.addr);
        s.set_nodelay(true).expect("nodelay");
        for b in bytes {
            s.write_all(std::slice::from_ref(b)).expect("write");
        }
        s
    };
    // Refused when the byte that decides comes.
    let mut s = byte_by_byte(b"GET /\r\n");
    let resp = answer_then_close(&mut s, Instant::now(), "HTTP/0.9 a byte at a time");
    assert_refusal(&resp, 400, "HTTP/0.9 a byte at a time");
    // Empty lines first, then a valid head with every kind of byte a field may hold.
    let mut s = byte_by_byte(
        b"\r\n\nGET /a?b=c HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\nX-Text: caf\xc3\xa9\r\n\r\n",
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-recorder-connection"), Some("0"), "{resp:?}");
    let forwarded = recorder.all_bytes();
    assert!(
        forwarded.starts_with(b"GET /a?b=c HTTP/1.1\r\n"),
        "{forwarded:?}"
    );
}

#[test]
fn an_invalid_line_after_pipelined_requests_is_answered_after_them() {
    let recorder = Recorder::start();
    let proxy = start_proxy(&recorder, |_| {});
    let mut s = connect(proxy.addr);
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /\r\n",
    )
    .expect("write");
    let mut pending = Vec::new();
    for _ in 0..2 {
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    // The third line is refused as soon as the first two are answered.
    let what = "HTTP/0.9 after two requests";
    let resp = answer_then_close_after(&mut s, pending, Instant::now(), what);
    assert_refusal(&resp, 400, what);
    let forwarded = String::from_utf8_lossy(&recorder.all_bytes()).into_owned();
    assert_eq!(
        forwarded.matches("HTTP/1.1\r\n").count(),
        2,
        "{forwarded:?}"
    );
    assert!(
        forwarded.starts_with("GET /one HTTP/1.1\r\n"),
        "{forwarded:?}"
    );
    assert!(forwarded.contains("GET /two HTTP/1.1\r\n"), "{forwarded:?}");
}

#[test]
fn a_client_that_half_closed_still_hears_the_answer() {
    let recorder = Recorder::start();
    let proxy = start_proxy(&recorder, |_| {});
    let mut s = connect(proxy.addr);
    s.write_all(b"GET /\r\n").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let resp = answer_then_close(&mut s, Instant::now(), "HTTP/0.9 then FIN");
    assert_refusal(&resp, 400, "HTTP/0.9 then FIN");
    assert_only_the_sentinel_reached_the_backend(&proxy, &recorder);
}

#[test]
fn after_a_proxy_header_and_in_a_bad_one() {
    let recorder = Recorder::start();
    let trusted: ipnet::IpNet = "127.0.0.1/32".parse().expect("net");
    let proxy = start_proxy(&recorder, |c| c.proxy_protocol_from = vec![trusted]);
    let rows: [(&[u8], &str); 4] = [
        (
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 80\r\nGET /\r\n",
            "bad-request",
        ),
        (
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 80\n",
            "bad-proxy-header",
        ),
        (b"PROXY UDP4 ", "bad-proxy-header"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x11", "bad-proxy-header"),
    ];
    for (bytes, cause) in rows {
        let what = format!("{:?}", String::from_utf8_lossy(bytes));
        let mut s = connect(proxy.addr);
        s.write_all(bytes).expect("write");
        let resp = answer_then_close(&mut s, Instant::now(), &what);
        assert_refusal(&resp, 400, &what);
        assert_eq!(resp.header("x-lb-error"), Some(cause), "{what}");
    }
    // Trusted, the sentinel needs a header of its own.
    let mut s = connect(proxy.addr);
    s.write_all(b"PROXY UNKNOWN\r\nGET /sentinel HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut s, false).status, 200);
    let conns = recorder.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert!(conns[0].bytes.starts_with(b"GET /sentinel "), "{conns:?}");
}

#[test]
fn the_h2c_preface_a_byte_at_a_time_is_not_refused() {
    let recorder = Recorder::start();
    let proxy = start_proxy(&recorder, |c| c.http2.h2c = true);
    let mut s = connect(proxy.addr);
    s.set_nodelay(true).expect("nodelay");
    // The preface, then an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for b in &hello {
        s.write_all(std::slice::from_ref(b)).expect("write");
    }
    // lb answers as an HTTP/2 server: its first frame is its SETTINGS.
    s.set_read_timeout(Some(ANSWER_WITHIN)).expect("timeout");
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).expect("a frame header from lb");
    assert_eq!(frame[3], 4, "not a SETTINGS frame: {frame:?}");
    drop(s);
    assert_only_the_sentinel_reached_the_backend(&proxy, &recorder);
}
