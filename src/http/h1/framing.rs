//! Message body framing: where a body ends, found without changing its bytes.
//!
//! The proxy forwards bodies verbatim (a chunked body stays chunked), so it only needs to know how
//! many of the bytes it holds belong to the current message. [`BodyScanner`] answers that
//! incrementally, one buffer at a time, and rejects chunked syntax that two parsers could read
//! differently (RFC 9112 §7.1).

use std::fmt;

/// How the end of a message body is found (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all (a request without Content-Length, a HEAD/1xx/204/304 response).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, up to and including the last chunk and trailers.
    Chunked,
    /// Everything until the sender closes (responses only).
    Close,
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A chunk size that is not hexadecimal or does not fit in 64 bits.
    BadChunkSize,
    /// A chunk line or chunk data not ended by CRLF.
    MissingCrlf,
    /// A chunk extension or trailer section longer than we accept.
    TooLong,
    /// A byte that may not appear in a chunk extension or trailer line.
    BadByte,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::BadChunkSize => "invalid chunk size",
            FramingError::MissingCrlf => "chunk not terminated by CRLF",
            FramingError::TooLong => "chunk extension or trailers too long",
            FramingError::BadByte => "invalid byte in chunk extension or trailer",
        })
    }
}

/// Longest chunk-size line (size, extensions and all) we accept; extensions are rarely used and a
/// long one is more likely an attack on a parser than a real client.
const MAX_CHUNK_LINE: u32 = 4096;
/// Largest trailer section we accept.
const MAX_TRAILER_BYTES: u32 = 16 * 1024;
/// 16 hex digits already make a 64-bit size; more can only overflow.
const MAX_SIZE_DIGITS: u8 = 16;

/// Where a chunk extension stands with respect to a quoted-string (RFC 9110 §5.6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Outside,
    Inside,
    /// Just after a backslash inside a quoted-string.
    Escaped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
        line: u32,
    },
    /// Whitespace after the size: only a `;` may follow it.
    SizeSpace {
        value: u64,
        line: u32,
    },
    /// Inside a chunk extension, until CR.
    Extension {
        value: u64,
        line: u32,
        quote: Quote,
    },
    /// Saw CR after the size line; expecting LF.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data.
    Data {
        left: u64,
    },
    /// After chunk data, expecting CR then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart {
        total: u32,
    },
    /// Inside the name of a trailer field, before its colon.
    TrailerName {
        total: u32,
    },
    /// Inside a trailer field value.
    TrailerLine {
        total: u32,
    },
    TrailerLf {
        total: u32,
    },
    /// Saw CR of the final empty line; expecting LF.
    EndLf,
    Done,
}

/// Incremental scanner for one message body.
#[derive(Debug, Clone)]
pub struct BodyScanner {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// What one call to [`BodyScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// How many bytes from the start of the input belong to this body.
    pub used: usize,
    /// Whether the body ended within them.
    pub done: bool,
}

impl BodyScanner {
    pub fn new(kind: BodyKind) -> BodyScanner {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
                line: 0,
            }),
            BodyKind::Close => State::Close,
        };
        BodyScanner { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether the body ends only when the peer closes.
    pub fn is_close_delimited(&self) -> bool {
        matches!(self.state, State::Close)
    }

    /// As [`BodyScanner::scan`], handing the body's content to `on_piece`: at most `max_data`
    /// bytes of it (the rest waits for the next call), with chunked framing taken off.
    pub fn decode(
        &mut self,
        input: &[u8],
        max_data: u64,
        on_piece: &mut impl FnMut(Piece),
    ) -> Result<Scanned, FramingError> {
        if let State::Chunked(chunk) = &mut self.state {
            let (used, next) = scan_chunked_parts(*chunk, input, max_data, on_piece)?;
            let done = next == Chunk::Done;
            self.state = if done {
                State::Done
            } else {
                State::Chunked(next)
            };
            return Ok(Scanned { used, done });
        }
        let limit = input
            .len()
            .min(usize::try_from(max_data).unwrap_or(usize::MAX));
        let scanned = self.scan(&input[..limit])?;
        if scanned.used > 0 {
            on_piece(Piece::Data(&input[..scanned.used]));
        }
        Ok(scanned)
    }

    /// Consumes as much of `input` as belongs to this body.
    pub fn scan(&mut self, input: &[u8]) -> Result<Scanned, FramingError> {
        match &mut self.state {
            State::Done => Ok(Scanned {
                used: 0,
                done: true,
            }),
            State::Close => Ok(Scanned {
                used: input.len(),
                done: false,
            }),
            State::Length(left) => {
                let used = (*left).min(input.len() as u64);
                *left -= used;
                let done = *left == 0;
                if done {
                    self.state = State::Done;
                }
                Ok(Scanned {
                    used: used as usize,
                    done,
                })
            }
            State::Chunked(chunk) => {
                let (used, next) = scan_chunked(*chunk, input)?;
                let done = next == Chunk::Done;
                self.state = if done {
                    State::Done
                } else {
                    State::Chunked(next)
                };
                Ok(Scanned { used, done })
            }
        }
    }
}

