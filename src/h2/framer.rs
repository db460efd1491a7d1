//! An HTTP/1 message, as the proxy's own HTTP/1 exchange produces it, turned into HTTP/2
//! frames: the head into HEADERS (interim response heads too), the body into DATA as far as the
//! windows allow, chunked framing removed, and a trailer section into the HEADERS that ends the
//! stream. Two directions use it: a backend's answer to an HTTP/2 client's stream, and a
//! request going to an HTTP/2 backend (`protocol = "h2"` pools).
//!
//! The bytes come from the proxy's own HTTP/1 exchange, which has already checked the
//! message's framing, so a failure here is ours or a very broken message: the stream is reset.

use super::frame::{self, HEADER_LEN};
use super::hpack::HeaderEncoder;
use super::CONNECTION_SPECIFIC;
use crate::http::{self, BodyKind, BodyScanner, Piece};

const MAX_HEADERS: usize = 128;

/// Which head the message starts with.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A response to a client's stream; to a HEAD request, it has no body whatever it says.
    Response { is_head_request: bool },
    /// A request to a backend, under this `:scheme`.
    Request { scheme: &'static [u8] },
}

#[derive(Debug)]
enum Phase {
    Head,
    Body(BodyScanner),
    Done,
}

/// The response side of one stream.
#[derive(Debug)]
pub struct Framer {
    phase: Phase,
    head_searched: usize,
    kind: Kind,
    trailers: Vec<u8>,
    /// The final status, once its head is out (responses).
    pub status: u16,
}

/// What one call moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pulled {
    /// Bytes of the HTTP/1 response used.
    pub consumed: usize,
    /// DATA payload written: what the flow-control windows are charged.
    pub data: usize,
    /// Some frame was written.
    pub wrote: bool,
}

/// The HTTP/1 response cannot be carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unframeable(pub &'static str);

impl Framer {
    /// For a response to a request whose method was HEAD or not.
    pub fn new(is_head_request: bool) -> Framer {
        Framer::of(Kind::Response { is_head_request })
    }

    /// For a request to a backend reached over TLS or not.
    pub fn request(tls: bool) -> Framer {
        let scheme: &'static [u8] = if tls { b"https" } else { b"http" };
        Framer::of(Kind::Request { scheme })
    }

    fn of(kind: Kind) -> Framer {
        Framer {
            phase: Phase::Head,
            head_searched: 0,
            kind,
            trailers: Vec::new(),
            status: 0,
        }
    }

    /// END_STREAM has been written.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Whether the final head is out (after which only a reset can end the stream early).
    pub fn head_sent(&self) -> bool {
        !matches!(self.phase, Phase::Head)
    }

