//! An HTTP/2 backend's answer turned back into the HTTP/1.1 response the proxy's exchange
//! reads: HEADERS into a status line and fields, DATA into the body (chunked when the backend
//! gave no content-length), and trailers into the chunked trailer section, so that gRPC's
//! `grpc-status` reaches an HTTP/2 client as trailers again.
//!
//! Field values are checked here: HPACK can carry bytes that would split an HTTP/1 line (CR,
//! LF, NUL), and a backend's field must never turn into a second field or a second response.

use super::hpack::HeaderList;
use super::CONNECTION_SPECIFIC;
use crate::http;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the final head (interim ones pass through).
    Head,
    /// The body, chunked (no content-length from the backend) or as it comes.
    Body {
        chunked: bool,
    },
    Done,
}

/// The backend's answer breaks HTTP/2's rules: the stream is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// The response side of one stream to an HTTP/2 backend.
#[derive(Debug)]
pub struct Assembler {
    phase: Phase,
    /// The request was HEAD: whatever the head says, no body follows it.
    is_head_request: bool,
}

impl Assembler {
    pub fn new(is_head_request: bool) -> Assembler {
        Assembler {
            phase: Phase::Head,
            is_head_request,
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the final head has been written.
    pub fn head_done(&self) -> bool {
        self.phase != Phase::Head
    }

    /// A header block: a head (interim or final), or the trailers after the body.
    pub fn headers(
        &mut self,
        list: &HeaderList,
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BadResponse> {
        match self.phase {
            Phase::Head => self.head(list, end_stream, out),
            Phase::Body { chunked } => {
                if !end_stream {
                    return Err(BadResponse("trailers without END_STREAM"));
                }
                if chunked {
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in list.iter() {
                        if name.first() == Some(&b':') {
                            return Err(BadResponse("pseudo-header in trailers"));
                        }
                        if !CONNECTION_SPECIFIC.contains(&name) {
                            push_field(out, name, value)?;
                        }
                    }
                    out.extend_from_slice(b"\r\n");
                }
                // With a content-length, HTTP/1.1 has nowhere to put trailers: they are
                // dropped, as RFC 9110 §6.5.1 allows.
                self.phase = Phase::Done;
                Ok(())
            }
            Phase::Done => Err(BadResponse("HEADERS after the end of the stream")),
        }
    }

    fn head(
        &mut self,
        list: &HeaderList,
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BadResponse> {
        let mut status = None;
        let mut length = None;
        for (name, value) in list.iter() {
            match name {
                b":status" => {
                    if status.is_some() {
                        return Err(BadResponse("two :status"));
                    }
                    status = parse_status(value);
                    if status.is_none() {
                        return Err(BadResponse("bad :status"));
                    }
                }
                _ if name.first() == Some(&b':') => {
                    return Err(BadResponse("unknown pseudo-header in a response"))
                }
                b"content-length" => {
                    length = Some(
                        http::parse_content_length(value)
                            .ok_or(BadResponse("bad content-length"))?,
                    );
                }
                _ => {}
            }
        }
        let status = status.ok_or(BadResponse("no :status"))?;
        let interim = (100..200).contains(&status);
        if interim && end_stream {
            return Err(BadResponse("an interim response ends the stream"));
        }
        out.extend_from_slice(b"HTTP/1.1 ");
        http::push_decimal(out, status);
        out.extend_from_slice(b" \r\n");
        for (name, value) in list.iter() {
            if name.first() == Some(&b':') || CONNECTION_SPECIFIC.contains(&name) {
                continue;
            }
            push_field(out, name, value)?;
        }
        if interim {
            out.extend_from_slice(b"\r\n");
            return Ok(());
        }
        let bodiless = status == 204 || status == 304 || self.is_head_request;
        let chunked = !bodiless && length.is_none() && !end_stream;
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if !bodiless && length.is_none() {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.phase = if end_stream || bodiless {
            Phase::Done
        } else {
            Phase::Body { chunked }
        };
        Ok(())
    }

    /// A DATA payload; `end_stream` closes the body.
    pub fn data(
        &mut self,
        data: &[u8],
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BadResponse> {
        let Phase::Body { chunked } = self.phase else {
            if self.phase == Phase::Done && data.is_empty() {
                // HEAD, 204 and 304 answers may still end with an empty DATA.
                return Ok(());
            }
            return Err(BadResponse("DATA outside a body"));
        };
        if chunked {
            if !data.is_empty() {
                crate::h2::request::chunk_header(data.len(), out);
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            if end_stream {
                out.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            out.extend_from_slice(data);
        }
        if end_stream {
            self.phase = Phase::Done;
        }
        Ok(())
    }
}

fn parse_status(value: &[u8]) -> Option<u16> {
    if value.len() != 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..600).contains(&n).then_some(n)
}

/// `name: value\r\n`, refusing what would break the line or the head.
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), BadResponse> {
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(token) {
        return Err(BadResponse("bad field name"));
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(BadResponse("CR, LF or NUL in a field value"));
    }
    http::push_all(out, &[name, b": ", http::trim_ows(value), b"\r\n"]);
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
        HeaderDecoder::default().decode(&block, 1 << 16).unwrap()
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn a_response_without_length_goes_chunked_with_its_trailers() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.headers(
            &list(&[(":status", "200"), ("content-type", "application/grpc")]),
            false,
            &mut out,
        )
        .unwrap();
        a.data(b"\0\0\0\0\x02hi", false, &mut out).unwrap();
        a.headers(
            &list(&[("grpc-status", "0"), ("grpc-message", "ok")]),
            true,
            &mut out,
        )
        .unwrap();
        assert!(a.is_done());
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 \r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n\
             7\r\n\0\0\0\0\x02hi\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"
        );
    }

    #[test]
    fn a_length_body_passes_as_it_is_and_trailers_only_end_with_length_zero() {
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.headers(
            &list(&[(":status", "404"), ("content-length", "3")]),
            false,
            &mut out,
        )
        .unwrap();
        a.data(b"abc", true, &mut out).unwrap();
        assert_eq!(text(&out), "HTTP/1.1 404 \r\ncontent-length: 3\r\n\r\nabc");
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        a.headers(
            &list(&[(":status", "200"), ("grpc-status", "5")]),
            true,
            &mut out,
        )
        .unwrap();
        assert!(a.is_done());
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 \r\ngrpc-status: 5\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn interim_heads_pass_and_head_requests_get_no_body() {
        let mut a = Assembler::new(true);
        let mut out = Vec::new();
        a.headers(
            &list(&[(":status", "103"), ("link", "</a>")]),
            false,
            &mut out,
        )
        .unwrap();
        assert!(!a.head_done());
        a.headers(
            &list(&[(":status", "200"), ("content-length", "10")]),
            false,
            &mut out,
        )
        .unwrap();
        assert!(a.is_done());
        a.data(b"", true, &mut out).unwrap();
        assert_eq!(
            text(&out),
            "HTTP/1.1 103 \r\nlink: </a>\r\n\r\nHTTP/1.1 200 \r\ncontent-length: 10\r\n\r\n"
        );
    }

    #[test]
    fn what_would_split_a_line_or_break_the_rules_is_refused() {
        let cases: [&[(&str, &str)]; 6] = [
            &[(":status", "200"), ("x", "a\r\ncontent-length: 5")],
            &[(":status", "200"), ("x", "a\0")],
            &[(":status", "2000")],
            &[("x", "y")],
            &[(":status", "200"), (":path", "/")],
            &[(":status", "200"), ("content-length", "1, 2")],
        ];
        for fields in cases {
            let mut out = Vec::new();
            assert!(
                Assembler::new(false)
                    .headers(&list(fields), false, &mut out)
                    .is_err(),
                "{fields:?}"
            );
        }
        let mut a = Assembler::new(false);
        let mut out = Vec::new();
        assert!(a.data(b"x", false, &mut out).is_err());
        assert!(a
            .headers(&list(&[(":status", "100")]), true, &mut out)
            .is_err());
    }
}
