//! Hostile request heads and chunked bodies, table-driven: what the proxy refuses (and with
//! which status), what it accepts and how it normalises it, decided per RFC 9112 / RFC 9110.
//!
//! Every refused row also carries a smuggled `GET /admin` behind it. After each row a sentinel
//! request on a fresh connection reaches the backend: the proxy handles connections in order and
//! the backend accepts them in order, so once the sentinel is in, anything the refused row made
//! the proxy send would be in too. With `pool_max_idle = 0` every backend connection is closed
//! after its exchange, so what each one received is final when the row is checked.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::*;

/// The request hidden behind every refused row.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";

// ---- a backend that frames and records every request -------------------------------------------

/// One request as the backend received it: the head byte for byte, and the raw body.
#[derive(Debug, Clone)]
struct Seen {
    head: Vec<u8>,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Conn {
    /// Every byte received on the connection.
    bytes: Vec<u8>,
    /// The complete requests among them (answered `200 ok`).
    requests: Vec<Seen>,
    closed: bool,
}

/// A backend with its own framing (httparse for heads, its own chunked decoder, lenient like
/// many servers: trailers are skipped unread), independent of the proxy's code.
struct Backend {
    backend: ScriptedBackend,
    conns: Arc<Mutex<Vec<Conn>>>,
}

/// Where the first request in `buf` ends: `(head, body)` lengths; `None` until it is complete,
/// `Err` when it cannot be framed.
fn frame(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut length = 0;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(())?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    let body = &buf[head..];
    if !chunked {
        return Ok((body.len() >= length).then_some((head, length)));
    }
    let line_end = |from: usize| body[from..].windows(2).position(|w| w == b"\r\n");
    let mut i = 0;
    loop {
        let Some(eol) = line_end(i) else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&body[i..i + eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .ok_or(())?;
        i += eol + 2;
        if size == 0 {
            loop {
                let Some(eol) = line_end(i) else {
                    return Ok(None);
                };
                i += eol + 2;
                if eol == 0 {
                    return Ok(Some((head, i)));
                }
            }
        }
        if body.len() < i + size + 2 {
            return Ok(None);
        }
        if &body[i + size..i + size + 2] != b"\r\n" {
            return Err(());
        }
        i += size + 2;
    }
}

impl Backend {
    fn start() -> Backend {
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let shared = Arc::clone(&conns);
        let backend = ScriptedBackend::start(move |mut stream, n| {
            {
                let mut all = shared.lock().expect("lock");
                if all.len() <= n {
                    all.resize(n + 1, Conn::default());
                }
            }
            let mut pending = Vec::new();
            let mut framing_ok = true;
            let mut chunk = [0u8; 16384];
            loop {
                let got = stream.read(&mut chunk).unwrap_or(0);
                let mut all = shared.lock().expect("lock");
                if got == 0 {
                    all[n].closed = true;
                    return;
                }
                all[n].bytes.extend_from_slice(&chunk[..got]);
                pending.extend_from_slice(&chunk[..got]);
                while framing_ok {
                    match frame(&pending) {
                        Ok(Some((head, body))) => {
                            all[n].requests.push(Seen {
                                head: pending[..head].to_vec(),
                                body: pending[head..head + body].to_vec(),
                            });
                            pending.drain(..head + body);
                            let _ = stream.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: strict\r\n\r\nok",
                            );
                        }
                        Ok(None) => break,
                        Err(()) => framing_ok = false,
                    }
                }
            }
        });
        Backend { backend, conns }
    }

    /// Sends a sentinel on a fresh client connection, then waits until every backend connection
    /// is closed (so what each received is final) and returns them all, in accept order.
    fn settle(&self, proxy: SocketAddr, row: usize) -> Vec<Conn> {
        let resp = get(proxy, &format!("/sentinel/{row}"));
        assert_eq!(resp.status, 200, "row {row}: sentinel: {resp:?}");
        assert_eq!(resp.text(), "ok", "row {row}: sentinel");
        wait_until("the backend connections to close", || {
            let accepted = self.backend.connection_count();
            let conns = self.conns.lock().expect("lock");
            conns.len() == accepted && conns.iter().all(|c| c.closed)
        });
        let conns = self.conns.lock().expect("lock").clone();
        let last = conns
            .last()
            .and_then(|c| c.requests.last())
            .expect("sentinel");
        assert!(
            last.head
                .starts_with(format!("GET /sentinel/{row} ").as_bytes()),
            "row {row}: last request {:?}",
            String::from_utf8_lossy(&last.head)
        );
        conns
    }
}

fn all_requests(conns: &[Conn]) -> Vec<Seen> {
    conns.iter().flat_map(|c| c.requests.clone()).collect()
}

/// Bytes that reached the backend without forming a complete request.
fn stray_bytes(conns: &[Conn]) -> Vec<u8> {
    conns
        .iter()
        .flat_map(|c| {
            let framed: usize = c.requests.iter().map(|r| r.head.len() + r.body.len()).sum();
            c.bytes[framed..].to_vec()
        })
        .collect()
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() > 160 {
        format!("{:?}… ({} bytes)", &text[..160], bytes.len())
    } else {
        format!("{text:?}")
    }
}

fn count_fields(head: &str, name: &str) -> usize {
    head.split("\r\n")
        .skip(1)
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .count()
}

/// A proxy in front of `backend`, with small limits so the limit rows stay small, and no reuse
/// of backend connections.
fn start_proxy(backend: &Backend) -> Proxy {
    Proxy::start_with(vec![backend.backend.config("strict")], |c| {
        c.limits.pool_max_idle = 0;
        c.limits.max_header_bytes = 4096;
        c.limits.max_headers = 20;
        c.limits.max_target_bytes = 512;
    })
}

// ---- request heads ---------------------------------------------------------------------------

enum Expect {
    /// The proxy answers this status itself, closes, and the backend gets nothing.
    Refused(u16),
    /// Forwarded: the backend's head starts with `start`, has each of `once` exactly once as a
    /// whole line, and the body is `body` byte for byte.
    Forwarded {
        start: &'static str,
        once: &'static [&'static str],
        body: &'static [u8],
    },
}
use Expect::*;

