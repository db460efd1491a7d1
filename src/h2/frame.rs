//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte header, each frame type's payload as the
//! server side receives it, checked against the rules that make a frame malformed, and the
//! frames the server sends.
//!
//! Pure and allocation-free on the receiving side: [`Frame`] borrows from the bytes read, and
//! [`next_frame`] says how many to consume, or that more are needed. Every rule broken is an
//! [`H2Error`] scoped as the RFC says: to the connection (GOAWAY) or to one stream (RST_STREAM).

use super::error::{ErrorCode, H2Error};

/// The frame header's length: 24-bit length, type, flags, 31-bit stream id.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and floor (RFC 9113 §6.5.2).
pub const MIN_MAX_FRAME_SIZE: u32 = 16_384;
/// SETTINGS_MAX_FRAME_SIZE's ceiling: 2^24 - 1.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window: 2^31 - 1 (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// SETTINGS identifiers (RFC 9113 §6.5.2; 0x8 from RFC 8441).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    /// The reserved bit is dropped, as receivers must (RFC 9113 §4.1).
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// One SETTINGS parameter, already checked against its allowed range; unknown identifiers
/// are kept so the caller can ignore them, as it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub id: u16,
    pub value: u32,
}

/// A received frame, its payload borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Padding removed.
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
        /// The whole payload's length, padding included: what flow control counts.
        flow_len: u32,
    },
    /// Padding and priority fields removed: the start of a header block.
    Headers {
        stream: u32,
        fragment: &'a [u8],
        end_stream: bool,
        end_headers: bool,
    },
    /// Priorities are ignored, as RFC 9113 §5.3.2 allows; the frame is still checked.
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    /// `payload` is a whole number of 6-byte parameters; see [`settings`].
    Settings {
        ack: bool,
        payload: &'a [u8],
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        fragment: &'a [u8],
        end_headers: bool,
    },
    /// A type this endpoint does not know: to be ignored (RFC 9113 §4.1, §5.5).
    Unknown {
        kind: u8,
    },
}

/// The next frame at the start of `buf`, and the bytes it takes; `Ok(None)` until a whole
/// frame is there. A frame longer than `max_frame_size` (our SETTINGS_MAX_FRAME_SIZE) is a
/// connection error before its payload is read, so a peer cannot make us buffer it.
pub fn next_frame(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame<'_>, usize)>, H2Error> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = FrameHeader::parse(head);
    if header.length > max_frame_size {
        return Err(H2Error::connection(
            ErrorCode::FrameSizeError,
            "frame larger than SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    let end = HEADER_LEN + header.length as usize;
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    Ok(Some((decode(&header, payload)?, end)))
}

/// A frame's payload checked against its type's rules (RFC 9113 §6).
pub fn decode<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<Frame<'a>, H2Error> {
    let on_stream = |what: &'static str| {
        if h.stream == 0 {
            Err(H2Error::connection(ErrorCode::ProtocolError, what))
        } else {
            Ok(h.stream)
        }
    };
    let on_connection = |what: &'static str| {
        if h.stream != 0 {
            Err(H2Error::connection(ErrorCode::ProtocolError, what))
        } else {
            Ok(())
        }
    };
    Ok(match h.kind {
        DATA => {
            let stream = on_stream("DATA on stream 0")?;
            Frame::Data {
                stream,
                data: unpad(h, payload)?,
                end_stream: h.has(FLAG_END_STREAM),
                flow_len: payload.len() as u32,
            }
        }
        HEADERS => {
            let stream = on_stream("HEADERS on stream 0")?;
            let mut fragment = unpad(h, payload)?;
            if h.has(FLAG_PRIORITY) {
                let Some((priority, rest)) = fragment.split_first_chunk::<5>() else {
                    return Err(H2Error::connection(
                        ErrorCode::FrameSizeError,
                        "HEADERS too short for its priority fields",
                    ));
                };
                let depends =
                    u32::from_be_bytes([priority[0], priority[1], priority[2], priority[3]])
                        & MAX_WINDOW;
                if depends == stream {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::ProtocolError,
                        "a stream cannot depend on itself",
                    ));
                }
                fragment = rest;
            }
            Frame::Headers {
                stream,
                fragment,
                end_stream: h.has(FLAG_END_STREAM),
                end_headers: h.has(FLAG_END_HEADERS),
            }
        }
        PRIORITY => {
            let stream = on_stream("PRIORITY on stream 0")?;
            if payload.len() != 5 {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::FrameSizeError,
                    "PRIORITY must be 5 bytes",
                ));
            }
            let depends =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if depends == stream {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::ProtocolError,
                    "a stream cannot depend on itself",
                ));
            }
            Frame::Priority { stream }
        }
        RST_STREAM => {
            let stream = on_stream("RST_STREAM on stream 0")?;
            let code = u32_payload(payload, "RST_STREAM must be 4 bytes")?;
            Frame::RstStream { stream, code }
        }
        SETTINGS => {
            on_connection("SETTINGS on a stream")?;
            let ack = h.has(FLAG_ACK);
            if ack && !payload.is_empty() {
                return Err(H2Error::connection(
                    ErrorCode::FrameSizeError,
                    "SETTINGS ACK with a payload",
                ));
            }
            if !payload.len().is_multiple_of(6) {
                return Err(H2Error::connection(
                    ErrorCode::FrameSizeError,
                    "SETTINGS not a multiple of 6 bytes",
                ));
            }
            for s in settings(payload) {
                check_setting(s)?;
            }
            Frame::Settings { ack, payload }
        }
        PUSH_PROMISE => {
            // RFC 9113 §8.4: a client cannot push.
            return Err(H2Error::connection(
                ErrorCode::ProtocolError,
                "PUSH_PROMISE from a client",
            ));
        }
        PING => {
            on_connection("PING on a stream")?;
            let data: [u8; 8] = payload.try_into().map_err(|_| {
                H2Error::connection(ErrorCode::FrameSizeError, "PING must be 8 bytes")
            })?;
            Frame::Ping {
                ack: h.has(FLAG_ACK),
                data,
            }
        }
        GOAWAY => {
            on_connection("GOAWAY on a stream")?;
            let Some((fixed, debug)) = payload.split_first_chunk::<8>() else {
                return Err(H2Error::connection(
                    ErrorCode::FrameSizeError,
                    "GOAWAY shorter than 8 bytes",
                ));
            };
            Frame::GoAway {
                last_stream: u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]])
                    & MAX_WINDOW,
                code: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
                debug,
            }
        }
        WINDOW_UPDATE => {
            if payload.len() != 4 {
                return Err(H2Error::connection(
                    ErrorCode::FrameSizeError,
                    "WINDOW_UPDATE must be 4 bytes",
                ));
            }
            let increment =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if increment == 0 {
                let what = "WINDOW_UPDATE of 0";
                return Err(match h.stream {
                    0 => H2Error::connection(ErrorCode::ProtocolError, what),
                    s => H2Error::stream(s, ErrorCode::ProtocolError, what),
                });
            }
            Frame::WindowUpdate {
                stream: h.stream,
                increment,
            }
        }
        CONTINUATION => Frame::Continuation {
            stream: on_stream("CONTINUATION on stream 0")?,
            fragment: payload,
            end_headers: h.has(FLAG_END_HEADERS),
        },
        kind => Frame::Unknown { kind },
    })
}