    /// Frames what `input` holds: heads whenever complete, body bytes up to `window`.
    /// `input_ended`: no more bytes will come (the exchange closed its side).
    #[allow(clippy::too_many_arguments)]
    pub fn pull(
        &mut self,
        input: &[u8],
        input_ended: bool,
        window: usize,
        stream: u32,
        max_frame: u32,
        encoder: &mut HeaderEncoder,
        out: &mut Vec<u8>,
    ) -> Result<Pulled, Unframeable> {
        let mut pulled = Pulled::default();
        loop {
            let rest = &input[pulled.consumed..];
            match &mut self.phase {
                Phase::Done => return Ok(pulled),
                Phase::Head => {
                    let Some(end) = http::find_head_end(rest, &mut self.head_searched) else {
                        if input_ended {
                            return Err(Unframeable("response ended inside its head"));
                        }
                        return Ok(pulled);
                    };
                    self.head_searched = 0;
                    match self.kind {
                        Kind::Response { is_head_request } => self.write_head(
                            &rest[..end],
                            is_head_request,
                            stream,
                            max_frame,
                            encoder,
                            out,
                        )?,
                        Kind::Request { scheme } => self.write_request_head(
                            &rest[..end],
                            scheme,
                            stream,
                            max_frame,
                            encoder,
                            out,
                        )?,
                    }
                    pulled.consumed += end;
                    pulled.wrote = true;
                }
                Phase::Body(scanner) => {
                    let budget = window - pulled.data;
                    let max = budget.min(max_frame as usize);
                    let at = out.len();
                    out.extend_from_slice(&[0; HEADER_LEN]);
                    let trailers = &mut self.trailers;
                    let scanned = scanner
                        .decode(rest, max as u64, &mut |piece| match piece {
                            Piece::Data(d) => out.extend_from_slice(d),
                            Piece::Trailer(b) => trailers.push(b),
                        })
                        .map_err(|_| Unframeable("bad response body"))?;
                    let len = out.len() - at - HEADER_LEN;
                    pulled.consumed += scanned.used;
                    pulled.data += len;
                    let closed_end = scanner.is_close_delimited()
                        && input_ended
                        && pulled.consumed == input.len();
                    let done = scanned.done || closed_end;
                    let trailer_frame = done && !self.trailers.is_empty();
                    if len == 0 && (!done || trailer_frame) {
                        out.truncate(at);
                    } else {
                        let flags = if done && !trailer_frame {
                            frame::FLAG_END_STREAM
                        } else {
                            0
                        };
                        let mut header = Vec::with_capacity(HEADER_LEN);
                        frame::write_header(&mut header, len, frame::DATA, flags, stream);
                        out[at..at + HEADER_LEN].copy_from_slice(&header);
                        pulled.wrote = true;
                    }
                    if trailer_frame {
                        let mut trailers = std::mem::take(&mut self.trailers);
                        lowercase_names(&mut trailers);
                        let mut block = Vec::new();
                        encoder.encode(trailer_fields(&trailers).iter().copied(), &mut block);
                        frame::write_headers(out, stream, &block, true, max_frame);
                        pulled.wrote = true;
                    }
                    if done {
                        self.phase = Phase::Done;
                        return Ok(pulled);
                    }
                    if scanned.used == 0 || pulled.data >= window {
                        if input_ended && scanned.used == 0 && pulled.consumed == input.len() {
                            return Err(Unframeable("response ended inside its body"));
                        }
                        return Ok(pulled);
                    }
                }
            }
        }
    }

