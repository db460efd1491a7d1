//! Request heads still arriving: refused as soon as their bytes show they can never become a
//! head the proxy accepts, so that a client that sent one hears so at once instead of after
//! `timeouts.client_header`.
//!
//! The checks follow httparse's grammar byte for byte, and the request line's own checks in
//! `request::parse_routed` (target length and form, CONNECT), so that what is refused here the
//! full parse refuses too, however the bytes were split; a byte-level fault gets the status
//! the full parse would give it. (A request line's own fault is answered as soon as its line
//! ends, where the full parse would report a malformed field line after it first.) The checks
//! run on the bytes that came since the last call only, so a head that arrives a byte at a time
//! is looked at once in total; a head that arrives whole never comes here.

use super::request::{check_target, HeadLimits, Method, RequestError, MAX_HEADERS_CAP};

/// Where in the head the next byte goes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The method, or the empty lines before it (RFC 9112 §2.2).
    #[default]
    Method,
    /// A CR where the method would start: an empty line unless something other than LF follows.
    BlankCr,
    Target,
    /// `HTTP/D.D`, after the target's space.
    Version,
    /// The CR ending the request line.
    LineCr,
    /// The first byte of a field line, or of the empty line that ends the head.
    LineStart,
    Name,
    Value,
    /// The CR ending a field line.
    ValueCr,
    /// The CR of the empty line.
    EndCr,
    /// The head is complete: the full parse decides from here.
    Done,
}

/// How far a head still arriving has been checked. A fresh one goes with each head (the
/// buffer must start where the head does, as after the session drops leading empty lines).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PartialHead {
    /// Bytes looked at so far.
    pos: usize,
    at: At,
    /// Where the method starts, past any empty lines before it.
    method_start: usize,
    /// The space after the method.
    method_end: usize,
    /// The space after the target.
    target_end: usize,
    /// Complete field lines.
    fields: usize,
}

