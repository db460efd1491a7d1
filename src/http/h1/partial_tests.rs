//! Heads still arriving: what is refused before the head is complete, and that the full parse
//! agrees once it is.
use super::*;
use crate::http::request::parse;
use std::net::{IpAddr, Ipv4Addr};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 8192,
    max_headers: 100,
    max_target_bytes: 1024,
};
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

/// The status a verdict becomes (0: wait for more).
fn status<T>(verdict: &Result<T, RequestError>) -> u16 {
    match verdict {
        Ok(_) => 0,
        Err(RequestError::Malformed(_)) => 400,
        Err(RequestError::MethodNotAllowed) => 405,
        Err(RequestError::TargetTooLong) => 414,
        Err(RequestError::HeadTooLarge) => 431,
        Err(RequestError::NotImplemented(_)) => 501,
        Err(RequestError::VersionNotSupported) => 505,
    }
}

/// The verdict when `buf` arrives a byte at a time into one `PartialHead`.
fn bytewise(buf: &[u8]) -> Result<(), RequestError> {
    let mut head = PartialHead::default();
    for len in 1..=buf.len() {
        head.check(&buf[..len], &LIMITS)?;
    }
    Ok(())
}

const HEAD: &str = "GET / HTTP/1.1\r\nHost: a\r\n";

