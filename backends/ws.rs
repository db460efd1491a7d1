//! WebSocket (RFC 6455) support for the demo backend: the handshake key,
//! frame header encoding/decoding, and the echo loop run after a 101.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::http::Conn;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// From RFC 6455 section 1.3 (checked against its worked example, see the
/// tests; a commonly mistyped constant).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set although no extension was negotiated.
    ReservedBits,
    UnknownOpcode,
    /// 64-bit length with the most significant bit set.
    BadLength,
    /// Control frames must be unfragmented and at most 125 bytes.
    BadControlFrame,
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// A valid key is base64 of exactly 16 bytes (RFC 6455 section 4.1).
pub fn valid_key(key: &[u8]) -> bool {
    STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

/// Parses a frame header from the start of `buf`. Returns the header and
/// its encoded size, or `None` if more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        _ => return Err(FrameError::UnknownOpcode),
    };
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len >> 63 != 0 {
        return Err(FrameError::BadLength);
    }
    if control && (!fin || len > 125) {
        return Err(FrameError::BadControlFrame);
    }
    let mask = if masked {
        match buf
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            Some(m) => {
                at += 4;
                Some(m)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Appends a frame header using the shortest length encoding.
pub fn encode_header(out: &mut Vec<u8>, h: &FrameHeader) {
    out.push(if h.fin { 0x80 } else { 0 } | (h.opcode & 0x0F));
    let mask_bit = if h.mask.is_some() { 0x80 } else { 0 };
    match h.len {
        0..=125 => out.push(mask_bit | h.len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(h.len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&h.len.to_be_bytes());
        }
    }
    if let Some(m) = h.mask {
        out.extend_from_slice(&m);
    }
}

/// Encodes a whole frame, masking the payload if `mask` is given.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    let header = FrameHeader {
        fin,
        opcode,
        mask,
        len: payload.len() as u64,
    };
    encode_header(&mut out, &header);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
    out
}

/// XORs `data` with the mask; `offset` is where `data` starts within the
/// payload, so a payload can be unmasked piecewise as it streams in.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(phase + i) % 4];
    }
}

fn close_frame(code: u16) -> Vec<u8> {
    encode_frame(true, OP_CLOSE, &code.to_be_bytes(), None)
}

/// Echoes frames until the client closes or breaks the protocol. Data
/// frames are streamed through (header first, then the payload as it
/// arrives), so a frame of any size is echoed in constant memory and
/// fragmented messages keep their fragmentation.
pub fn echo(conn: &mut Conn) -> io::Result<()> {
    let mut out = Vec::with_capacity(14);
    loop {
        let (header, header_len) = loop {
            match parse_header(conn.buffered()) {
                Ok(Some(h)) => break h,
                Ok(None) => {
                    if conn.fill()? == 0 {
                        return Ok(());
                    }
                }
                Err(_) => return conn.stream.write_all(&close_frame(CLOSE_PROTOCOL_ERROR)),
            }
        };
        conn.consume(header_len);
        // RFC 6455 section 5.1: a server must close on an unmasked frame.
        let Some(mask) = header.mask else {
            return conn.stream.write_all(&close_frame(CLOSE_PROTOCOL_ERROR));
        };
        match header.opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                out.clear();
                encode_header(
                    &mut out,
                    &FrameHeader {
                        mask: None,
                        ..header
                    },
                );
                conn.stream.write_all(&out)?;
                let mut done = 0u64;
                while done < header.len {
                    if conn.buffered().is_empty() && conn.fill()? == 0 {
                        return Ok(());
                    }
                    let (avail, stream) = conn.split_mut();
                    let n = usize::try_from(header.len - done)
                        .map_or(avail.len(), |left| left.min(avail.len()));
                    apply_mask(&mut avail[..n], mask, done);
                    stream.write_all(&avail[..n])?;
                    conn.consume(n);
                    done += n as u64;
                }
            }
            _ => {
                // Control payloads are at most 125 bytes, so always fit.
                let len = header.len as usize;
                while conn.buffered().len() < len {
                    if conn.fill()? == 0 {
                        return Ok(());
                    }
                }
                let mut payload = conn.buffered()[..len].to_vec();
                conn.consume(len);
                apply_mask(&mut payload, mask, 0);
                match header.opcode {
                    OP_PING => conn
                        .stream
                        .write_all(&encode_frame(true, OP_PONG, &payload, None))?,
                    OP_CLOSE => {
                        // Echo the status code back; a 1-byte close body is
                        // malformed by definition.
                        let reply = match payload.len() {
                            0 => encode_frame(true, OP_CLOSE, &[], None),
                            1 => close_frame(CLOSE_PROTOCOL_ERROR),
                            _ => encode_frame(true, OP_CLOSE, &payload[..2], None),
                        };
                        return conn.stream.write_all(&reply);
                    }
                    _ => {} // unsolicited pong: ignore
                }
            }
        }
    }
}