/// The parameters of a SETTINGS payload (a whole number of 6-byte entries).
pub fn settings(payload: &[u8]) -> impl Iterator<Item = Setting> + '_ {
    payload.chunks_exact(6).map(|c| Setting {
        id: u16::from_be_bytes([c[0], c[1]]),
        value: u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
    })
}

fn check_setting(s: Setting) -> Result<(), H2Error> {
    match s.id {
        SETTINGS_ENABLE_PUSH if s.value > 1 => Err(H2Error::connection(
            ErrorCode::ProtocolError,
            "SETTINGS_ENABLE_PUSH must be 0 or 1",
        )),
        SETTINGS_INITIAL_WINDOW_SIZE if s.value > MAX_WINDOW => Err(H2Error::connection(
            ErrorCode::FlowControlError,
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
        )),
        SETTINGS_MAX_FRAME_SIZE
            if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&s.value) =>
        {
            Err(H2Error::connection(
                ErrorCode::ProtocolError,
                "SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1",
            ))
        }
        _ => Ok(()),
    }
}

/// The payload of a PADDED frame without its pad length byte and padding.
fn unpad<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], H2Error> {
    if !h.has(FLAG_PADDED) {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(H2Error::connection(
            ErrorCode::FrameSizeError,
            "PADDED frame without its pad length",
        ));
    };
    // RFC 9113 §6.1: padding as long as the payload or longer is a connection error.
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|keep| &rest[..keep])
        .ok_or_else(|| H2Error::connection(ErrorCode::ProtocolError, "padding exceeds the payload"))
}

fn u32_payload(payload: &[u8], what: &'static str) -> Result<u32, H2Error> {
    let b: [u8; 4] = payload
        .try_into()
        .map_err(|_| H2Error::connection(ErrorCode::FrameSizeError, what))?;
    Ok(u32::from_be_bytes(b))
}

// ---- what the server sends ----------------------------------------------------------------

/// Appends a frame header.
pub fn write_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: u32) {
    let len = (length as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&(stream & MAX_WINDOW).to_be_bytes());
}

pub fn write_settings(out: &mut Vec<u8>, settings: &[Setting]) {
    write_header(out, settings.len() * 6, SETTINGS, 0, 0);
    for s in settings {
        out.extend_from_slice(&s.id.to_be_bytes());
        out.extend_from_slice(&s.value.to_be_bytes());
    }
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_header(out, 0, SETTINGS, FLAG_ACK, 0);
}

pub fn write_ping_ack(out: &mut Vec<u8>, data: &[u8; 8]) {
    write_header(out, 8, PING, FLAG_ACK, 0);
    out.extend_from_slice(data);
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    write_header(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&(code as u32).to_be_bytes());
    out.extend_from_slice(debug);
}

pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_header(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&(code as u32).to_be_bytes());
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_header(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

/// A header block as HEADERS and as many CONTINUATION frames as `max_frame_size` (the peer's)
/// needs.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = (max_frame_size as usize).max(1);
    let mut chunks = block.chunks(max).peekable();
    let first = chunks.next().unwrap_or_default();
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= FLAG_END_HEADERS;
    }
    write_header(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            FLAG_END_HEADERS
        } else {
            0
        };
        write_header(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// DATA frames of at most `max_frame_size` each; `end_stream` on the last (an empty frame when
/// `data` is empty).
pub fn write_data(
    out: &mut Vec<u8>,
    stream: u32,
    data: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = (max_frame_size as usize).max(1);
    if data.is_empty() {
        write_header(
            out,
            0,
            DATA,
            if end_stream { FLAG_END_STREAM } else { 0 },
            stream,
        );
        return;
    }
    let mut chunks = data.chunks(max).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last && end_stream {
            FLAG_END_STREAM
        } else {
            0
        };
        write_header(out, chunk.len(), DATA, flags, stream);
        out.extend_from_slice(chunk);
    }
}
