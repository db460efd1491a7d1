//! What the fuzz targets check the proxy against: an independent, strict reading of HTTP/1.1
//! message framing (RFC 9112 §6 and §7.1), written for clarity rather than speed, and the rules a
//! head the proxy forwards must follow.
//!
//! The reference shares no code with `lb`: heads go through httparse directly, and the chunked
//! decoder below is a plain transcription of the RFC grammar. Where `lb` deliberately refuses
//! more than the RFC (a chunk size of more than 16 hex digits), the reference refuses it too, so
//! that the two accept the same language and any difference is a finding.

/// How a request body is delimited, as the reference reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl From<lb::http::BodyKind> for Framing {
    fn from(kind: lb::http::BodyKind) -> Framing {
        match kind {
            lb::http::BodyKind::None | lb::http::BodyKind::Length(0) => Framing::None,
            lb::http::BodyKind::Length(n) => Framing::Length(n),
            lb::http::BodyKind::Chunked => Framing::Chunked,
            lb::http::BodyKind::Close => panic!("a request body is never close-delimited"),
        }
    }
}

/// Normalises `Length(0)` to `None`: the two frame the same (empty) body.
pub fn normalise(framing: Framing) -> Framing {
    match framing {
        Framing::Length(0) => Framing::None,
        f => f,
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The body framing a request head declares, or why it is ambiguous: both Content-Length and
/// Transfer-Encoding, a transfer coding other than exactly one `chunked`, Content-Length values
/// that are not plain decimal or that differ, Transfer-Encoding in HTTP/1.0.
pub fn strict_framing(
    headers: &[httparse::Header<'_>],
    version_minor: u8,
) -> Result<Framing, &'static str> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut saw_te = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = trim_ows(h.value);
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err("Content-Length is not a decimal number");
            }
            let mut n: u64 = 0;
            for &d in v {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    .ok_or("Content-Length overflows")?;
            }
            if length.is_some_and(|prev| prev != n) {
                return Err("differing Content-Length values");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            saw_te = true;
            codings.extend(
                h.value
                    .split(|&b| b == b',')
                    .map(trim_ows)
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    if saw_te {
        if version_minor == 0 {
            return Err("Transfer-Encoding in HTTP/1.0");
        }
        if length.is_some() {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than exactly chunked");
        }
        return Ok(Framing::Chunked);
    }
    Ok(match length {
        Some(n) => Framing::Length(n),
        None => Framing::None,
    })
}

/// Bytes allowed in a chunk extension or a trailer line: HTAB, SP, visible ASCII, obs-text.
fn is_line_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Where the line starting at `from` ends (the index of its CR), `Ok(None)` if its end has not
/// arrived, or an error for a CR or LF that is not part of a CRLF.
fn find_crlf(data: &[u8], from: usize) -> Result<Option<usize>, &'static str> {
    let mut i = from;
    while i < data.len() {
        match data[i] {
            b'\n' => return Err("bare LF"),
            b'\r' => {
                return match data.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err("bare CR"),
                    None => Ok(None),
                }
            }
            _ => i += 1,
        }
    }
    Ok(None)
}

/// The end of a chunked body at the start of `data` (just past the final CRLF), `Ok(None)` if
/// it has not all arrived, or why it is invalid.
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
/// ```
///
/// Extensions are checked for their bytes, their leading `[BWS] ";"` and for not ending inside a
/// quoted-string; trailer lines for being field lines (`token ":" value`), as lb does on purpose:
/// a backend that honours quotes, or reads a trailer section differently, must not find a body
/// end elsewhere.
pub fn chunked_end(data: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut pos = 0usize;
    loop {
        let Some(line_end) = find_crlf(data, pos)? else {
            return Ok(None);
        };
        let line = &data[pos..line_end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err("chunk size missing");
        }
        if digits > 16 {
            return Err("chunk size longer than 16 hex digits");
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap(), 16)
            .map_err(|_| "chunk size overflows")?;
        let ext = &line[digits..];
        let after_bws = ext
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .map_or(&[][..], |i| &ext[i..]);
        if !ext.is_empty() && after_bws.first() != Some(&b';') {
            return Err("chunk size followed by something other than an extension");
        }
        if !ext.iter().all(|&b| is_line_byte(b)) {
            return Err("invalid byte in chunk extension");
        }
        if quote_open_at_end(ext) {
            return Err("quoted-string open at the end of a chunk line");
        }
        pos = line_end + 2;
        if size == 0 {
            loop {
                let Some(end) = find_crlf(data, pos)? else {
                    return Ok(None);
                };
                if end == pos {
                    return Ok(Some(end + 2));
                }
                let trailer = &data[pos..end];
                let name = trailer.iter().take_while(|&&b| is_tchar(b)).count();
                if name == 0 || trailer.get(name) != Some(&b':') {
                    return Err("trailer line is not a field line");
                }
                if !trailer.iter().all(|&b| is_line_byte(b)) {
                    return Err("invalid byte in trailer");
                }
                pos = end + 2;
            }
        }
        let left = (data.len() - pos) as u64;
        if left < size {
            return Ok(None);
        }
        pos += size as usize;
        match &data[pos..] {
            [] | [b'\r'] => return Ok(None),
            [b'\r', b'\n', ..] => pos += 2,
            _ => return Err("chunk data not followed by CRLF"),
        }
    }
}

/// One request as the reference reads it out of a client's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRequest {
    pub method: String,
    pub target: String,
    pub version_minor: u8,
    pub framing: Framing,
    /// The body bytes as sent (a chunked body still chunked).
    pub body: Vec<u8>,
    /// The body ended within the input.
    pub complete: bool,
}

