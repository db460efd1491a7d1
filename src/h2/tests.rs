//! The frame layer against RFC 9113 §4 and §6: each frame type decoded, each malformation
//! refused with the code and scope the RFC gives, and what the server writes read back.

use super::error::{ErrorCode, H2Error};
use super::frame::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// Every frame in `bytes`, which must hold whole frames only.
fn all(bytes: &[u8]) -> Vec<Frame<'_>> {
    let (mut frames, mut at) = (Vec::new(), 0);
    while let Some((f, used)) = next_frame(&bytes[at..], MIN_MAX_FRAME_SIZE).unwrap() {
        frames.push(f);
        at += used;
    }
    assert_eq!(at, bytes.len(), "a partial frame left over");
    frames
}

fn one(bytes: &[u8]) -> Result<Frame<'_>, H2Error> {
    next_frame(bytes, MIN_MAX_FRAME_SIZE).map(|f| f.expect("a whole frame").0)
}

fn code(bytes: &[u8]) -> (ErrorCode, bool) {
    match one(bytes) {
        Err(H2Error::Connection { code, .. }) => (code, true),
        Err(H2Error::Stream { code, .. }) => (code, false),
        Ok(f) => panic!("expected an error, got {f:?}"),
    }
}

#[test]
fn partial_input_waits_and_a_whole_frame_is_consumed_exactly() {
    let bytes = frame(PING, 0, 0, b"12345678");
    for cut in 0..bytes.len() {
        assert_eq!(
            next_frame(&bytes[..cut], MIN_MAX_FRAME_SIZE),
            Ok(None),
            "cut {cut}"
        );
    }
    let mut two = bytes.clone();
    two.extend_from_slice(&frame(PING, FLAG_ACK, 0, b"abcdefgh"));
    let (f, used) = next_frame(&two, MIN_MAX_FRAME_SIZE).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(
        f,
        Frame::Ping {
            ack: false,
            data: *b"12345678"
        }
    );
}

#[test]
fn the_reserved_bit_of_the_stream_id_is_ignored() {
    let mut bytes = frame(WINDOW_UPDATE, 0, 3, &10u32.to_be_bytes());
    bytes[5] |= 0x80;
    assert_eq!(
        one(&bytes),
        Ok(Frame::WindowUpdate {
            stream: 3,
            increment: 10
        })
    );
}

#[test]
fn a_frame_over_the_max_frame_size_is_refused_before_its_payload_arrives() {
    let mut head = Vec::new();
    write_header(&mut head, MIN_MAX_FRAME_SIZE as usize + 1, DATA, 0, 1);
    assert_eq!(
        next_frame(&head, MIN_MAX_FRAME_SIZE).map(|_| ()),
        Err(H2Error::connection(
            ErrorCode::FrameSizeError,
            "frame larger than SETTINGS_MAX_FRAME_SIZE"
        ))
    );
}

#[test]
fn data_and_headers_lose_their_padding_and_priority() {
    let padded = frame(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, b"\x03abc\0\0\0");
    assert_eq!(
        one(&padded),
        Ok(Frame::Data {
            stream: 1,
            data: b"abc",
            end_stream: true,
            flow_len: 7
        })
    );
    let with_priority = frame(
        HEADERS,
        FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_PADDED,
        5,
        b"\x01\x00\x00\x00\x03\x10block\0",
    );
    assert_eq!(
        one(&with_priority),
        Ok(Frame::Headers {
            stream: 5,
            fragment: b"block",
            end_stream: false,
            end_headers: true
        })
    );
}

