//! A client stream's header list checked against RFC 9113 §8.2–8.3 and written as the
//! HTTP/1.1 request head that goes to the backend.
//!
//! The head then goes through the HTTP/1 parser like any client's, so the proxy's own rules
//! (limits, X-Forwarded-*, routing) apply unchanged; what is checked here is what HTTP/2 adds:
//! lowercase names, pseudo-headers (known ones, once each, before the other fields), no
//! connection-specific fields, `te` only as `trailers`, `:authority` agreeing with `Host`, and
//! a `content-length` that the DATA frames will be held to.

use super::hpack::HeaderList;
use super::CONNECTION_SPECIFIC;
use crate::http::{self, parse_content_length};

/// How the request body travels to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// END_STREAM came with the head.
    None,
    /// `content-length`: DATA is forwarded as is, and must add up to it.
    Length(u64),
    /// No length given: DATA frames become chunks, trailers the chunked trailer section.
    Chunked,
}

/// What the stream layer needs to know about a translated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translated {
    pub body: RequestBody,
    pub is_head: bool,
}

/// Why a request is malformed (a stream error of type PROTOCOL_ERROR, RFC 9113 §8.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Writes the HTTP/1.1 head for `list` to `out`. `end_stream`: the HEADERS frame ended the
/// stream, so there is no body.
pub fn translate(
    list: &HeaderList,
    end_stream: bool,
    out: &mut Vec<u8>,
) -> Result<Translated, Malformed> {
    let mut method: Option<&[u8]> = None;
    let mut scheme: Option<&[u8]> = None;
    let mut authority: Option<&[u8]> = None;
    let mut path: Option<&[u8]> = None;
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut regular = false;
    for (name, value) in list.iter() {
        check_field(name, value)?;
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular {
                return Err(Malformed("pseudo-header after a regular field"));
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                _ => return Err(Malformed("unknown or response pseudo-header")),
            };
            if slot.replace(value).is_some() {
                return Err(Malformed("pseudo-header repeated"));
            }
            continue;
        }
        regular = true;
        if CONNECTION_SPECIFIC.contains(&name) {
            return Err(Malformed("connection-specific header field"));
        }
        match name {
            b"te" if value != b"trailers" => {
                return Err(Malformed("te other than trailers"));
            }
            b"host" if host.is_some() => return Err(Malformed("host repeated")),
            b"host" => host = Some(value),
            b"content-length" => {
                let n = parse_content_length(value).ok_or(Malformed("bad content-length"))?;
                if length.replace(n).is_some_and(|m| m != n) {
                    return Err(Malformed("content-length values differ"));
                }
            }
            _ => {}
        }
    }
    let method = method.ok_or(Malformed(":method missing"))?;
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Malformed(":method not a token"));
    }
    // The request line is written from these: a space or control byte would split it
    // differently for the backend.
    let visible = |v: &[u8]| v.iter().all(|&b| b > b' ' && b != 0x7f);
    if !path.is_none_or(visible) || !authority.is_none_or(visible) || !host.is_none_or(visible) {
        return Err(Malformed(
            "space or control byte in :path, :authority or host",
        ));
    }
    let connect = method == b"CONNECT";
    if connect {
        if scheme.is_some() || path.is_some() {
            return Err(Malformed("CONNECT with :scheme or :path"));
        }
    } else {
        scheme.ok_or(Malformed(":scheme missing"))?;
        let path = path.ok_or(Malformed(":path missing"))?;
        let asterisk = path == b"*" && method == b"OPTIONS";
        if !asterisk && !path.starts_with(b"/") {
            return Err(Malformed(":path neither absolute nor * for OPTIONS"));
        }
    }
    if let Some(a) = authority {
        if a.contains(&b'@') {
            return Err(Malformed(":authority with userinfo"));
        }
        if host.is_some_and(|h| !h.eq_ignore_ascii_case(a)) {
            return Err(Malformed(":authority and host differ"));
        }
    }
    let host = authority.or(host);
    if connect && host.is_none() {
        return Err(Malformed("CONNECT without :authority"));
    }
    if end_stream && length.is_some_and(|n| n > 0) {
        return Err(Malformed("content-length without DATA"));
    }

    let target = if connect {
        host.unwrap_or_default()
    } else {
        path.unwrap_or_default()
    };
    http::push_all(out, &[method, b" ", target, b" HTTP/1.1\r\n"]);
    if let Some(host) = host {
        http::push_all(out, &[b"host: ", host, b"\r\n"]);
    }
    let mut cookies = 0;
    for (name, value) in list.iter() {
        if name.starts_with(b":") || name == b"host" {
            continue;
        }
        if name == b"cookie" {
            // RFC 9113 §8.2.3: crumbs may come as separate fields; HTTP/1.1 has one line.
            cookies += 1;
            continue;
        }
        http::push_all(out, &[name, b": ", value, b"\r\n"]);
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        let crumbs = list.iter().filter(|(n, _)| *n == b"cookie");
        for (i, (_, value)) in crumbs.enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"\r\n");
    }
    let body = match (end_stream, length) {
        (true, _) => RequestBody::None,
        (false, Some(n)) => RequestBody::Length(n),
        (false, None) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            RequestBody::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok(Translated {
        body,
        is_head: method == b"HEAD",
    })
}