impl PartialHead {
    /// Checks the bytes of `buf` not checked yet, and the limits. `buf` is the head so far: what
    /// it was at the last call, and what came since.
    pub fn check(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<(), RequestError> {
        while let Some(&b) = buf.get(self.pos) {
            if self.at == At::Done {
                break;
            }
            self.at = self.step(buf, b, limits)?;
            self.pos += 1;
        }
        let in_request_line = matches!(
            self.at,
            At::Method | At::BlankCr | At::Target | At::Version | At::LineCr
        );
        if in_request_line && buf.len().saturating_sub(self.method_start) > line_limit(limits) {
            return Err(RequestError::TargetTooLong);
        }
        if buf.len() >= limits.max_header_bytes {
            return Err(RequestError::HeadTooLarge);
        }
        Ok(())
    }

    /// Where byte `b` (at `self.pos`) takes the head.
    fn step(&mut self, buf: &[u8], b: u8, limits: &HeadLimits) -> Result<At, RequestError> {
        let i = self.pos;
        let malformed = |why| Err(RequestError::Malformed(why));
        Ok(match self.at {
            At::Method if i == self.method_start && b == b'\n' => {
                self.method_start = i + 1;
                At::Method
            }
            At::Method if i == self.method_start && b == b'\r' => At::BlankCr,
            At::BlankCr if b == b'\n' => {
                self.method_start = i + 1;
                At::Method
            }
            At::BlankCr => return malformed("invalid line ending"),
            At::Method if is_tchar(b) => At::Method,
            At::Method if b == b' ' && i > self.method_start => {
                self.method_end = i;
                At::Target
            }
            At::Method => return malformed("invalid method or target"),
            At::Target if is_target_byte(b) => {
                if i - self.method_end > limits.max_target_bytes {
                    return Err(RequestError::TargetTooLong);
                }
                At::Target
            }
            At::Target if b == b' ' && i > self.method_end + 1 => {
                self.target_end = i;
                At::Version
            }
            // `GET /` and a line end: HTTP/0.9, which has no place in HTTP/1.1.
            At::Target if b == b'\r' || b == b'\n' => {
                return malformed("request line without an HTTP version")
            }
            At::Target => return malformed("invalid method or target"),
            At::Version => return self.version_byte(buf, b, limits),
            At::LineCr if b == b'\n' => {
                self.request_line(buf, limits)?;
                At::LineStart
            }
            At::EndCr if b == b'\n' => At::Done,
            At::LineCr | At::EndCr => return malformed("invalid line ending"),
            At::LineStart => match b {
                b'\r' => At::EndCr,
                b'\n' => At::Done,
                b' ' | b'\t' => return malformed("obs-fold or whitespace before a field name"),
                _ if is_tchar(b) => At::Name,
                _ => return malformed("invalid header name"),
            },
            At::Name if is_tchar(b) => At::Name,
            At::Name if b == b':' => At::Value,
            At::Name => return malformed("invalid header name"),
            At::Value if is_value_byte(b) => At::Value,
            At::Value if b == b'\r' => At::ValueCr,
            At::Value | At::ValueCr if b == b'\n' => self.end_field(limits)?,
            At::Value | At::ValueCr => return malformed("invalid header value"),
            At::Done => At::Done,
        })
    }

    /// A byte of the version or the line end after it. Only `HTTP/1.0` and `HTTP/1.1` are
    /// taken; another `HTTP/D.D` with a major version of 2 or more is 505 once its line ends
    /// (as the full parse says); anything else is not a version at all.
    fn version_byte(&mut self, buf: &[u8], b: u8, limits: &HeadLimits) -> Result<At, RequestError> {
        let n = self.pos - self.target_end - 1;
        let major = buf.get(self.target_end + 6).copied().unwrap_or(b'1');
        let fits = match n {
            0..=4 => b == b"HTTP/"[n],
            5 => matches!(b, b'1'..=b'9'),
            6 => b == b'.',
            7 => b.is_ascii_digit() && (major != b'1' || b <= b'1'),
            _ => false,
        };
        if fits {
            return Ok(At::Version);
        }
        if n != 8 || !matches!(b, b'\r' | b'\n') {
            return Err(RequestError::Malformed("invalid HTTP version"));
        }
        if major != b'1' {
            return Err(RequestError::VersionNotSupported);
        }
        if b == b'\r' {
            return Ok(At::LineCr);
        }
        self.request_line(buf, limits)?;
        Ok(At::LineStart)
    }

    /// The request line is complete (its LF at `self.pos`): what the full parse would refuse
    /// in it once the head is complete is refused now.
    fn request_line(&self, buf: &[u8], limits: &HeadLimits) -> Result<(), RequestError> {
        if self.pos - self.method_start > line_limit(limits) {
            return Err(RequestError::TargetTooLong);
        }
        let target = &buf[self.method_end + 1..self.target_end];
        if target.len() > limits.max_target_bytes {
            return Err(RequestError::TargetTooLong);
        }
        let method = &buf[self.method_start..self.method_end];
        let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
        else {
            return Err(RequestError::Malformed("invalid method or target"));
        };
        if method == "CONNECT" {
            return Err(RequestError::MethodNotAllowed);
        }
        check_target(Method::from_token(method), target).map(|_| ())
    }

    fn end_field(&mut self, limits: &HeadLimits) -> Result<At, RequestError> {
        self.fields += 1;
        if self.fields > limits.max_headers.clamp(1, MAX_HEADERS_CAP) {
            return Err(RequestError::HeadTooLarge);
        }
        Ok(At::LineStart)
    }
}

/// Checks a head that is still arriving, all of it at once; see [`PartialHead`].
pub fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), RequestError> {
    PartialHead::default().check(buf, limits)
}

/// The longest request line taken: the method, the target and "HTTP/1.1", with 64 bytes of
/// slack for a long method.
fn line_limit(limits: &HeadLimits) -> usize {
    limits.max_target_bytes + 64
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a method or a field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What httparse takes in a target: visible ASCII and bytes above it (UTF-8, checked once the
/// target is whole).
fn is_target_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0x80..=0xff)
}

/// `field-vchar`, `obs-text`, SP and HTAB (RFC 9110 §5.5).
fn is_value_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

#[cfg(test)]
#[path = "partial_tests.rs"]
mod tests;
