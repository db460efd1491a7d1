//! HTTP/1.1 wire handling for the demo backend: the per-connection read
//! buffer, request heads, request body framing and the chunked decoder.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Largest request head accepted; it is also the read buffer size, so a head
/// that does not fit in the buffer is by definition too large.
pub const MAX_HEAD: usize = 64 * 1024;
/// httparse needs a fixed header array; more headers than this is treated
/// like an oversized head.
const MAX_HEADERS: usize = 512;
/// A chunk-size line only carries a hex number and optional extensions;
/// anything longer is abuse, not a real client.
const MAX_CHUNK_LINE: usize = 4096;
/// Trailers are read and discarded, but they still must not grow unbounded.
const MAX_TRAILERS: usize = 64 * 1024;

/// A parsed request head. Everything is owned so the read buffer can be
/// reused for the body while the handler still looks at the head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request-target exactly as sent (used for logging).
    pub target: String,
    /// Path and query in origin-form, even if the client used absolute-form.
    origin: String,
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The head byte for byte, request line through the blank line.
    pub raw_head: Vec<u8>,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

impl Request {
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_ascii())
    }

    /// True if the comma-separated list header `name` contains `token`
    /// (case-insensitively), across all of its field lines.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    pub fn path(&self) -> &str {
        match self.origin.split_once('?') {
            Some((p, _)) => p,
            None => &self.origin,
        }
    }

    pub fn query(&self) -> &str {
        self.origin.split_once('?').map_or("", |(_, q)| q)
    }

    /// Persistence per RFC 9112 section 9.3: 1.1 persists unless told to
    /// close, 1.0 only when it explicitly asks for keep-alive.
    pub fn wants_keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("connection", "keep-alive")
    }

    pub fn expects_continue(&self) -> bool {
        // RFC 9110 section 10.1.1: a 1.0 client cannot understand 100.
        self.minor_version >= 1 && self.has_token("expect", "100-continue")
    }

    /// Works out body framing, or the status to reject the request with.
    /// Ambiguous framing is rejected rather than guessed at, because a
    /// backend that guesses differently from the proxy in front of it is
    /// exactly how request smuggling happens.
    pub fn framing(&self) -> Result<Framing, u16> {
        let has_te = self.header_values("transfer-encoding").next().is_some();
        let has_cl = self.header_values("content-length").next().is_some();
        if has_te {
            if self.minor_version == 0 || has_cl {
                return Err(400);
            }
            let codings: Vec<&[u8]> = self
                .header_values("transfer-encoding")
                .flat_map(|v| v.split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|c| !c.is_empty())
                .collect();
            return match codings.as_slice() {
                [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
                // Chunked last but with other codings we cannot undo.
                [.., last] if last.eq_ignore_ascii_case(b"chunked") => Err(501),
                // Without chunked last the body length is unknowable.
                _ => Err(400),
            };
        }
        if has_cl {
            let mut len = None;
            for v in self
                .header_values("content-length")
                .flat_map(|v| v.split(|&b| b == b','))
            {
                let n = parse_decimal(v.trim_ascii()).ok_or(400u16)?;
                if len.is_some_and(|l| l != n) {
                    return Err(400);
                }
                len = Some(n);
            }
            return Ok(match len {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            });
        }
        Ok(Framing::Empty)
    }
}

/// Strict unsigned decimal: digits only (no sign, no spaces), no overflow.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Splits a query string into `(key, value)` pairs; a bare key gets "".
/// No percent-decoding: the backend only ever looks at simple flags.
pub fn parse_query(q: &str) -> Vec<(&str, &str)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect()
}

/// Whether a boolean query flag is on (`k=1`, `k=true`, `k=yes` or bare
/// `k`); the last occurrence wins.
pub fn query_flag(q: &str, key: &str) -> bool {
    parse_query(q)
        .into_iter()
        .rev()
        .find(|(k, _)| *k == key)
        .is_some_and(|(_, v)| matches!(v, "" | "1" | "true" | "yes"))
}

