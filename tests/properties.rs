//! Properties of the HTTP parsers, over generated requests and arbitrary bytes:
//!
//! - a valid request parses the same however its bytes are split as they arrive (the head end
//!   found over growing prefixes, then `request::parse`; the body scanner fed in pieces);
//! - `request::parse`, `response::parse`, `check_partial`, `find_head_end`,
//!   `leading_empty_lines` and `BodyScanner::scan` never panic, whatever the bytes;
//! - a head still arriving is refused the same however its bytes are split, and only when the
//!   full parse refuses the complete head too;
//! - a head the proxy accepts is forwarded as one that re-parses (httparse) to the same method,
//!   target and framing, and carries no hop-by-hop header but the proxy's own.
//!
//! Case counts stay at proptest's default (256 per property, about a second in a debug build);
//! `PROPTEST_CASES=20000 cargo test --test properties` runs longer. The fuzz targets in `fuzz/`
//! (docs/FUZZING.md) explore the same ground for longer still.

use std::net::{IpAddr, Ipv4Addr};

use lb::http::{self, request, response, BodyKind, BodyScanner, HeadLimits, Request};
use proptest::prelude::*;
use proptest::sample::Index;

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 8192,
    max_headers: 100,
    max_target_bytes: 2048,
};
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

// ---- generated requests ---------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Chunk payloads, an extension on the first size line, trailer lines.
    Chunked(Vec<Vec<u8>>, Option<String>, Vec<String>),
}

#[derive(Debug, Clone)]
struct GenRequest {
    method: String,
    target: String,
    http10: bool,
    leading_crlf: bool,
    /// Header lines other than framing, already ordered.
    headers: Vec<(String, String)>,
    body: Body,
}

impl GenRequest {
    /// The framing the proxy must find.
    fn kind(&self) -> BodyKind {
        match &self.body {
            Body::None => BodyKind::None,
            Body::Length(b) => BodyKind::Length(b.len() as u64),
            Body::Chunked(..) => BodyKind::Chunked,
        }
    }

