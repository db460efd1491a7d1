//! HTTP message handling for the proxy: the HTTP/1.1 wire format ([`h1`]: heads and body
//! framing), the PROXY protocol header, the answers the proxy makes itself, and the field-value
//! helpers they share.

pub mod answer;
pub mod h1;
pub mod proxy_protocol;

pub use h1::{framing, request, response};

pub use answer::Answer;
pub use framing::{BodyKind, BodyScanner, FramingError, Piece};
pub use request::{HeadLimits, Request, RequestError};
pub use response::{Response, ResponseError};

use std::net::IpAddr;

pub(crate) fn push_all(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Appends `n` in decimal. Heads are rewritten for every request, and `write!`'s formatting
/// machinery cost more there than the rest of the rewrite.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends an address as `Display` writes it, the common IPv4 case without `write!`.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            push_decimal(out, a);
            for octet in [b, c, d] {
                out.push(b'.');
                push_decimal(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Header names that describe one connection and never cross the proxy (RFC 9110 §7.6.1).
/// `upgrade` is re-added by the proxy itself when it forwards an upgrade.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Splits a comma-separated header value into its trimmed, non-empty elements.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Parses a Content-Length value: digits only, no sign, no whitespace inside, no overflow.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = trim_ows(value);
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Which tokens a Connection header carries, and which other headers it names as hop-by-hop.
#[derive(Debug, Default)]
pub(crate) struct ConnectionOptions<'a> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Other header names listed, to be removed before forwarding.
    pub named: Vec<&'a [u8]>,
}

impl<'a> ConnectionOptions<'a> {
    pub fn add(&mut self, value: &'a [u8]) {
        for token in list_elements(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !is_protected(token) {
                self.named.push(token);
            }
        }
    }

    pub fn names(&self, name: &str) -> bool {
        self.named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Headers a Connection option may not remove: dropping framing or Host on a peer's say-so
/// would let a client make the backend read a different message than the proxy did.
fn is_protected(name: &[u8]) -> bool {
    [
        &b"host"[..],
        b"content-length",
        b"transfer-encoding",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    ]
    .iter()
    .any(|p| p.eq_ignore_ascii_case(name))
}

/// Where a message head ends: the index just past the empty line, if the head is complete.
///
/// `searched` remembers how far earlier calls looked, so a head that arrives a byte at a time is
/// scanned once in total rather than once per byte.
pub fn find_head_end(buf: &[u8], searched: &mut usize) -> Option<usize> {
    let mut i = (*searched).min(buf.len());
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            // The bytes after this LF have not arrived yet: look here again next time.
            Some([]) | Some([b'\r']) => {
                *searched = lf;
                return None;
            }
            _ => i = lf + 1,
        }
    }
    *searched = buf.len();
    None
}

/// How many bytes of empty lines (CRLF or a bare LF) `buf` starts with.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.7",
            "255.255.255.255",
            "192.168.100.1",
            "::1",
            "::ffff:1.2.3.4",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().expect("a valid test address");
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
    }

    #[test]
    fn content_length_is_plain_decimal() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"18446744073709551615"), None); // 20 digits
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Some(9999999999999999999)
        );
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"1,1",
            b"1e3",
            b"\x001",
        ] {
            assert_eq!(parse_content_length(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn head_end_found_across_calls() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let mut searched = 0;
        for len in 0..head.len() {
            let found = find_head_end(&head[..len], &mut searched);
            if len < 27 {
                assert_eq!(found, None, "len {len}");
            } else {
                assert_eq!(found, Some(27), "len {len}");
            }
        }
        let mut searched = 0;
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\n\nx", &mut searched),
            Some(16)
        );
    }

    #[test]
    fn leading_empty_lines_are_counted_whole() {
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"\n\r\n\nGET"), 4);
        // A lone CR may be the start of a CRLF still on its way.
        assert_eq!(leading_empty_lines(b"\r\n\r"), 2);
        assert_eq!(leading_empty_lines(b"GET / HTTP/1.1\r\n\r\n"), 0);
        assert_eq!(leading_empty_lines(b""), 0);
    }

    #[test]
    fn connection_options_keep_framing_headers() {
        let mut opts = ConnectionOptions::default();
        opts.add(b"close, X-Secret , content-length, Host,Upgrade");
        assert!(opts.close && opts.upgrade && !opts.keep_alive);
        assert!(opts.names("x-secret"));
        assert!(!opts.names("content-length"));
        assert!(!opts.names("host"));
    }
}
