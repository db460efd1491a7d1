//! Just enough HTTP/1.1 for the admin API: one request per connection, heads parsed by
//! httparse, bodies by Content-Length, every answer closes and allows any origin (the dashboard
//! may be opened from disk).

use std::io::{self, Read, Write};

/// Largest admin request head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest admin request body (a backend description is a few dozen bytes).
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug)]
pub struct AdminRequest {
    pub method: String,
    /// The path without its query.
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// Reads one request. `Ok(None)`: the peer left without sending one. `Err(status)`: answer
/// that status.
pub fn read_request(stream: &mut impl Read) -> Result<Option<AdminRequest>, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("/");
                let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
                let mut length = 0usize;
                let mut authorization = None;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or(400u16)?;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        // Nothing the dashboard sends needs chunked bodies.
                        return Err(411);
                    } else if h.name.eq_ignore_ascii_case("authorization") {
                        authorization = std::str::from_utf8(h.value).ok().map(str::to_string);
                    }
                }
                if length > MAX_BODY {
                    return Err(413);
                }
                let mut body = buf[head_len..].to_vec();
                while body.len() < length {
                    let n = stream.read(&mut chunk).map_err(|_| 408u16)?;
                    if n == 0 {
                        return Err(400);
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok(Some(AdminRequest {
                    method,
                    path,
                    authorization,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(400),
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => return Err(408),
        };
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(400) };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Headers every admin answer carries, so a page from any origin (or from disk) may call it.
pub const CORS: &str = "Access-Control-Allow-Origin: *\r\n\
    Access-Control-Allow-Methods: GET, POST, DELETE, OPTIONS\r\n\
    Access-Control-Allow-Headers: Authorization, Content-Type\r\n";

/// The head a GET would get, for a HEAD request.
pub fn respond_head(
    stream: &mut impl Write,
    status: u16,
    content_type: &str,
    length: usize,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Cache-Control: no-store\r\n{CORS}Connection: close\r\n\r\n",
        reason(status)
    );
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

pub fn respond(
    stream: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    // RFC 9110 §8.6 and §15.3.5: a 204 (the CORS preflight answer) has no body and must not
    // carry Content-Length.
    let (length, body) = if status == 204 {
        (String::new(), &[][..])
    } else {
        (format!("Content-Length: {}\r\n", body.len()), body)
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n{length}\
         Cache-Control: no-store\r\n{CORS}Connection: close\r\n\r\n",
        reason(status),
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_with_a_body() {
        let mut input: &[u8] =
            b"POST /api/backends?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nContent-Length: 4\r\n\r\nbody";
        let r = read_request(&mut input).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/backends")
        );
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(r.body, b"body");
    }

    #[test]
    fn refuses_what_it_does_not_handle() {
        let mut chunked: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(read_request(&mut chunked).unwrap_err(), 411);
        let mut garbage: &[u8] = b"\x00\x01\x02 junk\r\n\r\n";
        assert_eq!(read_request(&mut garbage).unwrap_err(), 400);
        let mut empty: &[u8] = b"";
        assert!(read_request(&mut empty).unwrap().is_none());
        let mut huge: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        assert_eq!(read_request(&mut huge).unwrap_err(), 413);
    }

    #[test]
    fn no_content_answers_have_no_length() {
        let mut out = Vec::new();
        respond(&mut out, 204, "text/plain", b"").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("content-length"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