    fn write_head(
        &mut self,
        head: &[u8],
        is_head_request: bool,
        stream: u32,
        max_frame: u32,
        encoder: &mut HeaderEncoder,
        out: &mut Vec<u8>,
    ) -> Result<(), Unframeable> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Unframeable("malformed response head")),
        }
        let status = resp.code.ok_or(Unframeable("no status"))?;
        let mut status_text = itoa::Buffer::new();
        let status_text = status_text.format(status).as_bytes().to_vec();
        let mut names: Vec<Vec<u8>> = Vec::with_capacity(resp.headers.len());
        let mut chunked = false;
        let mut length = None;
        for h in resp.headers.iter() {
            let name = h.name.to_ascii_lowercase().into_bytes();
            if name == b"transfer-encoding" {
                chunked = true;
            } else if name == b"content-length" {
                length = http::parse_content_length(h.value);
            }
            names.push(name);
        }
        let mut fields: Vec<(&[u8], &[u8])> = Vec::with_capacity(names.len() + 1);
        fields.push((b":status", &status_text));
        for (h, name) in resp.headers.iter().zip(&names) {
            if CONNECTION_SPECIFIC.contains(&name.as_slice()) {
                continue;
            }
            fields.push((name, http::trim_ows(h.value)));
        }
        let interim = (100..200).contains(&status);
        let body = if interim || status == 204 || status == 304 || is_head_request {
            BodyKind::None
        } else if chunked {
            BodyKind::Chunked
        } else if let Some(n) = length {
            BodyKind::Length(n)
        } else {
            BodyKind::Close
        };
        if interim {
            let mut block = Vec::with_capacity(head.len());
            encoder.encode(fields, &mut block);
            frame::write_headers(out, stream, &block, false, max_frame);
            return Ok(());
        }
        self.status = status;
        self.start_body(fields, body, head.len(), stream, max_frame, encoder, out);
        Ok(())
    }

    /// A request head for a backend: `:method`, `:scheme`, `:authority` from Host, `:path`,
    /// then its fields without those HTTP/2 does not carry (RFC 9113 §8.2.2, §8.3.1).
    fn write_request_head(
        &mut self,
        head: &[u8],
        scheme: &'static [u8],
        stream: u32,
        max_frame: u32,
        encoder: &mut HeaderEncoder,
        out: &mut Vec<u8>,
    ) -> Result<(), Unframeable> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Unframeable("malformed request head")),
        }
        let method = req.method.ok_or(Unframeable("no method"))?;
        let path = req.path.ok_or(Unframeable("no target"))?;
        if method == "CONNECT" {
            return Err(Unframeable("CONNECT does not go to an HTTP/2 pool"));
        }
        let mut names: Vec<Vec<u8>> = Vec::with_capacity(req.headers.len());
        let mut chunked = false;
        let mut length = None;
        let mut authority: &[u8] = b"";
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase().into_bytes();
            match name.as_slice() {
                b"transfer-encoding" => chunked = true,
                b"content-length" => length = http::parse_content_length(h.value),
                b"host" => authority = http::trim_ows(h.value),
                b"upgrade" => return Err(Unframeable("an upgrade does not go to an HTTP/2 pool")),
                _ => {}
            }
            names.push(name);
        }
        let mut fields: Vec<(&[u8], &[u8])> = Vec::with_capacity(names.len() + 4);
        fields.push((b":method", method.as_bytes()));
        fields.push((b":scheme", scheme));
        if !authority.is_empty() {
            fields.push((b":authority", authority));
        }
        fields.push((b":path", path.as_bytes()));
        // The proxy takes trailers whoever the client is (they pass to HTTP/2 clients and in
        // chunked answers), and gRPC servers want to be told.
        fields.push((b"te", b"trailers"));
        for (h, name) in req.headers.iter().zip(&names) {
            let dropped =
                CONNECTION_SPECIFIC.contains(&name.as_slice()) || name == b"host" || name == b"te";
            if !dropped {
                fields.push((name, http::trim_ows(h.value)));
            }
        }
        let body = if chunked {
            BodyKind::Chunked
        } else {
            BodyKind::Length(length.unwrap_or(0))
        };
        self.start_body(fields, body, head.len(), stream, max_frame, encoder, out);
        Ok(())
    }

    /// Writes the final head and moves on to the body, or ends the stream when there is none.
    #[allow(clippy::too_many_arguments)]
    fn start_body(
        &mut self,
        fields: Vec<(&[u8], &[u8])>,
        body: BodyKind,
        head_len: usize,
        stream: u32,
        max_frame: u32,
        encoder: &mut HeaderEncoder,
        out: &mut Vec<u8>,
    ) {
        let scanner = BodyScanner::new(body);
        let end_stream = scanner.is_done();
        let mut block = Vec::with_capacity(head_len);
        encoder.encode(fields, &mut block);
        frame::write_headers(out, stream, &block, end_stream, max_frame);
        self.phase = if end_stream {
            Phase::Done
        } else {
            Phase::Body(scanner)
        };
    }
}

/// HTTP/2 field names are lowercase (RFC 9113 §8.2.1): the names of a trailer section's
/// `name: value` lines are lowered in place.
fn lowercase_names(section: &mut [u8]) {
    let mut in_name = true;
    for b in section.iter_mut() {
        match *b {
            b'\n' => in_name = true,
            b':' => in_name = false,
            _ if in_name => b.make_ascii_lowercase(),
            _ => {}
        }
    }
}