    /// (head bytes, including any leading CRLF; body bytes as sent).
    fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut head = Vec::new();
        if self.leading_crlf {
            head.extend_from_slice(b"\r\n");
        }
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        head.extend_from_slice(format!("{} {} {version}\r\n", self.method, self.target).as_bytes());
        for (name, value) in &self.headers {
            head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let mut body = Vec::new();
        match &self.body {
            Body::None => {}
            Body::Length(b) => {
                head.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
                body.extend_from_slice(b);
            }
            Body::Chunked(chunks, ext, trailers) => {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                for (i, chunk) in chunks.iter().enumerate() {
                    body.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
                    if let (0, Some(ext)) = (i, ext) {
                        body.extend_from_slice(format!(";{ext}").as_bytes());
                    }
                    body.extend_from_slice(b"\r\n");
                    body.extend_from_slice(chunk);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n");
                for t in trailers {
                    body.extend_from_slice(format!("{t}\r\n").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
            }
        }
        head.extend_from_slice(b"\r\n");
        (head, body)
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}"
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("HEAD".to_string()),
        Just("DELETE".to_string()),
        Just("OPTIONS".to_string()),
        "[A-Z]{1,8}".prop_filter("CONNECT is refused", |m| m != "CONNECT"),
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[A-Za-z0-9/._~%!$&'()*+,;=:@?-]{0,40}",
        "http://example\\.com(/[a-z0-9]{0,10})?",
    ]
}

/// Header lines that do not touch framing: ordinary ones, hop-by-hop ones the proxy must drop,
/// and a `Connection` that names one of them.
fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    // Values with HTAB and obs-text (é in UTF-8) inside too.
    let ordinary = (token(), "[!-~]([ -~\t\u{e9}]{0,20}[!-~])?")
        .prop_map(|(n, v)| (format!("X-{n}"), v))
        .boxed();
    let hop = prop_oneof![
        Just(("Keep-Alive".to_string(), "timeout=5".to_string())),
        Just(("TE".to_string(), "trailers".to_string())),
        Just(("Trailer".to_string(), "X-Sum".to_string())),
        Just(("Proxy-Connection".to_string(), "keep-alive".to_string())),
        Just(("Upgrade".to_string(), "websocket".to_string())),
        Just(("Connection".to_string(), "keep-alive, X-Drop".to_string())),
        Just(("Connection".to_string(), "Upgrade".to_string())),
        Just(("Connection".to_string(), "close".to_string())),
        Just(("X-Drop".to_string(), "dropped when named".to_string())),
        Just(("X-Forwarded-For".to_string(), "198.51.100.1".to_string())),
        Just(("Expect".to_string(), "100-continue".to_string())),
    ]
    .boxed();
    (
        prop::collection::vec(prop_oneof![3 => ordinary, 1 => hop], 0..8),
        any::<Index>(),
    )
        .prop_map(|(mut headers, at)| {
            // Host somewhere among them (the absolute-form targets name example.com).
            let at = at.index(headers.len() + 1);
            headers.insert(at, ("Host".to_string(), "example.com".to_string()));
            headers
        })
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        Just(Body::None),
        bytes().prop_map(Body::Length),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..4),
            prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
            prop::collection::vec("X-[A-Za-z]{1,6}: [ -~]{0,10}", 0..3),
        )
            .prop_map(|(chunks, ext, trailers)| Body::Chunked(chunks, ext, trailers)),
    ]
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        method(),
        target(),
        any::<bool>(),
        any::<bool>(),
        headers(),
        body(),
    )
        .prop_map(
            |(method, target, http10, leading_crlf, headers, body)| GenRequest {
                method,
                target,
                // Chunked framing is HTTP/1.1 only.
                http10: http10 && !matches!(body, Body::Chunked(..)),
                leading_crlf,
                headers,
                body,
            },
        )
}