#[test]
fn malformed_frames_get_the_codes_rfc_9113_gives() {
    use ErrorCode::*;
    let cases: Vec<(Vec<u8>, ErrorCode, bool, &str)> = vec![
        (
            frame(DATA, 0, 0, b"x"),
            ProtocolError,
            true,
            "DATA on stream 0",
        ),
        (
            frame(DATA, FLAG_PADDED, 1, b"\x05abc"),
            ProtocolError,
            true,
            "padding too long",
        ),
        (
            frame(DATA, FLAG_PADDED, 1, b""),
            FrameSizeError,
            true,
            "no pad length",
        ),
        (
            frame(HEADERS, 0, 0, b""),
            ProtocolError,
            true,
            "HEADERS on stream 0",
        ),
        (
            frame(HEADERS, FLAG_PRIORITY, 3, b"\x00\x00\x00\x03\x10"),
            ProtocolError,
            false,
            "depends on itself",
        ),
        (
            frame(PRIORITY, 0, 1, b"1234"),
            FrameSizeError,
            false,
            "PRIORITY of 4 bytes",
        ),
        (
            frame(PRIORITY, 0, 0, b"12345"),
            ProtocolError,
            true,
            "PRIORITY on stream 0",
        ),
        (
            frame(RST_STREAM, 0, 1, b"123"),
            FrameSizeError,
            true,
            "RST_STREAM of 3 bytes",
        ),
        (
            frame(RST_STREAM, 0, 0, b"1234"),
            ProtocolError,
            true,
            "RST_STREAM on stream 0",
        ),
        (
            frame(SETTINGS, 0, 1, b""),
            ProtocolError,
            true,
            "SETTINGS on a stream",
        ),
        (
            frame(SETTINGS, FLAG_ACK, 0, b"\0\x01\0\0\0\0"),
            FrameSizeError,
            true,
            "SETTINGS ACK with payload",
        ),
        (
            frame(SETTINGS, 0, 0, b"\0\x01\0\0\0"),
            FrameSizeError,
            true,
            "SETTINGS of 5 bytes",
        ),
        (
            frame(SETTINGS, 0, 0, b"\0\x02\0\0\0\x02"),
            ProtocolError,
            true,
            "ENABLE_PUSH 2",
        ),
        (
            frame(SETTINGS, 0, 0, b"\0\x04\x80\0\0\0"),
            FlowControlError,
            true,
            "INITIAL_WINDOW_SIZE 2^31",
        ),
        (
            frame(SETTINGS, 0, 0, b"\0\x05\0\0\x3f\xff"),
            ProtocolError,
            true,
            "MAX_FRAME_SIZE 16383",
        ),
        (
            frame(SETTINGS, 0, 0, b"\0\x05\x01\0\0\0"),
            ProtocolError,
            true,
            "MAX_FRAME_SIZE 2^24",
        ),
        (
            frame(PUSH_PROMISE, 0, 1, b"\0\0\0\x02"),
            ProtocolError,
            true,
            "PUSH_PROMISE from a client",
        ),
        (
            frame(PING, 0, 0, b"1234567"),
            FrameSizeError,
            true,
            "PING of 7 bytes",
        ),
        (
            frame(PING, 0, 1, b"12345678"),
            ProtocolError,
            true,
            "PING on a stream",
        ),
        (
            frame(GOAWAY, 0, 0, b"1234567"),
            FrameSizeError,
            true,
            "GOAWAY of 7 bytes",
        ),
        (
            frame(GOAWAY, 0, 1, b"12345678"),
            ProtocolError,
            true,
            "GOAWAY on a stream",
        ),
        (
            frame(WINDOW_UPDATE, 0, 0, b"\0\0\0"),
            FrameSizeError,
            true,
            "WINDOW_UPDATE of 3 bytes",
        ),
        (
            frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
            ProtocolError,
            true,
            "WINDOW_UPDATE of 0 on the connection",
        ),
        (
            frame(WINDOW_UPDATE, 0, 7, b"\x80\0\0\0"),
            ProtocolError,
            false,
            "WINDOW_UPDATE of 0 on a stream",
        ),
        (
            frame(CONTINUATION, 0, 0, b""),
            ProtocolError,
            true,
            "CONTINUATION on stream 0",
        ),
    ];
    for (bytes, want, connection, what) in cases {
        assert_eq!(code(&bytes), (want, connection), "{what}");
    }
}