struct Case {
    request: Vec<u8>,
    expect: Expect,
    /// Why, per RFC.
    why: &'static str,
}

fn case(request: impl AsRef<[u8]>, expect: Expect, why: &'static str) -> Case {
    Case {
        request: request.as_ref().to_vec(),
        expect,
        why,
    }
}

/// A POST with the given framing header lines (each ending in CRLF) and body.
fn post(fields: &str, body: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}")
}

/// `Transfer-Encoding: <value>` and a small chunked body.
fn te(value: &str) -> Vec<u8> {
    let mut r = b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ".to_vec();
    r.extend_from_slice(value.as_bytes());
    r.extend_from_slice(b"\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    r
}

/// `Content-Length: <value>` and a 5-byte body.
fn cl(value: &str) -> String {
    format!(
        "POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\nConnection: close\r\n\r\nhello"
    )
}

/// A GET with one extra raw header line (no line ending).
fn with_field(line: &[u8]) -> Vec<u8> {
    let mut r = b"GET /field HTTP/1.1\r\nHost: a\r\n".to_vec();
    r.extend_from_slice(line);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

const TE_CHUNKED: Expect = Forwarded {
    start: "POST /te HTTP/1.1\r\n",
    once: &["Transfer-Encoding: chunked"],
    body: b"5\r\nhello\r\n0\r\n\r\n",
};
const CL_5: Expect = Forwarded {
    start: "POST /cl HTTP/1.1\r\n",
    once: &["Content-Length: 5"],
    body: b"hello",
};

/// The table: one row per request, its expected fate and the reason.
#[rustfmt::skip]
fn head_cases() -> Vec<Case> {
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(600));
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: y\r\n".repeat(25));
    vec![
        // ---- Content-Length ----
        case(post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), Refused(400),
            "CL with TE: 9112 §6.1 lets a server reject it, and §6.3 says it ought to be handled \
             as an error; forwarding it is the CL.TE/TE.CL smuggling vector"),
        case(post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"), Refused(400),
            "TE with CL, other order: same"),
        case(post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), Refused(400),
            "differing Content-Lengths: 9112 §6.3 (5) MUST be treated as an unrecoverable error"),
        case(post("Content-Length: 5, 6\r\n", "hello!"), Refused(400),
            "a list of differing lengths: same as several fields (9110 §5.3 combines them)"),
        case(post("Content-Length: 5, 5\r\n", "hello"), Refused(400),
            "identical list: 9110 §8.6 MAY either reject or collapse it; rejected"),
        case(post("Content-Length: +5\r\n", "hello"), Refused(400),
            "sign: Content-Length = 1*DIGIT (9110 §8.6)"),
        case(post("Content-Length: -5\r\n", "hello"), Refused(400), "negative: 1*DIGIT"),
        case(post("Content-Length: 5 5\r\n", "hello"), Refused(400),
            "space inside: not 1*DIGIT; some parsers drop the space and read 55"),
        case(post("Content-Length: 0x5\r\n", "hello"), Refused(400), "hex: not 1*DIGIT"),
        case(post("Content-Length: 99999999999999999999\r\n", "hello"), Refused(400),
            "20 digits overflow 64 bits: 9110 §8.6 says to anticipate large values but an \
             overflowed one is invalid; a wrapping parser would read another length"),
        case(post("Content-Length: 18446744073709551621\r\n", "hello"), Refused(400),
            "2^64 + 5: a wrapping parser reads 5"),
        case(post("Content-Length:\r\n", ""), Refused(400), "empty value: not 1*DIGIT"),
        case("POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\
              Connection: close\r\n\r\nhello", CL_5,
            "identical Content-Length fields: 9110 §8.6 allows accepting them as one; forwarded once"),
        case(cl("005"), CL_5,
            "leading zeros are 1*DIGIT: accepted, forwarded as the plain number"),
        case(cl(" 5\t"), CL_5, "OWS around the value is not part of it (9110 §5.5)"),
        // ---- Transfer-Encoding ----
        case(te("gzip"), Refused(501),
            "a coding we do not implement, chunked not final: 9112 §6.1 SHOULD 501 (and the \
             length is undecidable, so the connection closes)"),
        case(te("chunked, chunked"), Refused(400),
            "chunked twice: 9112 §6.1 MUST NOT apply chunked more than once; length undecidable"),
        case(post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            Refused(400), "chunked twice in two fields: the same list once combined"),
        case(te("chunked, gzip"), Refused(400),
            "chunked not final: 9112 §6.1 MUST respond 400 and close"),
        case(te("gzip, chunked"), Refused(501), "chunked final but gzip unknown: 501"),
        case(te("xchunked"), Refused(501), "not the token chunked: an unknown coding"),
        case(te("chunked x"), Refused(501),
            "junk after chunked is not OWS: the element is `chunked x`, an unknown coding"),
        case(te("chunked;q=1"), Refused(501),
            "a parameter on chunked: no such coding, unknown; never read as chunked"),
        case(te("chunked\x0b"), Refused(400),
            "VT is not OWS and not a field-vchar (9110 §5.5): invalid field value"),
        case(te("chunked\x00"), Refused(400), "NUL in a field value: 9110 §5.5 MUST reject or replace"),
        case(te(","), Refused(400), "only empty elements: no coding at all"),
        case(post("Transfer-Encoding: chunked\r\n", "0\r\n\r\n").replace("HTTP/1.1", "HTTP/1.0"),
            Refused(400),
            "TE in HTTP/1.0: 9112 §6.1 MUST treat the framing as faulty (a 1.0 hop ignores it)"),
        case(te("Chunked"), TE_CHUNKED,
            "coding names are case-insensitive (9112 §7): accepted, forwarded as `chunked`"),
        case(te("CHUNKED"), TE_CHUNKED, "same"),
        case(te(" chunked"), TE_CHUNKED, "leading OWS is not part of the value (9110 §5.5)"),
        case(te("\tchunked"), TE_CHUNKED, "leading HTAB likewise"),
        case(te("chunked "), TE_CHUNKED, "trailing OWS likewise"),
        case(te("chunked\t"), TE_CHUNKED, "trailing HTAB is OWS too"),
        case(te(", chunked"), TE_CHUNKED,
            "an empty list element: 9110 §5.6.1.2 MUST ignore it; forwarded without it"),
        case(te("chunked,,"), TE_CHUNKED, "trailing empty elements likewise"),
        case("POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\
              Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", TE_CHUNKED,
            "a second, empty TE field adds only an empty element: forwarded as one field"),
        // ---- field lines ----
        case(with_field(b"Foo Bar: x"), Refused(400), "space in a field name: not a token"),
        case(with_field(b"Foo\x01: x"), Refused(400), "control byte in a field name: not a token"),
        case(with_field(b":x"), Refused(400), "empty field name: field-name = token, 1+ tchar"),
        case(with_field(b"X-Foo : x"), Refused(400),
            "whitespace before the colon: 9112 §5.1 MUST reject with 400"),
        case(post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"), Refused(400),
            "the same on Transfer-Encoding, with CL: a lenient parser would see TE and CL"),
        case(with_field(b"X: a\r\n b"), Refused(400),
            "obs-fold: 9112 §5.2 MUST reject (400) or unfold; refused"),
        case(post("Transfer-Encoding: gzip,\r\n chunked\r\n", "0\r\n\r\n"), Refused(400),
            "obs-fold hiding the final chunked"),
        case(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Refused(400),
            "whitespace before the first field line: 9112 §2.2 MUST reject or ignore it"),
        case(with_field(b"X: a\x00b"), Refused(400), "NUL in a value: 9110 §5.5 MUST reject or replace"),
        case(with_field(b"X: a\rb"), Refused(400), "bare CR in a value: 9110 §5.5 MUST reject or replace"),
        case(with_field(b"X: a\x7f"), Refused(400), "DEL is not a field-vchar"),
        case(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Refused(400),
            "bare CR as a line end: 9112 §2.2 only allows a bare LF"),
        // ---- bare LF line endings ----
        case(b"GET /lf HTTP/1.1\nHost: a\nX-Lf: 1\nConnection: close\n\n",
            Forwarded { start: "GET /lf HTTP/1.1\r\n", once: &["Host: a", "X-Lf: 1"], body: b"" },
            "9112 §2.2 MAY accept a bare LF as a line end: accepted, forwarded CRLF only"),
        case(b"GET /mixed HTTP/1.1\r\nHost: a\nX-Lf: 1\r\nConnection: close\n\r\n",
            Forwarded { start: "GET /mixed HTTP/1.1\r\n", once: &["Host: a", "X-Lf: 1"], body: b"" },
            "mixed CRLF and LF: same"),
        case(b"POST /cl HTTP/1.1\nHost: a\nContent-Length: 5\nConnection: close\n\nhello", CL_5,
            "a length behind bare LFs frames the same for both sides once rewritten with CRLF"),
        case(b"POST /te HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n",
            TE_CHUNKED, "same for chunked (the chunk lines themselves must be CRLF)"),
        case(b"POST /lf HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            Refused(400), "a TE behind a bare LF is still a TE: with CL, refused"),
        // ---- request line ----
        case(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400), "method = token; @ is not a tchar"),
        case(b"GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400), "NUL in the method"),
        case(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Refused(400),
            "9110 §2.5 SHOULD treat an unknown 1.x as 1.1, but no 1.2 exists and httparse knows \
             only 1.0 and 1.1: refused, the conservative reading"),
        case(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Refused(505),
            "another major version over HTTP/1 syntax: 505 (9110 §15.6.6)"),
        case(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", Refused(505), "same"),
        case(b"GET / HTTP/1\r\nHost: a\r\n\r\n", Refused(400), "HTTP-version = HTTP-name \"/\" DIGIT \".\" DIGIT"),
        case(b"GET / http/1.1\r\nHost: a\r\n\r\n", Refused(400), "HTTP-name is case-sensitive (9112 §2.3)"),
        case(b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", Refused(400), "junk after the version"),
        case(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400),
            "two spaces: 9112 §3 allows lenience but a target starting with a space is ambiguous"),
        case(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400), "a space inside the target"),
        // ---- Host ----
        case(b"GET / HTTP/1.1\r\n\r\n", Refused(400), "HTTP/1.1 without Host: 9112 §3.2 MUST 400"),
        case(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refused(400), "several Hosts: 9112 §3.2 MUST 400"),
        case(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", Refused(400), "even identical ones"),
        case(b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", Refused(400),
            "absolute-form target vs Host: 9112 §3.2.2 says to use the target's; since the \
             target is forwarded as is with Host, a backend could route by either: refused"),
        case(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Refused(400), "invalid Host value: 9112 §3.2 MUST 400"),
        case(b"GET / HTTP/1.1\r\nHost: evil@a\r\n\r\n", Refused(400), "userinfo in Host: not uri-host [:port]"),
        case(b"GET / HTTP/1.1\r\nHost: a/admin\r\n\r\n", Refused(400), "a path in Host"),
        // ---- limits and methods ----
        case(big_head, Refused(431), "head over max_header_bytes: 431 (RFC 6585 §5)"),
        case(long_target, Refused(414), "target over max_target_bytes: 414 (9110 §15.5.15)"),
        case(many, Refused(431), "more fields than max_headers: 431"),
        case(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Refused(405),
            "CONNECT makes a tunnel to anywhere: a reverse proxy does not serve it"),
        // ---- classic smuggling payloads (a GET /admin is appended to each as well) ----
        case(post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"), Refused(400),
            "CL.TE: a CL front end forwards `0\\r\\n\\r\\nG`, a TE backend sees `G` start the next request"),
        case(post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                  &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len())), Refused(400),
            "TE.CL: a TE front end forwards it whole, a CL backend reads 4 bytes and then GET /admin"),
        case(post("Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\nContent-Length: 4\r\n",
                  "0\r\n\r\n"), Refused(400), "TE.TE: an unknown second coding to make one side fall back to CL"),
        case(post("Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"), Refused(501),
            "TE.TE: an unknown coding, with CL; never framed by CL while a TE is there"),
        case(post("Transfer-Encoding:\tchunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"), Refused(400),
            "TE.TE: HTAB as the OWS, with CL"),
        case(post(" Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"), Refused(400),
            "TE.TE: a space before the name (obs-fold of the previous line)"),
        case(post("Content-Length: 32\r\nConnection: close\r\n", SMUGGLED).replace("/upload", "/cl32"),
            Forwarded { start: "POST /cl32 HTTP/1.1\r\n", once: &["Content-Length: 32"],
                        body: SMUGGLED.as_bytes() },
            "not smuggling: a request inside a correctly framed body is that body; the backend \
             gets exactly one request"),
    ]
}

