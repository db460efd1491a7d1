//! Request heads: parse with httparse, refuse what could be framed two ways, and write the head
//! that goes to the backend (hop-by-hop headers removed, X-Forwarded-* added).

use std::fmt;
use std::mem::MaybeUninit;
use std::net::IpAddr;

pub use super::partial::{check_partial, PartialHead};
use super::routing::{self, Headers, Routed};
use crate::http::{
    list_elements, parse_content_length, push_all, trim_ows, BodyKind, ConnectionOptions,
};
use crate::route::Table;

/// Limits a request head must respect; from `[limits]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_target_bytes: usize,
}

/// httparse needs its header slots up front; the configured limit is capped here so the slots
/// fit on the stack.
pub const MAX_HEADERS_CAP: usize = 512;

/// A request head the proxy accepted.
#[derive(Debug, Clone)]
pub struct Request {
    /// Bytes of the head in the client's buffer, empty line included.
    pub head_len: usize,
    pub method: Method,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version_minor: u8,
    pub body: BodyKind,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The client asked for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
    pub upgrade: bool,
    /// `METHOD target HTTP/1.x`, kept for the access log when it is on.
    pub request_line: Option<String>,
    /// With `request_id = true`: the client's `X-Request-Id`, or the one added for it.
    pub request_id: Option<String>,
    /// Where the routing table sends it.
    pub routed: Routed,
}

/// The methods the proxy treats specially; the rest pass through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Put,
    Delete,
    Trace,
    Post,
    Other,
}

impl Method {
    pub(super) fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "TRACE" => Method::Trace,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }

    /// Idempotent methods (RFC 9110 §9.2.2) may be sent again after a failure.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Put
                | Method::Delete
                | Method::Trace
        )
    }
}

/// Why a request head was refused; each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// 400: the head is not valid HTTP/1.1 or its framing is ambiguous.
    Malformed(&'static str),
    /// 431: the head or the number of header fields is over the limit.
    HeadTooLarge,
    /// 414: the request target is over the limit.
    TargetTooLong,
    /// 501: a transfer coding we do not implement.
    NotImplemented(&'static str),
    /// 405: a method a reverse proxy does not serve (CONNECT).
    MethodNotAllowed,
    /// 505: an HTTP major version other than 1 in an HTTP/1 request line.
    VersionNotSupported,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Malformed(why) => write!(f, "malformed request: {why}"),
            RequestError::HeadTooLarge => f.write_str("request head too large"),
            RequestError::TargetTooLong => f.write_str("request target too long"),
            RequestError::NotImplemented(why) => write!(f, "not implemented: {why}"),
            RequestError::MethodNotAllowed => f.write_str("method not allowed"),
            RequestError::VersionNotSupported => f.write_str("HTTP version not supported"),
        }
    }
}

/// Who sent a request and how, for the `X-Forwarded-*` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub ip: IpAddr,
    /// The request came over TLS.
    pub https: bool,
}

impl From<IpAddr> for Origin {
    fn from(ip: IpAddr) -> Origin {
        Origin { ip, https: false }
    }
}