/// `name: value` lines (names lowercase) as HPACK fields, without those HTTP/2 does not carry.
fn trailer_fields(section: &[u8]) -> Vec<(&[u8], &[u8])> {
    section
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], http::trim_ows(&line[colon + 1..])))
        })
        .filter(|(name, _)| {
            !CONNECTION_SPECIFIC
                .iter()
                .any(|d| d.eq_ignore_ascii_case(name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::frame::{next_frame, Frame};
    use crate::h2::hpack::HeaderDecoder;

    struct Seen {
        headers: Vec<(Vec<(String, String)>, bool)>,
        data: Vec<u8>,
        data_end: bool,
    }

    fn frames(out: &[u8]) -> Seen {
        let mut d = HeaderDecoder::default();
        let mut seen = Seen {
            headers: Vec::new(),
            data: Vec::new(),
            data_end: false,
        };
        let mut at = 0;
        while let Some((f, n)) = next_frame(&out[at..], 1 << 20).unwrap() {
            match f {
                Frame::Headers {
                    fragment,
                    end_stream,
                    ..
                } => {
                    let list = d.decode(fragment, 1 << 20).unwrap();
                    let fields = list
                        .iter()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(n).into_owned(),
                                String::from_utf8_lossy(v).into_owned(),
                            )
                        })
                        .collect();
                    seen.headers.push((fields, end_stream));
                }
                Frame::Data {
                    data, end_stream, ..
                } => {
                    seen.data.extend_from_slice(data);
                    seen.data_end |= end_stream;
                }
                other => panic!("{other:?}"),
            }
            at += n;
        }
        assert_eq!(at, out.len());
        seen
    }

    fn pull_all(resp: &[u8], head: bool, window: usize) -> (Seen, Pulled, bool) {
        let mut w = Framer::new(head);
        let mut out = Vec::new();
        let p = w
            .pull(
                resp,
                false,
                window,
                1,
                16_384,
                &mut HeaderEncoder::default(),
                &mut out,
            )
            .unwrap();
        (frames(&out), p, w.is_done())
    }

    #[test]
    fn a_length_response_becomes_headers_and_data() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-A: b\r\n\r\nhello";
        let (seen, p, done) = pull_all(resp, false, 1 << 20);
        assert!(done);
        assert_eq!(p.consumed, resp.len());
        let (fields, end) = &seen.headers[0];
        assert!(!end);
        assert_eq!(fields[0], (":status".into(), "200".into()));
        assert!(fields.iter().all(|(n, _)| n != "connection"));
        assert!(fields.contains(&("x-a".into(), "b".into())));
        assert_eq!(seen.data, b"hello");
        assert!(seen.data_end);
    }

    #[test]
    fn chunked_bodies_lose_their_framing_and_trailers_end_the_stream() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nGrpc-Status: 0\r\n\r\n";
        let (seen, _, done) = pull_all(resp, false, 1 << 20);
        assert!(done);
        assert_eq!(seen.data, b"abcde");
        assert!(!seen.data_end);
        assert_eq!(seen.headers.len(), 2);
        assert_eq!(
            seen.headers[1],
            (vec![("grpc-status".to_string(), "0".to_string())], true)
        );
        assert!(seen.headers[0]
            .0
            .iter()
            .all(|(n, _)| n != "transfer-encoding"));
    }

    #[test]
    fn the_window_caps_data_and_the_rest_waits() {
        let resp =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n";
        let mut w = Framer::new(false);
        let mut e = HeaderEncoder::default();
        let mut out = Vec::new();
        let p = w.pull(resp, false, 4, 1, 16_384, &mut e, &mut out).unwrap();
        assert_eq!(p.data, 4);
        assert!(!w.is_done());
        let p2 = w
            .pull(&resp[p.consumed..], false, 100, 1, 16_384, &mut e, &mut out)
            .unwrap();
        assert_eq!(p2.data, 6);
        assert!(w.is_done());
        assert_eq!(p.consumed + p2.consumed, resp.len());
        let seen = frames(&out);
        assert_eq!(seen.data, b"0123456789");
        assert!(seen.data_end);
    }

    #[test]
    fn interim_heads_no_body_heads_and_close_delimited_bodies() {
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (seen, _, done) = pull_all(resp, false, 10);
        assert!(done);
        assert_eq!(seen.headers.len(), 2);
        assert!(!seen.headers[0].1 && seen.headers[1].1);
        let (seen, _, done) = pull_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, 10);
        assert!(done && seen.headers[0].1);

        let mut w = Framer::new(false);
        let mut out = Vec::new();
        let resp = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end";
        let mut e = HeaderEncoder::default();
        w.pull(resp, false, 1000, 1, 16_384, &mut e, &mut out)
            .unwrap();
        assert!(!w.is_done());
        w.pull(b"", true, 1000, 1, 16_384, &mut e, &mut out)
            .unwrap();
        assert!(w.is_done());
        let seen = frames(&out);
        assert_eq!(seen.data, b"until the end");
        assert!(seen.data_end);
    }

    #[test]
    fn a_response_cut_short_is_unframeable() {
        let mut w = Framer::new(false);
        let mut out = Vec::new();
        let mut e = HeaderEncoder::default();
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        let p = w
            .pull(resp, false, 1000, 1, 16_384, &mut e, &mut out)
            .unwrap();
        assert_eq!(p.consumed, resp.len());
        assert!(w
            .pull(b"", true, 1000, 1, 16_384, &mut e, &mut out)
            .is_err());
        assert!(Framer::new(false)
            .pull(b"HTTP/1.1 200", true, 10, 1, 16_384, &mut e, &mut out)
            .is_err());
    }
}