/// The requests at the start of `input`, in order, up to the first one the reference refuses or
/// that does not end within the input. Requests are not stopped at `Connection: close`: the
/// proxy may forward fewer requests than listed, never others.
pub fn split_requests(input: &[u8]) -> (Vec<RefRequest>, Option<&'static str>) {
    let mut requests = Vec::new();
    let mut pos = 0;
    loop {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        loop {
            match &input[pos..] {
                [b'\r', b'\n', ..] => pos += 2,
                [b'\n', ..] => pos += 1,
                _ => break,
            }
        }
        if pos == input.len() {
            return (requests, None);
        }
        let mut slots = [httparse::EMPTY_HEADER; 512];
        let mut req = httparse::Request::new(&mut slots);
        let head_len = match req.parse(&input[pos..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return (requests, None),
            Err(_) => return (requests, Some("head does not parse")),
        };
        let version_minor = req.version.unwrap_or(1);
        let framing = match strict_framing(req.headers, version_minor) {
            Ok(f) => normalise(f),
            Err(why) => return (requests, Some(why)),
        };
        let method = req.method.unwrap_or_default().to_string();
        // What a backend gets: origin-form (RFC 9112 §3.2.1), as lb forwards it.
        let target = origin_form(req.path.unwrap_or_default());
        pos += head_len;
        let rest = &input[pos..];
        let (body_len, complete, stop) = match framing {
            Framing::None => (0, true, None),
            Framing::Length(n) => {
                let take = n.min(rest.len() as u64) as usize;
                (take, take as u64 == n, None)
            }
            Framing::Chunked => match chunked_end(rest) {
                Ok(Some(end)) => (end, true, None),
                Ok(None) => (rest.len(), false, None),
                // The proxy streams a body and may forward its valid start before it meets the
                // error: the backend then sees a prefix of this.
                Err(why) => (rest.len(), false, Some(why)),
            },
        };
        requests.push(RefRequest {
            method,
            target,
            version_minor,
            framing,
            body: rest[..body_len].to_vec(),
            complete,
        });
        pos += body_len;
        if !complete {
            return (requests, stop);
        }
    }
}

/// Header names that describe one connection and must not cross a proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A head as the proxy forwarded it, after [`check_forwarded`] accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedHead {
    pub method: String,
    pub target: String,
    pub version_minor: u8,
    pub framing: Framing,
    pub head_len: usize,
}

