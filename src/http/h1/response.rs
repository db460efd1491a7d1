//! Response heads from backends: parse with httparse, decide the body framing (RFC 9112 §6.3),
//! and write the head that goes to the client without hop-by-hop headers.

use std::fmt;
use std::mem::MaybeUninit;

use crate::http::{list_elements, parse_content_length, trim_ows, BodyKind, ConnectionOptions};

/// httparse's header slots; a backend that sends more is treated as broken.
const MAX_RESPONSE_HEADERS: usize = 256;

/// A response head the proxy accepted.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    pub body: BodyKind,
    /// The backend lets us reuse the connection after this response.
    pub backend_keep_alive: bool,
}

impl Response {
    /// 1xx responses other than 101 precede the real one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Why a response head was refused: the client gets a 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseError(pub &'static str);

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid response from backend: {}", self.0)
    }
}

/// Parses the complete head at the start of `buf` and appends the head for the client to `out`,
/// all but the `Connection` header and the final empty line: the session adds those, since only
/// it knows whether the client connection stays open.
pub fn parse(
    buf: &[u8],
    request_is_head: bool,
    upgrade_requested: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, ResponseError> {
    // Left uninitialised, as for requests: httparse writes only the slots it fills.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError("too many headers")),
        Err(_) => return Err(ResponseError("malformed head")),
    };
    let (Some(status), Some(version_minor)) = (resp.code, resp.version) else {
        return Err(ResponseError("incomplete status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError("status out of range"));
    }
    if status == 101 && !upgrade_requested {
        return Err(ResponseError("101 without an upgrade request"));
    }

    let mut content_length: Option<u64> = None;
    let mut codings_end_in_chunked: Option<bool> = None;
    let mut connection = ConnectionOptions::default();
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value).ok_or(ResponseError("invalid Content-Length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ResponseError("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if let Some(last) = list_elements(h.value).last() {
                codings_end_in_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection.add(h.value);
        }
    }

    let no_body = request_is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        BodyKind::None
    } else {
        match (codings_end_in_chunked, content_length) {
            (Some(true), _) => BodyKind::Chunked,
            // A coding other than chunked last: only the close tells where the body ends.
            (Some(false), _) => BodyKind::Close,
            (None, Some(n)) => BodyKind::Length(n),
            (None, None) => BodyKind::Close,
        }
    };
    let backend_keep_alive = if version_minor == 1 {
        !connection.close
    } else {
        connection.keep_alive && !connection.close
    };

    let reason = resp.reason.unwrap_or("");
    out.extend_from_slice(b"HTTP/1.1 ");
    crate::http::push_decimal(out, status);
    crate::http::push_all(out, &[b" ", reason.as_bytes(), b"\r\n"]);
    for h in resp.headers.iter() {
        let name = h.name;
        let keep_upgrade = status == 101 && name.eq_ignore_ascii_case("upgrade");
        if (crate::http::is_hop_by_hop(name) && !keep_upgrade) || connection.names(name) {
            continue;
        }
        // With chunked framing a Content-Length is wrong by definition (RFC 9112 §6.3 point 3).
        if body == BodyKind::Chunked && name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(trim_ows(h.value));
        out.extend_from_slice(b"\r\n");
    }
    Ok(Some(Response {
        head_len,
        status,
        body,
        backend_keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(head: &str, is_head: bool) -> Result<(Response, String), ResponseError> {
        let mut out = Vec::new();
        let r = parse(head.as_bytes(), is_head, true, &mut out)?.expect("complete head");
        Ok((r, String::from_utf8(out).expect("utf-8")))
    }

    #[test]
    fn framing_follows_rfc9112() {
        let body = |h: &str| parse_str(h, false).unwrap().0.body;
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            BodyKind::Length(3)
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BodyKind::Chunked
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            BodyKind::Chunked
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            BodyKind::Close
        );
        assert_eq!(body("HTTP/1.0 200 OK\r\n\r\n"), BodyKind::Close);
        for status in [
            "204 No Content",
            "304 Not Modified",
            "100 Continue",
            "103 Early Hints",
        ] {
            assert_eq!(
                body(&format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n")),
                BodyKind::None
            );
        }
        let (r, _) = parse_str("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert_eq!(r.body, BodyKind::None);
    }

    #[test]
    fn strips_hop_by_hop_and_keeps_order() {
        let (r, out) = parse_str(
            "HTTP/1.1 200 OK\r\nA: 1\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nA: 2\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!r.backend_keep_alive);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nA: 1\r\nA: 2\r\nContent-Length: 0\r\n"
        );
    }

    #[test]
    fn upgrade_survives_only_on_101() {
        let (_, out) = parse_str(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        );
        let mut out = Vec::new();
        assert!(parse(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            false,
            false,
            &mut out
        )
        .is_err());
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "garbage\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 999 X\r\n\r\n",
        ] {
            assert!(parse_str(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http10_backend_keep_alive_needs_the_token() {
        let (r, _) = parse_str("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert!(!r.backend_keep_alive);
        let (r, _) = parse_str(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(r.backend_keep_alive);
    }
}