#[test]
fn hostile_request_heads() {
    let backend = Backend::start();
    let proxy = start_proxy(&backend);
    let cases = head_cases();
    let mut requests_so_far = 0;
    let mut conns_so_far = 0;
    for (row, c) in cases.iter().enumerate() {
        let what = format!("row {row} {} ({})", show(&c.request), c.why);
        eprintln!("{what}");
        let mut s = connect(proxy.addr);
        match c.expect {
            Refused(status) => {
                let mut request = c.request.clone();
                request.extend_from_slice(SMUGGLED.as_bytes());
                s.write_all(&request).expect("write");
                let resp = read_response(&mut s, false);
                assert_eq!(resp.status, status, "{what}: {resp:?}");
                assert!(resp.header("x-lb-error").is_some(), "{what}: {resp:?}");
                assert_eq!(resp.header("connection"), Some("close"), "{what}: {resp:?}");
                expect_closed_silently(&mut s);
            }
            Forwarded { .. } => {
                s.write_all(&c.request).expect("write");
                let resp = read_response(&mut s, false);
                assert_eq!(resp.status, 200, "{what}: {resp:?}");
                assert_eq!(resp.text(), "ok", "{what}");
            }
        }
        drop(s);
        let conns = backend.settle(proxy.addr, row);
        let requests = all_requests(&conns);
        let stray = stray_bytes(&conns[conns_so_far..]);
        conns_so_far = conns.len();
        assert!(stray.is_empty(), "{what}: the backend got {}", show(&stray));
        match c.expect {
            Refused(_) => {
                // Only the sentinel is new.
                assert_eq!(
                    requests.len(),
                    requests_so_far + 1,
                    "{what}: the backend got a request"
                );
            }
            Forwarded { start, once, body } => {
                assert_eq!(
                    requests.len(),
                    requests_so_far + 2,
                    "{what}: requests {requests:?}"
                );
                let got = &requests[requests.len() - 2];
                let raw = &got.head;
                // CRLF only: no bare LF, no bare CR.
                for (i, &b) in raw.iter().enumerate() {
                    if b == b'\n' {
                        assert!(
                            i > 0 && raw[i - 1] == b'\r',
                            "{what}: bare LF in {}",
                            show(raw)
                        );
                    }
                    if b == b'\r' {
                        assert_eq!(
                            raw.get(i + 1),
                            Some(&b'\n'),
                            "{what}: bare CR in {}",
                            show(raw)
                        );
                    }
                }
                let head = String::from_utf8_lossy(raw).into_owned();
                assert!(head.starts_with(start), "{what}: {head:?}");
                for line in once {
                    let n = head.split("\r\n").filter(|l| l == line).count();
                    assert_eq!(n, 1, "{what}: {line:?} in {head:?}");
                }
                for name in ["content-length", "transfer-encoding", "host"] {
                    assert!(count_fields(&head, name) <= 1, "{what}: {head:?}");
                }
                assert!(
                    count_fields(&head, "content-length")
                        + count_fields(&head, "transfer-encoding")
                        <= 1,
                    "{what}: {head:?}"
                );
                assert_eq!(got.body, body, "{what}: body {}", show(&got.body));
            }
        }
        requests_so_far = requests.len();
        for r in &requests {
            assert!(
                !r.head.starts_with(b"GET /admin"),
                "{what}: smuggled {}",
                show(&r.head)
            );
        }
    }
}