#[test]
fn settings_unknown_types_and_goaway_decode() {
    let f = frame(SETTINGS, 0, 0, b"\0\x03\0\0\0\x64\0\x09\0\0\0\x01");
    let Ok(Frame::Settings {
        ack: false,
        payload,
    }) = one(&f)
    else {
        panic!("settings");
    };
    let got: Vec<Setting> = settings(payload).collect();
    assert_eq!(
        got,
        [
            Setting {
                id: SETTINGS_MAX_CONCURRENT_STREAMS,
                value: 100
            },
            // Unknown identifiers are passed on, to be ignored.
            Setting { id: 9, value: 1 },
        ]
    );
    assert_eq!(
        one(&frame(0xfa, 0xff, 9, b"anything")),
        Ok(Frame::Unknown { kind: 0xfa })
    );
    assert_eq!(
        one(&frame(GOAWAY, 0, 0, b"\0\0\0\x07\0\0\0\x0bcalm")),
        Ok(Frame::GoAway {
            last_stream: 7,
            code: 0xb,
            debug: b"calm"
        })
    );
}

#[test]
fn what_the_server_writes_reads_back() {
    let mut out = Vec::new();
    write_settings(
        &mut out,
        &[Setting {
            id: SETTINGS_MAX_CONCURRENT_STREAMS,
            value: 100,
        }],
    );
    write_settings_ack(&mut out);
    write_ping_ack(&mut out, b"pingpong");
    write_rst_stream(&mut out, 3, ErrorCode::Cancel);
    write_window_update(&mut out, 0, 65_535);
    write_goaway(&mut out, 5, ErrorCode::NoError, b"");
    let frames = all(&out);
    assert_eq!(frames.len(), 6);
    assert_eq!(
        frames[2],
        Frame::Ping {
            ack: true,
            data: *b"pingpong"
        }
    );
    assert_eq!(
        frames[3],
        Frame::RstStream {
            stream: 3,
            code: ErrorCode::Cancel as u32
        }
    );
    assert_eq!(
        frames[4],
        Frame::WindowUpdate {
            stream: 0,
            increment: 65_535
        }
    );
    assert_eq!(
        frames[5],
        Frame::GoAway {
            last_stream: 5,
            code: 0,
            debug: b""
        }
    );
}

#[test]
fn long_header_blocks_and_bodies_are_split_at_the_peers_frame_size() {
    let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let mut out = Vec::new();
    write_headers(&mut out, 1, &block, true, MIN_MAX_FRAME_SIZE);
    let mut joined = Vec::new();
    let mut kinds = Vec::new();
    for f in all(&out) {
        match f {
            Frame::Headers {
                fragment,
                end_stream,
                end_headers,
                ..
            } => {
                assert!(end_stream && !end_headers);
                joined.extend_from_slice(fragment);
                kinds.push("H");
            }
            Frame::Continuation {
                fragment,
                end_headers,
                ..
            } => {
                joined.extend_from_slice(fragment);
                kinds.push(if end_headers { "C!" } else { "C" });
            }
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(kinds, ["H", "C", "C!"]);
    assert_eq!(joined, block);

    let mut out = Vec::new();
    write_data(&mut out, 3, &block, true, MIN_MAX_FRAME_SIZE);
    let (mut total, mut ends) = (0, 0);
    for f in all(&out) {
        let Frame::Data {
            data, end_stream, ..
        } = f
        else {
            panic!("{f:?}")
        };
        total += data.len();
        ends += usize::from(end_stream);
    }
    assert_eq!((total, ends), (block.len(), 1));
    let mut empty = Vec::new();
    write_data(&mut empty, 3, b"", true, MIN_MAX_FRAME_SIZE);
    assert_eq!(
        one(&empty),
        Ok(Frame::Data {
            stream: 3,
            data: b"",
            end_stream: true,
            flow_len: 0
        })
    );
}