/// Cut points in `0..=len`, sorted, with both ends.
fn cuts(len: usize, at: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = at.iter().map(|i| i.index(len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

// ---- what one parse gives ------------------------------------------------------------------

/// The fields of a parsed request that must not depend on how its bytes arrived.
fn summary(req: &Request) -> String {
    format!("{req:?}")
}

/// Parses the request at the start of `bytes` in one go, as a session does with a full buffer.
fn parse_whole(
    bytes: &[u8],
) -> (
    usize,
    Result<Option<Request>, request::RequestError>,
    Vec<u8>,
) {
    let blank = http::leading_empty_lines(bytes);
    let buf = &bytes[blank..];
    let mut searched = 0;
    let mut out = Vec::new();
    if http::find_head_end(buf, &mut searched).is_none() {
        return (blank, Ok(None), out);
    }
    let parsed = request::parse(buf, &LIMITS, CLIENT, true, &mut out);
    (blank, parsed, out)
}

/// Feeds `bytes` in the pieces `cuts` makes, as a session's buffer grows: leading empty lines
/// dropped, the head end looked for with the remembered search position, `request::parse` once
/// it is found. Returns the blank bytes dropped, the request, its forwarded head, and how many
/// bytes of `bytes` had arrived when it was parsed.
fn parse_incrementally(bytes: &[u8], cuts: &[usize]) -> (usize, Request, Vec<u8>, usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut dropped = 0;
    let mut searched = 0;
    let mut checked = request::PartialHead::default();
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        buf.extend_from_slice(&bytes[w[0]..w[1]]);
        let blank = http::leading_empty_lines(&buf);
        if blank > 0 {
            buf.drain(..blank);
            dropped += blank;
            searched = 0;
            checked = request::PartialHead::default();
        }
        if http::find_head_end(&buf, &mut searched).is_none() {
            checked
                .check(&buf, &LIMITS)
                .expect("a valid head within limits");
            request::check_partial(&buf, &LIMITS).expect("a valid head within limits");
            continue;
        }
        match request::parse(&buf, &LIMITS, CLIENT, true, &mut out) {
            Ok(Some(req)) => return (dropped, req, out, w[1]),
            Ok(None) => continue,
            Err(e) => panic!("valid request refused: {e}"),
        }
    }
    panic!("valid request never parsed");
}

/// Feeds `body` to a scanner of `kind` in the pieces `cuts` makes: (bytes used, done).
fn scan_pieces(kind: BodyKind, body: &[u8], cuts: &[usize]) -> (usize, bool) {
    let mut scanner = BodyScanner::new(kind);
    let mut used = 0;
    if scanner.is_done() {
        return (0, true);
    }
    for w in cuts.windows(2) {
        let s = scanner.scan(&body[w[0]..w[1]]).expect("valid body");
        used += s.used;
        if s.done {
            return (used, true);
        }
    }
    (used, false)
}

/// The origin-form of a request target (RFC 9112 §3.2.1): scheme and authority dropped.
fn origin_form(target: &str) -> String {
    let lower = target.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return target.to_string();
    };
    let start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match &rest[start..] {
        "" => "/".to_string(),
        path if path.starts_with('/') => path.to_string(),
        query => format!("/{query}"),
    }
}

/// Checks a forwarded head: it re-parses whole with httparse to `method`, `target` and
/// `framing`, and carries no hop-by-hop header other than the proxy's own.
fn check_forwarded(out: &[u8], req: &Request, method: &str, target: &str) {
    let text = String::from_utf8_lossy(out);
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut slots);
    let status = parsed.parse(out).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status, httparse::Status::Complete(out.len()), "{text}");
    assert_eq!(parsed.method, Some(method), "{text}");
    // A backend is an origin server: an absolute-form target reaches it in origin-form.
    assert_eq!(parsed.path, Some(origin_form(target).as_str()), "{text}");
    assert_eq!(parsed.version, Some(req.version_minor), "{text}");
    let values = |name: &str| -> Vec<&[u8]> {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    match req.body {
        BodyKind::Chunked => {
            assert!(lengths.is_empty(), "{text}");
            assert_eq!(codings, [b"chunked"], "{text}");
        }
        BodyKind::Length(n) => {
            assert!(codings.is_empty(), "{text}");
            assert_eq!(lengths, [n.to_string().as_bytes()], "{text}");
        }
        BodyKind::None => {
            assert!(codings.is_empty(), "{text}");
            // An explicit `Content-Length: 0` may stay.
            assert!(lengths.is_empty() || lengths == [b"0"], "{text}");
        }
        BodyKind::Close => panic!("a request is never close-delimited"),
    }
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            // The proxy's own: an upgrade it passes on, or keep-alive asked of a 1.0 backend.
            "connection" => assert!(
                (req.upgrade && h.value == b"Upgrade")
                    || (req.version_minor == 0 && !req.upgrade && h.value == b"keep-alive"),
                "{text}"
            ),
            "upgrade" => assert!(req.upgrade, "{text}"),
            other => assert!(
                !HOP_BY_HOP.contains(&other),
                "hop-by-hop header {} forwarded: {text}",
                h.name
            ),
        }
    }
    assert!(values("connection").len() <= 1, "{text}");
    assert!(values("upgrade").len() <= 1, "{text}");
}