#[derive(Debug)]
pub enum HeadError {
    /// The peer closed, timed out or errored; nothing useful can be sent.
    Gone,
    TooLarge,
    Malformed,
}

#[derive(Debug)]
pub enum BodyError {
    /// The connection failed or ended before the body did.
    Gone,
    Malformed,
    TooLarge,
}

impl From<io::Error> for BodyError {
    fn from(_: io::Error) -> Self {
        BodyError::Gone
    }
}

/// A client connection plus its read buffer. Bytes past the current request
/// (pipelining, or the start of a WebSocket stream) stay in the buffer.
pub struct Conn {
    pub stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: vec![0; MAX_HEAD].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The unread bytes and the stream at once, so a caller can transform
    /// buffered bytes in place and write them out without copying.
    pub fn split_mut(&mut self) -> (&mut [u8], &mut TcpStream) {
        (&mut self.buf[self.start..self.end], &mut self.stream)
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes from the socket; Ok(0) means end of stream.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            // Pending bytes are at most one partial head or frame header, so
            // moving them is cheap and keeps the whole buffer usable.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::other("read buffer full"));
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next request head, or `Closed` if the peer is done.
    pub fn read_head(&mut self) -> Result<Request, HeadError> {
        loop {
            // RFC 9112 section 2.2: tolerate stray CRLFs between requests
            // (some clients add one after a POST body), but keep them out of
            // the head that /echo reflects.
            loop {
                let b = self.buffered();
                if b.starts_with(b"\r\n") {
                    self.consume(2);
                } else if b.starts_with(b"\n") {
                    self.consume(1);
                } else {
                    break;
                }
            }
            if !self.buffered().is_empty() {
                if let Some(req) = self.try_parse_head()? {
                    return Ok(req);
                }
                if self.start == 0 && self.end == self.buf.len() {
                    return Err(HeadError::TooLarge);
                }
            }
            match self.fill() {
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(_) => {}
            }
        }
    }

    fn try_parse_head(&mut self) -> Result<Option<Request>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let buf = &self.buf[self.start..self.end];
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        };
        let (Some(method), Some(target), Some(minor_version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HeadError::Malformed);
        };
        let req = Request {
            method: method.to_owned(),
            target: target.to_owned(),
            origin: origin_form(target),
            minor_version,
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            raw_head: buf[..len].to_vec(),
        };
        self.consume(len);
        Ok(Some(req))
    }

    /// Streams the request body to `sink` one slice at a time, never holding
    /// more than the read buffer. Returns the decoded body length.
    pub fn read_body(
        &mut self,
        framing: Framing,
        mut sink: impl FnMut(&[u8]) -> Result<(), BodyError>,
    ) -> Result<u64, BodyError> {
        match framing {
            Framing::Empty => Ok(0),
            Framing::Length(len) => {
                let mut left = len;
                while left > 0 {
                    if self.buffered().is_empty() && self.fill()? == 0 {
                        return Err(BodyError::Gone);
                    }
                    let avail = self.buffered();
                    let take = usize::try_from(left).map_or(avail.len(), |l| l.min(avail.len()));
                    sink(&avail[..take])?;
                    self.consume(take);
                    left -= take as u64;
                }
                Ok(len)
            }
            Framing::Chunked => {
                let mut dec = ChunkedDecoder::new();
                let mut total = 0u64;
                while !dec.is_done() {
                    if self.buffered().is_empty() && self.fill()? == 0 {
                        return Err(BodyError::Gone);
                    }
                    let (used, data) = dec
                        .decode(self.buffered())
                        .map_err(|_| BodyError::Malformed)?;
                    total += data.len() as u64;
                    sink(data)?;
                    self.consume(used);
                }
                Ok(total)
            }
        }
    }

    /// Closes without losing the response we just wrote: closing a socket
    /// with unread input makes the kernel send RST, which can destroy data
    /// still in flight to the client. So half-close, then read and discard
    /// for a bounded time before dropping the socket.
    pub fn close_gracefully(mut self) {
        const LINGER_BYTES: usize = 4 * 1024 * 1024;
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(500)));
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut drained = 0;
        while drained < LINGER_BYTES && Instant::now() < deadline {
            match self.stream.read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

/// Reduces an absolute-form target (`http://host/p?q`) to origin-form.
fn origin_form(target: &str) -> String {
    let lower_starts = |p: &str| {
        target
            .get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    for scheme in ["http://", "https://"] {
        if lower_starts(scheme) {
            let rest = &target[scheme.len()..];
            return match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
                Some(i) => rest[i..].to_owned(),
                None => "/".to_owned(),
            };
        }
    }
    target.to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    LineTooLong,
    BadDelimiter,
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    Done,
}

/// Push-style decoder for `Transfer-Encoding: chunked`. It is fed whatever
/// bytes have arrived and hands back decoded data as sub-slices of its
/// input, so bodies of any size stream through without being copied or
/// buffered.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Partial size or trailer line carried over between calls.
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes from `input` and returns `(bytes consumed, decoded data)`.
    /// Stops after at most one run of data, so the caller must loop until
    /// `is_done()`. Unless done, it always makes progress on non-empty
    /// input; once done it consumes nothing more, leaving any pipelined
    /// request that follows untouched.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let avail = input.len() - pos;
                    let n = usize::try_from(left).map_or(avail, |l| l.min(avail));
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok((pos + n, &input[pos..pos + n]));
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let (want, next) = if self.state == ChunkState::DataCr {
                        (b'\r', ChunkState::DataLf)
                    } else {
                        (b'\n', ChunkState::Size)
                    };
                    if input[pos] != want {
                        return Err(ChunkError::BadDelimiter);
                    }
                    pos += 1;
                    self.state = next;
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let rest = &input[pos..];
                    let (piece, complete) = match rest.iter().position(|&b| b == b'\n') {
                        Some(i) => (&rest[..=i], true),
                        None => (rest, false),
                    };
                    let (limit, err) = if self.state == ChunkState::Size {
                        (MAX_CHUNK_LINE, ChunkError::LineTooLong)
                    } else {
                        (
                            MAX_TRAILERS.saturating_sub(self.trailer_bytes),
                            ChunkError::TrailersTooLarge,
                        )
                    };
                    if self.line.len() + piece.len() > limit {
                        return Err(err);
                    }
                    self.line.extend_from_slice(piece);
                    pos += piece.len();
                    if complete {
                        let line = std::mem::take(&mut self.line);
                        self.finish_line(&line)?;
                    }
                }
            }
        }
        Ok((pos, &[]))
    }

    fn finish_line(&mut self, line: &[u8]) -> Result<(), ChunkError> {
        // Bare-LF line endings are refused: being lenient here is a classic
        // way to disagree with a proxy about where the body ends.
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return Err(ChunkError::BadDelimiter);
        };
        if self.state == ChunkState::Trailer {
            if content.is_empty() {
                self.state = ChunkState::Done;
            } else if content.contains(&b'\r') {
                return Err(ChunkError::BadDelimiter);
            } else {
                self.trailer_bytes += line.len();
            }
            return Ok(());
        }
        let size = parse_chunk_size(content)?;
        self.state = if size == 0 {
            ChunkState::Trailer
        } else {
            ChunkState::Data(size)
        };
        Ok(())
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]`; extensions are validated only as far
/// as containing no control characters, then ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::BadSize);
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let d = char::from(b).to_digit(16).ok_or(ChunkError::BadSize)?;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ChunkError::BadSize)?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => Ok(size),
        Some(b';')
            if rest
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) =>
        {
            Ok(size)
        }
        Some(_) => Err(ChunkError::BadSize),
    }
}