/// (what has arrived, the status it gets now, bytes that complete the head for the full parse)
fn cases() -> Vec<(Vec<u8>, u16, &'static str)> {
    let field = |line: &[u8]| [HEAD.as_bytes(), line].concat();
    let rest = " HTTP/1.1\r\nHost: a\r\n\r\n";
    vec![
        // HTTP/0.9 and other request lines without a version.
        (b"GET /\r\n".to_vec(), 400, "\r\n"),
        (b"GET /\n".to_vec(), 400, "\n"),
        (b"GET /\r".to_vec(), 400, "\n\r\n"),
        (b"GET / \r\n".to_vec(), 400, "\r\n"),
        (b"GET / \n".to_vec(), 400, "\n"),
        (b"GET\r\n".to_vec(), 400, "\r\n"),
        // Method and target.
        (b"G@T".to_vec(), 400, " / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b"GE\x00".to_vec(), 400, "T / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b" ".to_vec(), 400, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b"GET  ".to_vec(), 400, "/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b"GET /a\x7f".to_vec(), 400, rest),
        (b"GET /a\tb".to_vec(), 400, rest),
        (b"GET /\xff HTTP/1.1\r\n".to_vec(), 400, "Host: a\r\n\r\n"),
        (b"GET x HTTP/1.1\r\n".to_vec(), 400, "Host: a\r\n\r\n"),
        (b"GET * HTTP/1.1\n".to_vec(), 400, "Host: a\n\n"),
        (
            b"CONNECT a:443 HTTP/1.1\r\n".to_vec(),
            405,
            "Host: a:443\r\n\r\n",
        ),
        // Versions.
        (b"GET / HTTP/1.2".to_vec(), 400, "\r\nHost: a\r\n\r\n"),
        (b"GET / HTTP/1.1 ".to_vec(), 400, "\r\nHost: a\r\n\r\n"),
        (b"GET / HTTP/1.1x".to_vec(), 400, "\r\nHost: a\r\n\r\n"),
        (b"GET / HTTP/0".to_vec(), 400, ".9\r\nHost: a\r\n\r\n"),
        (b"GET / http".to_vec(), 400, "/1.1\r\nHost: a\r\n\r\n"),
        (b"GET / HTTP/3\r".to_vec(), 400, "\nHost: a\r\n\r\n"),
        (b"GET / HTTP/10".to_vec(), 400, ".0\r\nHost: a\r\n\r\n"),
        (b"GET / HTTP/2.0 ".to_vec(), 400, "\r\nHost: a\r\n\r\n"),
        (b"GET /a b".to_vec(), 400, " HTTP/2.0\r\nHost: a\r\n\r\n"),
        (b"GET / HTTP/2.0\r".to_vec(), 505, "\nHost: a\r\n\r\n"),
        (b"GET / HTTP/3.0\n".to_vec(), 505, "Host: a\n\n"),
        (b"GET / HTTP/2.0\rX".to_vec(), 505, "\r\n\r\n"),
        // The HTTP/2 preface, where HTTP/2 is not taken with prior knowledge.
        (b"PRI * HTTP/2.0\r".to_vec(), 505, "\n\r\nSM\r\n\r\n"),
        (b"GET / HTTP/1.1\rX".to_vec(), 400, "\r\n\r\n"),
        // Field lines.
        (field(b"X: a\x00"), 400, "\r\n\r\n"),
        (field(b"X: a\rb"), 400, "\r\n\r\n"),
        (field(b"X: a\x7f"), 400, "\r\n\r\n"),
        (field(b"X: a\x1b"), 400, "\r\n\r\n"),
        (field(b"Foo "), 400, "Bar: x\r\n\r\n"),
        (field(b"Foo\x01"), 400, ": x\r\n\r\n"),
        (field(b"X\r"), 400, "\n\r\n"),
        (field(b":"), 400, "x\r\n\r\n"),
        (field(b"X: a\r\n "), 400, "b\r\n\r\n"),
        (field(b"\t"), 400, "X: b\r\n\r\n"),
        (field(b"\rX"), 400, "\r\n\r\n"),
        (
            [b"GET / HTTP/1.1\r\n".as_slice(), b" "].concat(),
            400,
            "Host: a\r\n\r\n",
        ),
        // Limits.
        (format!("GET /{}", "a".repeat(1024)).into_bytes(), 414, rest),
        (
            format!("{HEAD}{}", "X: y\r\n".repeat(100)).into_bytes(),
            431,
            "\r\n",
        ),
        (
            format!("{HEAD}X: {}", "a".repeat(8200)).into_bytes(),
            431,
            "\r\n\r\n",
        ),
        // Not known yet, and accepted once complete.
        (b"GET / HTTP/1.1\r".to_vec(), 0, "\nHost: a\r\n\r\n"),
        (field(b"X: \x80\xff\tv\t"), 0, "\r\n\r\n"),
        (field(b"X:"), 0, "\r\n\r\n"),
        (field(b"X: a\r\n"), 0, "\r\n"),
        (field(b"\r"), 0, "\n"),
        (b"\r\n\r\nGET / HTTP/1.1\r\n".to_vec(), 0, "Host: a\r\n\r\n"),
        (b"\r".to_vec(), 0, "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b"\n\r".to_vec(), 0, "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (b"OPTIONS * HTTP/1.1\r\n".to_vec(), 0, "Host: a\r\n\r\n"),
        ("GET /é HTTP/1.0\n".as_bytes().to_vec(), 0, "\n"),
        (b"GET http://a/ HTTP/1.1\r\n".to_vec(), 0, "Host: a\r\n\r\n"),
        (
            format!("GET /{} HTTP/1.1\r\n", "a".repeat(1023)).into_bytes(),
            0,
            "Host: a\r\n\r\n",
        ),
        (
            format!("{HEAD}{}", "X: y\r\n".repeat(99)).into_bytes(),
            0,
            "\r\n",
        ),
    ]
}

#[test]
fn refused_as_soon_as_the_bytes_show_it() {
    for (arrived, expected, _) in cases() {
        let shown = String::from_utf8_lossy(&arrived).into_owned();
        assert_eq!(
            status(&check_partial(&arrived, &LIMITS)),
            expected,
            "{shown:?}"
        );
        assert_eq!(status(&bytewise(&arrived)), expected, "{shown:?} bytewise");
    }
}

#[test]
fn the_full_parse_agrees_once_the_head_is_complete() {
    for (arrived, expected, completion) in cases() {
        let whole = [arrived.as_slice(), completion.as_bytes()].concat();
        let shown = String::from_utf8_lossy(&whole).into_owned();
        let buf = &whole[crate::http::leading_empty_lines(&whole)..];
        let parsed = parse(buf, &LIMITS, CLIENT, false, &mut Vec::new());
        assert!(!matches!(parsed, Ok(None)), "{shown:?} is not complete");
        assert_eq!(status(&parsed), expected, "{shown:?}");
    }
}

#[test]
fn another_major_version_is_judged_when_its_line_ends() {
    // `HTTP/2.0` then the line end is 505; then anything else, a malformed version (400).
    assert_eq!(status(&bytewise(b"GET / HTTP/2.0")), 0);
    assert_eq!(status(&bytewise(b"GET / HTTP/2.0\n")), 505);
    assert_eq!(status(&bytewise(b"GET / HTTP/2.0;")), 400);
}

#[test]
fn each_byte_is_looked_at_once() {
    let mut head = PartialHead::default();
    let buf = format!("{HEAD}X: {}", "a".repeat(4000));
    for len in 1..=buf.len() {
        head.check(&buf.as_bytes()[..len], &LIMITS)
            .expect("valid so far");
        assert_eq!(head.pos, len);
    }
}