/// Checks a head the proxy wrote for a backend, at the start of `buf`: it must parse on its own
/// (no leading empty line), frame its body one way only (at most one Content-Length, at most one
/// `Transfer-Encoding: chunked` and nothing else, never both), and carry no hop-by-hop header
/// but the proxy's own `Connection: Upgrade` + `Upgrade` or, to an HTTP/1.0 backend,
/// `Connection: keep-alive`. `Ok(None)` if the head has not all arrived.
pub fn check_forwarded(buf: &[u8]) -> Result<Option<ForwardedHead>, String> {
    if matches!(buf.first(), Some(b'\r' | b'\n')) {
        return Err("forwarded stream has an empty line where a request should start".into());
    }
    let mut slots = [httparse::EMPTY_HEADER; 1024];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("forwarded head does not parse: {e}")),
    };
    let version_minor = req.version.unwrap_or(1);
    let mut lengths = 0;
    let mut codings = 0;
    let mut connection: Vec<&[u8]> = Vec::new();
    let mut upgrades = 0;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if h.value.is_empty() || !h.value.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    "forwarded Content-Length {:?}",
                    String::from_utf8_lossy(h.value)
                ));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            if h.value != b"chunked" {
                return Err(format!(
                    "forwarded Transfer-Encoding {:?}",
                    String::from_utf8_lossy(h.value)
                ));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            connection.push(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrades += 1;
        } else if HOP_BY_HOP.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(format!("forwarded hop-by-hop header {name}"));
        }
    }
    if lengths > 1 || codings > 1 || lengths + codings > 1 {
        return Err(format!(
            "forwarded {lengths} Content-Length and {codings} Transfer-Encoding headers"
        ));
    }
    match (connection.as_slice(), upgrades) {
        ([], 0) => {}
        ([b"Upgrade"], 1) if version_minor == 1 => {}
        ([b"keep-alive"], 0) if version_minor == 0 => {}
        _ => {
            return Err(format!(
                "forwarded Connection {:?} with {upgrades} Upgrade headers",
                connection
                    .iter()
                    .map(|v| String::from_utf8_lossy(v))
                    .collect::<Vec<_>>()
            ))
        }
    }
    let framing = strict_framing(req.headers, version_minor)
        .map_err(|why| format!("forwarded head is ambiguous: {why}"))?;
    Ok(Some(ForwardedHead {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        version_minor,
        framing: normalise(framing),
        head_len,
    }))
}

/// A fixed pseudo-random sequence of piece sizes, seeded from the input, so a target can feed
/// the same bytes in several splits without spending input bytes on choosing them.
pub struct Splits(u64);

impl Splits {
    pub fn new(data: &[u8]) -> Splits {
        // FNV-1a
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Splits(h | 1)
    }

    fn step(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.step() % n as u64) as usize
    }

    /// The next piece size, 1 to 64, small sizes more often.
    pub fn next_size(&mut self) -> usize {
        self.step();
        match self.0 % 4 {
            0 => 1,
            1 => 1 + (self.0 >> 8) as usize % 4,
            2 => 1 + (self.0 >> 8) as usize % 16,
            _ => 1 + (self.0 >> 8) as usize % 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_chunked_decoder() {
        assert_eq!(chunked_end(b"5\r\nhello\r\n0\r\n\r\nX"), Ok(Some(15)));
        assert_eq!(
            chunked_end(b"5 ;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
            Ok(Some(26))
        );
        assert_eq!(chunked_end(b"5\r\nhel"), Ok(None));
        assert!(chunked_end(b"5 \r\nhello\r\n0\r\n\r\n").is_err());
        assert!(chunked_end(b"5\nhello\r\n0\r\n\r\n").is_err());
        assert!(chunked_end(b"0\r\n\n").is_err());
    }

    #[test]
    fn reference_split() {
        let (reqs, stop) = split_requests(
            b"\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, b"abc");
        assert_eq!(stop, Some("both Content-Length and Transfer-Encoding"));
    }
}

/// The origin-form of a request target (RFC 9112 §3.2.1): an absolute-form target loses its
/// scheme and authority, the rest stays as it is.
pub fn origin_form(target: &str) -> String {
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

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a chunk extension ends inside a quoted-string (RFC 9110 §5.6.4).
fn quote_open_at_end(ext: &[u8]) -> bool {
    let (mut inside, mut escaped) = (false, false);
    for &b in ext {
        if escaped {
            escaped = false;
        } else if inside && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            inside = !inside;
        }
    }
    inside
}