/// Parses the complete head at the start of `buf` (`head_end` from [`crate::http::find_head_end`]) and
/// writes the head to forward into `out`; every request goes to pool 0.
pub fn parse(
    buf: &[u8],
    limits: &HeadLimits,
    client: impl Into<Origin>,
    keep_request_line: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Request>, RequestError> {
    parse_routed(
        buf,
        limits,
        client,
        keep_request_line,
        false,
        &Table::single_pool(),
        out,
    )
}

/// As [`parse`], routed by `table`: the forwarded path loses a prefix the matching route
/// strips, and [`Request::routed`] says where it goes. With `request_id`, a request without an
/// `X-Request-Id` is forwarded with a new one.
pub fn parse_routed(
    buf: &[u8],
    limits: &HeadLimits,
    client: impl Into<Origin>,
    keep_request_line: bool,
    request_id: bool,
    table: &Table,
    out: &mut Vec<u8>,
) -> Result<Option<Request>, RequestError> {
    let client = client.into();
    // Left uninitialised: httparse writes only the slots it fills, and zeroing 16 KiB of
    // slots for every request cost more than parsing the head.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.clamp(1, MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        // Leading empty lines made the apparent end of the head something else.
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(httparse::Error::Version) if names_another_major_version(buf) => {
            return Err(RequestError::VersionNotSupported)
        }
        Err(e) => return Err(RequestError::Malformed(parse_error_reason(e))),
    };
    if head_len > limits.max_header_bytes {
        return Err(RequestError::HeadTooLarge);
    }
    let (Some(method_token), Some(target), Some(version_minor)) =
        (req.method, req.path, req.version)
    else {
        return Err(RequestError::Malformed("incomplete request line"));
    };
    if target.len() > limits.max_target_bytes {
        return Err(RequestError::TargetTooLong);
    }
    let method = Method::from_token(method_token);
    if method_token == "CONNECT" {
        return Err(RequestError::MethodNotAllowed);
    }
    let target_parts = check_target(method, target)?;
    let absolute_authority = target_parts.authority;

    // First pass: what the headers say about framing, the connection and the host.
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut host: Option<&[u8]> = None;
    let mut connection = ConnectionOptions::default();
    let mut upgrade_value: Option<&[u8]> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)
                .ok_or(RequestError::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(RequestError::Malformed(
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in list_elements(h.value) {
                if chunked {
                    // Anything after chunked, even chunked again, leaves the length undecidable.
                    return Err(RequestError::Malformed(
                        "chunked is not the final transfer coding",
                    ));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    return Err(RequestError::NotImplemented(
                        "transfer coding other than chunked",
                    ));
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(RequestError::Malformed("several Host headers"));
            }
            let value = trim_ows(h.value);
            if !is_authority(value) {
                return Err(RequestError::Malformed("invalid Host"));
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_value = Some(trim_ows(h.value));
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }

    if transfer_encoding {
        if version_minor == 0 {
            return Err(RequestError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !chunked {
            return Err(RequestError::Malformed("empty Transfer-Encoding"));
        }
        if content_length.is_some() {
            return Err(RequestError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
    }
    if version_minor == 1 && host.is_none() {
        return Err(RequestError::Malformed("HTTP/1.1 request without Host"));
    }
    if let (Some(authority), Some(host)) = (absolute_authority, host) {
        if !authority.eq_ignore_ascii_case(host) {
            return Err(RequestError::Malformed(
                "absolute-form target disagrees with Host",
            ));
        }
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        match content_length {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::None,
        }
    };
    let keep_alive = if version_minor == 1 {
        !connection.close
    } else {
        connection.keep_alive && !connection.close
    };
    let upgrade = version_minor == 1 && connection.upgrade && upgrade_value.is_some();
    let (routed, strip) = routing::route(
        table,
        host.or(absolute_authority),
        target.as_bytes(),
        target_parts.origin,
        method_token.as_bytes(),
        &Headers(req.headers),
        client.ip,
    );

    // Second pass: the head the backend will see.
    out.clear();
    let version = if version_minor == 1 {
        "HTTP/1.1"
    } else {
        "HTTP/1.0"
    };
    let origin = routing::stripped(target_parts.origin, strip);
    let slash: &[u8] = if origin.first() == Some(&b'/') || origin == b"*" {
        b""
    } else {
        b"/"
    };
    push_all(
        out,
        &[
            method_token.as_bytes(),
            b" ",
            slash,
            origin,
            b" ",
            version.as_bytes(),
            b"\r\n",
        ],
    );
    if let (None, Some(authority)) = (host, absolute_authority) {
        // An HTTP/1.0 request may name its host only in the target: the backend still needs it.
        push_all(out, &[b"Host: ", authority, b"\r\n"]);
    }
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut client_request_id: Option<&[u8]> = None;
    let mut wrote_length = false;
    let mut wrote_coding = false;
    for h in req.headers.iter() {
        let name = h.name;
        if crate::http::is_hop_by_hop(name) || connection.names(name) {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if !wrote_length {
                wrote_length = true;
                out.extend_from_slice(b"Content-Length: ");
                crate::http::push_decimal(out, content_length.unwrap_or(0));
                out.extend_from_slice(b"\r\n");
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !wrote_coding {
                wrote_coding = true;
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(trim_ows(h.value));
        } else if name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
        {
            // Set by us below: a client must not choose what the backend believes about them.
        } else {
            if request_id
                && client_request_id.is_none()
                && name.eq_ignore_ascii_case("x-request-id")
            {
                client_request_id = Some(trim_ows(h.value));
            }
            push_all(out, &[name.as_bytes(), b": ", h.value, b"\r\n"]);
        }
    }
    let request_id = request_id.then(|| match client_request_id {
        Some(theirs) => String::from_utf8_lossy(theirs).into_owned(),
        None => {
            let id = super::request_id::next();
            push_all(out, &[b"X-Request-Id: ", &id, b"\r\n"]);
            // Hex digits only: always UTF-8.
            String::from_utf8_lossy(&id).into_owned()
        }
    });
    out.extend_from_slice(b"X-Forwarded-For: ");
    for prior in forwarded_for.iter().filter(|v| !v.is_empty()) {
        push_all(out, &[prior, b", "]);
    }
    crate::http::push_ip(out, client.ip);
    out.extend_from_slice(if client.https {
        b"\r\nX-Forwarded-Proto: https\r\n"
    } else {
        b"\r\nX-Forwarded-Proto: http\r\n"
    });
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        push_all(out, &[b"X-Forwarded-Host: ", host, b"\r\n"]);
    }
    if upgrade {
        push_all(
            out,
            &[
                b"Connection: Upgrade\r\nUpgrade: ",
                upgrade_value.unwrap_or_default(),
                b"\r\n",
            ],
        );
    } else if version_minor == 0 {
        // Ask a 1.0 backend to keep the connection for the pool; without it the backend closes.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    // Pieces rather than `format!`, which cost as much as the rest of the access log line.
    let request_line = keep_request_line.then(|| {
        let mut line = String::with_capacity(method_token.len() + target.len() + 10);
        for part in [method_token, " ", target, " ", version] {
            line.push_str(part);
        }
        line
    });
    Ok(Some(Request {
        head_len,
        method,
        version_minor,
        body,
        keep_alive,
        expect_continue: expect_continue && version_minor == 1,
        upgrade,
        request_line,
        request_id,
        routed,
    }))
}

/// A request target split for forwarding.
pub(super) struct TargetParts<'a> {
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
    /// What goes to the backend: the path and query, without scheme and authority (a backend
    /// is an origin server, which expects origin-form, RFC 9112 §3.2.1). Empty means `/`.
    origin: &'a [u8],
}

/// Accepts origin-form, absolute-form and `OPTIONS *`.
pub(super) fn check_target(method: Method, target: &str) -> Result<TargetParts<'_>, RequestError> {
    let whole = TargetParts {
        authority: None,
        origin: target.as_bytes(),
    };
    if target.starts_with('/') {
        return Ok(whole);
    }
    if target == "*" {
        return if method == Method::Options {
            Ok(whole)
        } else {
            Err(RequestError::Malformed(
                "asterisk-form target outside OPTIONS",
            ))
        };
    }
    let bytes = target.as_bytes();
    let rest = if bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
        &bytes[7..]
    } else if bytes.len() >= 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
        &bytes[8..]
    } else {
        return Err(RequestError::Malformed("invalid request target"));
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || !is_authority(authority) {
        return Err(RequestError::Malformed(
            "invalid authority in request target",
        ));
    }
    Ok(TargetParts {
        authority: Some(authority),
        origin: &rest[end..],
    })
}

/// Whether `value` can be `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): only the
/// bytes of a reg-name (unreserved, pct-encoded, sub-delims), an IP literal's brackets and the
/// port's colon. RFC 9112 §3.2 requires a 400 for an invalid Host; forwarded, a space, slash,
/// `@` or `?` in it would let a client make backends (virtual hosts, absolute links, caches)
/// read another host than the one the proxy checked. No userinfo: `user@host` is refused too.
fn is_authority(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

/// Whether the request line is well formed but for its version, `HTTP/D.D` with a major
/// version of 2 or more: that deserves 505 (RFC 9110 §15.6.6), not 400. httparse got as far as
/// the version, so the method and the target before it are sound; a third space means junk in
/// the version (`GET /a b HTTP/2.0`), which is not a version at all.
fn names_another_major_version(buf: &[u8]) -> bool {
    let buf = &buf[crate::http::leading_empty_lines(buf)..];
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let line = &buf[..line_end];
    if line.iter().filter(|&&b| b == b' ').count() != 2 {
        return false;
    }
    let Some(space) = line.iter().rposition(|&b| b == b' ') else {
        return false;
    };
    match &line[space + 1..] {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] => {
            major.is_ascii_digit() && minor.is_ascii_digit() && *major >= b'2'
        }
        _ => false,
    }
}

fn parse_error_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or target",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