proptest! {

    /// A valid request parses to the same request and forwarded head however it is split, its
    /// body ends exactly where it does, and the forwarded head is sound.
    #[test]
    fn split_requests_parse_like_whole_ones(
        req in request(),
        at in prop::collection::vec(any::<Index>(), 0..8),
        body_at in prop::collection::vec(any::<Index>(), 0..8),
        next in prop_oneof![Just(&b""[..]), Just(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..])],
    ) {
        let (head, body) = req.encode();
        let mut bytes = head.clone();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(next);

        let (blank, whole, whole_out) = parse_whole(&bytes);
        let whole = whole.expect("valid request accepted").expect("complete head");
        prop_assert_eq!(blank + whole.head_len, head.len());
        prop_assert_eq!(whole.body, req.kind());

        // Byte by byte, no prefix of the head is refused.
        let mut checked = request::PartialHead::default();
        for len in 1..whole.head_len {
            let verdict = checked.check(&bytes[blank..blank + len], &LIMITS);
            prop_assert!(verdict.is_ok(), "{:?} after {} bytes", verdict, len);
        }

        let (dropped, split, split_out, _) = parse_incrementally(&bytes, &cuts(bytes.len(), &at));
        prop_assert_eq!(dropped, blank);
        prop_assert_eq!(summary(&split), summary(&whole));
        prop_assert_eq!(&split_out, &whole_out);

        let rest = &bytes[head.len()..];
        let whole_scan = BodyScanner::new(whole.body).scan(rest).expect("valid body");
        prop_assert_eq!((whole_scan.used, whole_scan.done), (body.len(), true));
        prop_assert_eq!(scan_pieces(whole.body, rest, &cuts(rest.len(), &body_at)), (body.len(), true));

        check_forwarded(&whole_out, &whole, &req.method, &req.target);
        let names_x_drop = req
            .headers
            .iter()
            .any(|(n, v)| n == "Connection" && v.contains("X-Drop"));
        let forwarded = String::from_utf8_lossy(&whole_out).to_ascii_lowercase();
        prop_assert!(!names_x_drop || !forwarded.contains("\r\nx-drop:"), "{}", forwarded);
    }

    /// No input makes a parser panic, whatever limits are set; whatever `request::parse`
    /// accepts is forwarded soundly.
    #[test]
    fn parsers_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            httpish(),
        ],
        max_header_bytes in 1usize..400,
        max_headers in 0usize..12,
        max_target_bytes in 0usize..100,
    ) {
        for limits in [LIMITS, HeadLimits { max_header_bytes, max_headers, max_target_bytes }] {
            let _ = request::check_partial(&bytes, &limits);
            let blank = http::leading_empty_lines(&bytes);
            prop_assert!(blank <= bytes.len());
            let mut searched = 0;
            if let Some(end) = http::find_head_end(&bytes, &mut searched) {
                prop_assert!(end <= bytes.len());
            }
            prop_assert!(searched <= bytes.len());
            let mut out = Vec::new();
            if let Ok(Some(req)) = request::parse(&bytes, &limits, CLIENT, false, &mut out) {
                prop_assert!(req.head_len <= bytes.len());
                let mut slots = [httparse::EMPTY_HEADER; 128];
                let mut again = httparse::Request::new(&mut slots);
                again.parse(&bytes).expect("accepted head parses");
                check_forwarded(&out, &req, again.method.unwrap(), again.path.unwrap());
            }
        }
        for (is_head, upgrade) in [(false, false), (true, true)] {
            let mut out = Vec::new();
            if let Ok(Some(resp)) = response::parse(&bytes, is_head, upgrade, &mut out) {
                prop_assert!(resp.head_len <= bytes.len());
            }
        }
        for kind in [BodyKind::None, BodyKind::Length(7), BodyKind::Chunked, BodyKind::Close] {
            let mut scanner = BodyScanner::new(kind);
            let mut at = 0;
            for piece in bytes.chunks(13) {
                match scanner.scan(piece) {
                    Ok(s) => {
                        prop_assert!(s.used <= piece.len());
                        at += s.used;
                        if s.done {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            prop_assert!(at <= bytes.len());
        }
    }

    /// A head still arriving gets the same verdict however its bytes came, and is refused only
    /// if the full parse refuses it once complete.
    #[test]
    fn partial_heads_are_refused_soundly(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            httpish(),
        ],
        at in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let buf = &bytes[http::leading_empty_lines(&bytes)..];
        let mut searched = 0;
        let head_end = http::find_head_end(buf, &mut searched);
        // The lengths a session checks: up to the head's end, which it parses instead.
        let arriving = head_end.map_or(buf.len(), |end| end - 1);
        let verdicts: Vec<_> = (0..=arriving)
            .map(|len| request::check_partial(&buf[..len], &LIMITS))
            .collect();
        let mut checked = request::PartialHead::default();
        for &len in cuts(arriving, &at).iter().skip(1) {
            let verdict = checked.check(&buf[..len], &LIMITS);
            prop_assert_eq!(verdict, verdicts[len], "at {}", len);
            if verdict.is_err() {
                break;
            }
        }
        let refused = verdicts.iter().position(Result::is_err);
        if let (Some(len), Some(_)) = (refused, head_end) {
            let full = request::parse(buf, &LIMITS, CLIENT, false, &mut Vec::new());
            prop_assert!(
                full.is_err(),
                "refused at {} ({:?}) but the full parse gives {:?}",
                len,
                verdicts[len],
                full
            );
        }
    }

    /// The chunked scanner's answer does not depend on how its input is split, valid or not.
    #[test]
    fn chunked_scan_ignores_splits(
        bytes in chunkish(),
        at in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let feed = |cuts: &[usize]| -> Result<(usize, bool), lb::http::FramingError> {
            let mut scanner = BodyScanner::new(BodyKind::Chunked);
            let mut used = 0;
            for w in cuts.windows(2) {
                let s = scanner.scan(&bytes[w[0]..w[1]])?;
                used += s.used;
                if s.done {
                    return Ok((used, true));
                }
            }
            Ok((used, false))
        };
        let whole = feed(&[0, bytes.len()]);
        prop_assert_eq!(feed(&cuts(bytes.len(), &at)), whole);
        let bytewise: Vec<usize> = (0..=bytes.len()).collect();
        prop_assert_eq!(feed(&bytewise), whole);
    }
}

/// Bytes made of HTTP fragments, so that many of them are (nearly) valid heads.
fn httpish() -> impl Strategy<Value = Vec<u8>> {
    const FRAGMENTS: &[&str] = &[
        "GET",
        "POST",
        "HEAD",
        "CONNECT",
        "OPTIONS",
        " ",
        "  ",
        "/",
        "/a?b",
        "*",
        "http://a/",
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "HTTP/1.2",
        "HTTP/3",
        "PRI * HTTP/2.0",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 101 Switching",
        "HTTP/1.1 204 No",
        "\r\n",
        "\n",
        "\r",
        "\r\n\r\n",
        "Host: a",
        "Host:",
        "Content-Length: ",
        "Content-Length",
        "Transfer-Encoding: ",
        "chunked",
        "gzip",
        ", ",
        ",",
        "Connection: ",
        "close",
        "keep-alive",
        "Upgrade",
        "Upgrade: websocket",
        "TE: trailers",
        "Keep-Alive: 1",
        "X-A: b",
        ":",
        "0",
        "5",
        "18446744073709551616",
        "-1",
        "\t",
        "\0",
        "\x7f",
        "\u{e9}",
        "Expect: 100-continue",
    ];
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)
        .prop_map(|f| f.concat().into_bytes())
}

/// Bytes made of chunked-body fragments.
fn chunkish() -> impl Strategy<Value = Vec<u8>> {
    const FRAGMENTS: &[&str] = &[
        "0",
        "1",
        "5",
        "a",
        "F",
        "ffffffffffffffff",
        "10000000000000000",
        "\r\n",
        "\r",
        "\n",
        ";",
        "; a=b",
        " ",
        "\t",
        "x",
        "hello",
        "X-T: 1",
        "\0",
        "\r\n\r\n",
    ];
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..30)
        .prop_map(|f| f.concat().into_bytes())
}