/// RFC 9113 §8.2.1: a name is lowercase token characters (a leading `:` for pseudo-headers);
/// a value has no NUL, CR or LF and no whitespace at either end.
fn check_field(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    let bare = name.strip_prefix(b":").unwrap_or(name);
    if bare.is_empty() {
        return Err(Malformed("empty field name"));
    }
    if bare.iter().any(|b| b.is_ascii_uppercase()) {
        return Err(Malformed("uppercase field name"));
    }
    if !bare.iter().all(|&b| is_tchar(b)) {
        return Err(Malformed("invalid character in field name"));
    }
    if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(Malformed("NUL, CR or LF in a field value"));
    }
    if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t')) {
        return Err(Malformed("whitespace around a field value"));
    }
    Ok(())
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The chunk header for `len` bytes of DATA on a chunked request.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "{len:x}\r\n");
}

/// Trailers (a HEADERS frame ending the stream after DATA) checked: pseudo-headers and
/// connection-specific fields make the request malformed (RFC 9113 §8.1, §8.3), whether or not
/// the trailers will be forwarded.
pub fn check_trailers(list: &HeaderList) -> Result<(), Malformed> {
    for (name, value) in list.iter() {
        check_field(name, value)?;
        if name.starts_with(b":") {
            return Err(Malformed("pseudo-header in trailers"));
        }
        if CONNECTION_SPECIFIC.contains(&name) {
            return Err(Malformed("connection-specific field in trailers"));
        }
    }
    Ok(())
}

/// Trailers as the chunked body's last chunk and trailer section; see [`check_trailers`].
pub fn write_trailers(list: &HeaderList, out: &mut Vec<u8>) -> Result<(), Malformed> {
    check_trailers(list)?;
    out.extend_from_slice(b"0\r\n");
    for (name, value) in list.iter() {
        // Framing and routing fields mean nothing in a trailer section, and a backend that
        // merged them into the head would read a different message.
        if matches!(name, b"content-length" | b"host" | b"te" | b"trailer") {
            continue;
        }
        http::push_all(out, &[name, b": ", value, b"\r\n"]);
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::hpack::{HeaderDecoder, HeaderEncoder};

    fn list(fields: &[(&str, &str)]) -> HeaderList {
        let mut block = Vec::new();
        HeaderEncoder::default().encode(
            fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut block,
        );
        HeaderDecoder::default().decode(&block, 1 << 20).unwrap()
    }

    fn get(path: &str) -> Vec<(&'static str, String)> {
        vec![
            (":method", "GET".into()),
            (":scheme", "https".into()),
            (":authority", "example.com".into()),
            (":path", path.into()),
        ]
    }

    fn run(fields: &[(&str, &str)], end_stream: bool) -> Result<(String, Translated), Malformed> {
        let mut out = Vec::new();
        let t = translate(&list(fields), end_stream, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), t))
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
        let mut f = get("/a?b=c");
        f.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
        f
    }

    fn refs<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        f.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }

    #[test]
    fn a_get_becomes_an_http1_head_with_host_from_authority() {
        let f = with(&[("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")]);
        let (head, t) = run(&refs(&f), true).unwrap();
        assert_eq!(
            head,
            "GET /a?b=c HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\ncookie: a=1; b=2\r\n\r\n"
        );
        assert_eq!(t.body, RequestBody::None);
    }

    #[test]
    fn bodies_keep_their_length_or_become_chunked() {
        let f = with(&[("content-length", "5")]);
        let (head, t) = run(&refs(&f), false).unwrap();
        assert!(head.contains("content-length: 5\r\n"));
        assert_eq!(t.body, RequestBody::Length(5));
        let f = get("/upload");
        let (head, t) = run(&refs(&f), false).unwrap();
        assert!(head.ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert_eq!(t.body, RequestBody::Chunked);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: Vec<Vec<(&str, String)>> = vec![
            with(&[("Accept", "x")]),
            with(&[("connection", "keep-alive")]),
            with(&[("transfer-encoding", "chunked")]),
            with(&[("upgrade", "h2c")]),
            with(&[("te", "gzip")]),
            with(&[("host", "other.example")]),
            with(&[("x", " padded")]),
            with(&[(":status", "200")]),
            with(&[("content-length", "1x")]),
            {
                let mut f = get("/");
                f.insert(1, (":method", "POST".into()));
                f
            },
            {
                let mut f = get("/");
                f.push((":path", "/late".into()));
                f
            },
            get(""),
            get("relative"),
            get("*"),
            get("/a b"),
            {
                let mut f = get("/");
                f[0].1 = "G T".into();
                f
            },
            vec![(":method", "GET".into()), (":scheme", "https".into())],
            vec![(":method", "GET".into()), (":path", "/".into())],
            {
                let mut f = get("/");
                f[2].1 = "user@example.com".into();
                f
            },
        ];
        for f in cases {
            assert!(run(&refs(&f), true).is_err(), "{f:?}");
        }
        let f = with(&[("content-length", "3")]);
        assert_eq!(
            run(&refs(&f), true).unwrap_err(),
            Malformed("content-length without DATA")
        );
    }

    #[test]
    fn te_trailers_host_alone_and_options_asterisk_are_fine() {
        let f = with(&[("te", "trailers")]);
        assert!(run(&refs(&f), true).is_ok());
        let f = vec![
            (":method", "OPTIONS"),
            (":scheme", "http"),
            (":path", "*"),
            ("host", "example.com"),
        ];
        let (head, _) = run(&f, true).unwrap();
        assert!(head.starts_with("OPTIONS * HTTP/1.1\r\nhost: example.com\r\n"));
    }

    #[test]
    fn trailers_end_the_chunked_body() {
        let mut out = Vec::new();
        write_trailers(
            &list(&[("grpc-status", "0"), ("content-length", "1")]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
        assert!(write_trailers(&list(&[(":path", "/")]), &mut out).is_err());
    }
}