fn hex_value(byte: u8) -> Option<u64> {
    match byte {
        b'0'..=b'9' => Some(u64::from(byte - b'0')),
        b'a'..=b'f' => Some(u64::from(byte - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(byte - b'A' + 10)),
        _ => None,
    }
}

/// Bytes allowed in a chunk extension or trailer line: visible ASCII, SP, HTAB and obs-text.
fn is_line_byte(byte: u8) -> bool {
    byte == b'\t' || (b' '..=b'~').contains(&byte) || byte >= 0x80
}

/// Bytes of a token, such as a field name (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn scan_chunked(state: Chunk, input: &[u8]) -> Result<(usize, Chunk), FramingError> {
    scan_chunked_parts(state, input, u64::MAX, &mut |_| {})
}

/// A piece of a chunked body that [`BodyScanner::decode`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Chunk data.
    Data(&'a [u8]),
    /// One byte of the trailer section (`name: value\r\n` lines, without the final CRLF).
    Trailer(u8),
}

fn scan_chunked_parts(
    mut state: Chunk,
    input: &[u8],
    mut max_data: u64,
    on_piece: &mut impl FnMut(Piece),
) -> Result<(usize, Chunk), FramingError> {
    let mut i = 0;
    while i < input.len() {
        if let Chunk::Data { left } = state {
            // Chunk data is skipped in bulk: it is the bulk of the bytes.
            let take = left.min((input.len() - i) as u64).min(max_data);
            if take == 0 {
                break;
            }
            max_data -= take;
            on_piece(Piece::Data(&input[i..i + take as usize]));
            i += take as usize;
            let left = left - take;
            state = if left == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data { left }
            };
            continue;
        }
        let byte = input[i];
        i += 1;
        let in_trailer = matches!(
            state,
            Chunk::TrailerName { .. } | Chunk::TrailerLine { .. } | Chunk::TrailerLf { .. }
        ) || (matches!(state, Chunk::TrailerStart { .. }) && byte != b'\r');
        if in_trailer {
            on_piece(Piece::Trailer(byte));
        }
        state = match state {
            Chunk::Size {
                value,
                digits,
                line,
            } => match hex_value(byte) {
                Some(v) => {
                    if digits >= MAX_SIZE_DIGITS || value > (u64::MAX >> 4) {
                        return Err(FramingError::BadChunkSize);
                    }
                    Chunk::Size {
                        value: (value << 4) | v,
                        digits: digits + 1,
                        line: line + 1,
                    }
                }
                None if digits == 0 => return Err(FramingError::BadChunkSize),
                None => match byte {
                    b'\r' => Chunk::SizeLf { value },
                    b';' => Chunk::Extension {
                        value,
                        line: line + 1,
                        quote: Quote::Outside,
                    },
                    b' ' | b'\t' => Chunk::SizeSpace {
                        value,
                        line: line + 1,
                    },
                    _ => return Err(FramingError::BadChunkSize),
                },
            },
            Chunk::SizeSpace { value, line } => match byte {
                b' ' | b'\t' if line < MAX_CHUNK_LINE => Chunk::SizeSpace {
                    value,
                    line: line + 1,
                },
                b';' => Chunk::Extension {
                    value,
                    line: line + 1,
                    quote: Quote::Outside,
                },
                b' ' | b'\t' => return Err(FramingError::TooLong),
                _ => return Err(FramingError::BadChunkSize),
            },
            // A quoted-string may not span lines (qdtext and quoted-pair exclude CR and LF), so a
            // CR inside one is refused rather than taken as the end of the line: a backend that
            // honours the quotes would read on past it, into what we forward as chunk data.
            Chunk::Extension { value, line, quote } => match byte {
                b'\r' if quote == Quote::Outside => Chunk::SizeLf { value },
                _ if !is_line_byte(byte) => return Err(FramingError::BadByte),
                _ if line >= MAX_CHUNK_LINE => return Err(FramingError::TooLong),
                _ => Chunk::Extension {
                    value,
                    line: line + 1,
                    quote: match (quote, byte) {
                        (Quote::Outside, b'"') => Quote::Inside,
                        (Quote::Inside, b'"') => Quote::Outside,
                        (Quote::Inside, b'\\') => Quote::Escaped,
                        (Quote::Escaped, _) => Quote::Inside,
                        (quote, _) => quote,
                    },
                },
            },
            Chunk::SizeLf { value } => match byte {
                b'\n' if value == 0 => Chunk::TrailerStart { total: 0 },
                b'\n' => Chunk::Data { left: value },
                _ => return Err(FramingError::MissingCrlf),
            },
            Chunk::Data { .. } => unreachable!("chunk data is consumed above"),
            Chunk::DataCr => match byte {
                b'\r' => Chunk::DataLf,
                _ => return Err(FramingError::MissingCrlf),
            },
            Chunk::DataLf => match byte {
                b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                    line: 0,
                },
                _ => return Err(FramingError::MissingCrlf),
            },
            // A trailer line is a field line, `name: value` (RFC 9112 §7.1.2): a name that is a
            // token, then a colon. Anything else (whitespace first, which would be obs-fold; a
            // space before the colon; a request line) is refused: a backend that reads the
            // trailer section differently, or not at all, would see it as something else, such
            // as the start of the next request.
            Chunk::TrailerStart { total } => match byte {
                b'\r' => Chunk::EndLf,
                _ if is_tchar(byte) => Chunk::TrailerName { total: total + 1 },
                _ => return Err(FramingError::BadByte),
            },
            Chunk::TrailerName { total } => match byte {
                _ if total >= MAX_TRAILER_BYTES => return Err(FramingError::TooLong),
                b':' => Chunk::TrailerLine { total: total + 1 },
                _ if is_tchar(byte) => Chunk::TrailerName { total: total + 1 },
                _ => return Err(FramingError::BadByte),
            },
            Chunk::TrailerLine { total } => match byte {
                b'\r' => Chunk::TrailerLf { total },
                _ if !is_line_byte(byte) => return Err(FramingError::BadByte),
                _ if total >= MAX_TRAILER_BYTES => return Err(FramingError::TooLong),
                _ => Chunk::TrailerLine { total: total + 1 },
            },
            Chunk::TrailerLf { total } => match byte {
                b'\n' => Chunk::TrailerStart { total },
                _ => return Err(FramingError::MissingCrlf),
            },
            Chunk::EndLf => match byte {
                b'\n' => return Ok((i, Chunk::Done)),
                _ => return Err(FramingError::MissingCrlf),
            },
            Chunk::Done => return Ok((i - 1, Chunk::Done)),
        };
    }
    Ok((i, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(kind: BodyKind, input: &[u8]) -> Result<Scanned, FramingError> {
        BodyScanner::new(kind).scan(input)
    }

    /// Feeds `input` one byte at a time and returns how many bytes were used in total.
    fn scan_bytewise(kind: BodyKind, input: &[u8]) -> Result<Scanned, FramingError> {
        let mut scanner = BodyScanner::new(kind);
        let mut used = 0;
        for byte in input {
            let s = scanner.scan(std::slice::from_ref(byte))?;
            used += s.used;
            if s.done {
                return Ok(Scanned { used, done: true });
            }
        }
        Ok(Scanned { used, done: false })
    }

    #[test]
    fn length_stops_at_the_end_of_the_body() {
        let s = scan_all(BodyKind::Length(5), b"helloGET / HTTP/1.1").unwrap();
        assert_eq!(
            s,
            Scanned {
                used: 5,
                done: true
            }
        );
        let s = scan_all(BodyKind::Length(10), b"hello").unwrap();
        assert_eq!(
            s,
            Scanned {
                used: 5,
                done: false
            }
        );
    }

    #[test]
    fn none_and_zero_length_are_done_at_once() {
        assert!(BodyScanner::new(BodyKind::None).is_done());
        assert!(BodyScanner::new(BodyKind::Length(0)).is_done());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"NEXT");
        for f in [scan_all, scan_bytewise] {
            let s = f(BodyKind::Chunked, &input).unwrap();
            assert_eq!(
                s,
                Scanned {
                    used: body.len(),
                    done: true
                }
            );
        }
    }

    #[test]
    fn chunked_sizes_are_hex_and_case_insensitive() {
        let body = b"A\r\n0123456789\r\nf\r\n0123456789abcde\r\n0\r\n\r\n";
        let s = scan_all(BodyKind::Chunked, body).unwrap();
        assert_eq!(
            s,
            Scanned {
                used: body.len(),
                done: true
            }
        );
    }

    #[test]
    fn chunked_refuses_ambiguous_syntax() {
        let cases: &[(&[u8], FramingError)] = &[
            (b"x\r\n", FramingError::BadChunkSize),
            (b"\r\n", FramingError::BadChunkSize),
            (b"-1\r\n", FramingError::BadChunkSize),
            (b"0x5\r\n", FramingError::BadChunkSize),
            (b"+5\r\n", FramingError::BadChunkSize),
            (b"1 \r\n", FramingError::BadChunkSize),
            (b"11111111111111111\r\n", FramingError::BadChunkSize),
            (b"5\nhello", FramingError::BadChunkSize),
            (b"5\r\rhello", FramingError::MissingCrlf),
            (b"5\r\nhelloX\r\n", FramingError::MissingCrlf),
            (b"5\r\nhello\n0\r\n\r\n", FramingError::MissingCrlf),
            (b"0\r\n\n", FramingError::BadByte),
            (b"0\r\n folded\r\n\r\n", FramingError::BadByte),
            (b"0\r\nX: a\0b\r\n\r\n", FramingError::BadByte),
            // Trailer lines that are not `token: value`.
            (b"0\r\nGET /admin HTTP/1.1\r\n\r\n", FramingError::BadByte),
            (b"0\r\n:x\r\n\r\n", FramingError::BadByte),
            (b"0\r\nX : y\r\n\r\n", FramingError::BadByte),
            (b"0\r\nno-colon\r\n\r\n", FramingError::BadByte),
            (b"1;a\0\r\n", FramingError::BadByte),
            // A quoted-string left open at the end of the line.
            (b"5;a=\"\r\nhello\r\n0\r\n\r\n", FramingError::BadByte),
            (b"5;a=\"x\\\"\r\nhello\r\n0\r\n\r\n", FramingError::BadByte),
            (b"5;a=\"x\\\r\nhello\r\n0\r\n\r\n", FramingError::BadByte),
            (b"5;a=b\"\r\nhello\r\n0\r\n\r\n", FramingError::BadByte),
        ];
        for (input, want) in cases {
            assert_eq!(
                scan_all(BodyKind::Chunked, input),
                Err(*want),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(scan_bytewise(BodyKind::Chunked, input), Err(*want));
        }
    }

    #[test]
    fn chunked_allows_whitespace_before_an_extension() {
        let body = b"1 ;ext\r\nx\r\n0\r\n\r\n";
        let s = scan_all(BodyKind::Chunked, body).unwrap();
        assert_eq!(
            s,
            Scanned {
                used: body.len(),
                done: true
            }
        );
    }

    #[test]
    fn chunked_extension_quoted_strings() {
        let body = b"5;a=\"x;y \\\" z\";b=c\r\nhello\r\n0\r\n\r\n";
        for f in [scan_all, scan_bytewise] {
            let s = f(BodyKind::Chunked, body).unwrap();
            assert_eq!(
                s,
                Scanned {
                    used: body.len(),
                    done: true
                }
            );
        }
    }

    #[test]
    fn chunked_limits_extension_length() {
        let mut body = b"1;".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE as usize + 1));
        assert_eq!(
            scan_all(BodyKind::Chunked, &body),
            Err(FramingError::TooLong)
        );
    }

    #[test]
    fn largest_chunk_size_does_not_overflow() {
        let s = scan_all(BodyKind::Chunked, b"ffffffffffffffff\r\nabc").unwrap();
        assert_eq!(
            s,
            Scanned {
                used: 21,
                done: false
            }
        );
    }

    #[test]
    fn close_delimited_takes_everything() {
        let mut scanner = BodyScanner::new(BodyKind::Close);
        assert!(scanner.is_close_delimited());
        assert_eq!(
            scanner.scan(b"abc").unwrap(),
            Scanned {
                used: 3,
                done: false
            }
        );
    }
}