// ---- chunked bodies --------------------------------------------------------------------------

#[test]
fn hostile_chunked_bodies() {
    let long_ext = format!("5;{}\r\nhello\r\n", "a".repeat(5000));
    let many_ext = format!("5{}\r\nhello\r\n", ";a=b".repeat(1100));
    let long_trailer = format!("0\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024));
    // (what follows a good first chunk, why it is refused)
    let rows: Vec<(String, &str)> = vec![
        (
            "5g\r\nhello\r\n".into(),
            "chunk-size = 1*HEXDIG: a non-hex byte after the digits",
        ),
        ("g\r\n".into(), "non-hex size"),
        (
            "0X5\r\nhello\r\n".into(),
            "0x prefix: `0` then `X`, not HEXDIG",
        ),
        ("-0\r\n\r\n".into(), "a sign is not HEXDIG"),
        (
            "ffffffffffffffffff\r\n".into(),
            "18 hex digits overflow 64 bits",
        ),
        (
            "10000000000000005\r\nhello\r\n".into(),
            "2^64 + 5: a wrapping parser reads 5",
        ),
        (
            "00000000000000005\r\nhello\r\n".into(),
            "17 digits with leading zeros: valid HEXDIGs, refused as any size over 16 digits \
             (no real sender pads; a parser that truncates digits would differ)",
        ),
        (
            "5 \r\nhello\r\n".into(),
            "whitespace after the size is only BWS before `;` (9112 §7.1.1)",
        ),
        ("5\r\nhello0\r\n\r\n".into(), "no CRLF after the chunk data"),
        (
            "5\r\nhello\n0\r\n\r\n".into(),
            "bare LF after the chunk data (§7.1: CRLF)",
        ),
        (
            "5\r\nhello\r0\r\n\r\n".into(),
            "bare CR after the chunk data",
        ),
        (
            "5\nhello\r\n".into(),
            "bare LF after the size: some servers take it, some do not",
        ),
        (
            "5;a=b\nhello\r\n0\r\n\r\n".into(),
            "bare LF inside an extension (a line end for some)",
        ),
        (
            "5;a=\"\r\nhello\r\n0\r\n\r\n".into(),
            "a quoted-string open at the CR: a quote-aware backend reads on past the line end",
        ),
        (
            "5;a=\"x\\\"\r\nhello\r\n0\r\n\r\n".into(),
            "an escaped quote leaves the string open",
        ),
        (
            long_ext,
            "a 5000-byte extension: over the 4 KiB chunk-line limit",
        ),
        (many_ext, "1100 extensions: over the chunk-line limit"),
        (
            "0\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "a request line as a trailer: a backend that ends the body at `0\\r\\n` would run it",
        ),
        ("0\r\n:x\r\n\r\n".into(), "a trailer with an empty name"),
        (
            "0\r\nX : y\r\n\r\n".into(),
            "whitespace before a trailer's colon (9112 §5.1)",
        ),
        (
            "0\r\n folded\r\n\r\n".into(),
            "obs-fold in the trailer section",
        ),
        ("0\r\nX: a\rb\r\n\r\n".into(), "bare CR in a trailer"),
        ("0\r\nX: y\n\r\n".into(), "bare LF ending a trailer"),
        ("0\r\nX: a\x00b\r\n\r\n".into(), "NUL in a trailer"),
        (
            long_trailer,
            "a 17 KiB trailer section: over the 16 KiB limit",
        ),
        (
            "0\r\n\rX".into(),
            "CR without LF ending the trailer section",
        ),
    ];
    let backend = Backend::start();
    let proxy = start_proxy(&backend);
    let head = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut requests_so_far = 0;
    let mut conns_so_far = 0;
    for (row, (bad, why)) in rows.iter().enumerate() {
        let body = format!("5\r\nhello\r\n{bad}0\r\n\r\n");
        let request = format!("{head}{body}{SMUGGLED}");
        let what = format!("row {row} {} ({why})", show(bad.as_bytes()));
        eprintln!("{what}");
        let mut s = connect(proxy.addr);
        s.write_all(request.as_bytes()).expect("write");
        // A 400, or (had the response begun) just the close; never a second answer.
        let answer = read_to_close(&mut s);
        let text = String::from_utf8_lossy(&answer);
        if !text.is_empty() {
            assert!(
                text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{what}: {text:?}"
            );
            assert!(
                text.contains("\r\nX-LB-Error: bad-chunked-body\r\n"),
                "{what}: {text:?}"
            );
            assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{what}: {text:?}");
        }
        drop(s);
        let conns = backend.settle(proxy.addr, row);
        let requests = all_requests(&conns);
        // No complete request came of it, smuggled or not: only the sentinel is new.
        assert_eq!(requests.len(), requests_so_far + 1, "{what}: {requests:?}");
        requests_so_far = requests.len();
        // What did arrive is the start of the upload, cut before the bad bytes.
        let new_conns = &conns[conns_so_far..];
        conns_so_far = conns.len();
        let stray = stray_bytes(new_conns);
        if !stray.is_empty() {
            let stray = String::from_utf8_lossy(&stray).into_owned();
            let shown = show(stray.as_bytes());
            assert!(
                stray.starts_with("POST /upload HTTP/1.1\r\n"),
                "{what}: {shown}"
            );
            let forwarded = &stray[stray.find("\r\n\r\n").expect("a head") + 4..];
            assert!(body.starts_with(forwarded), "{what}: {shown}");
            assert!(forwarded.len() < 10 + bad.len(), "{what}: {shown}");
        }
        for c in new_conns {
            assert!(
                !String::from_utf8_lossy(&c.bytes).contains("/admin"),
                "{what}: {}",
                show(&c.bytes)
            );
        }
    }
}
