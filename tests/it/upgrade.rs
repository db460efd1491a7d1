//! Protocol upgrades through the proxy: the WebSocket handshake, frames both ways through the
//! tunnel, and the end of the tunnel.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::*;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One final frame; masked as a client must (RFC 6455 §5.3) when `mask` is given.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one unmasked frame (what a server sends), taking bytes from `pending` first.
fn read_frame(s: &mut TcpStream, pending: &mut Vec<u8>) -> (u8, Vec<u8>) {
    let mut fill = |pending: &mut Vec<u8>, need: usize| {
        let mut chunk = [0u8; 16384];
        while pending.len() < need {
            let n = s.read(&mut chunk).expect("read frame");
            assert!(n > 0, "closed inside a frame");
            pending.extend_from_slice(&chunk[..n]);
        }
    };
    fill(pending, 2);
    assert_eq!(pending[0] & 0x80, 0x80, "fragmented frame");
    assert_eq!(pending[1] & 0x80, 0, "server frames are not masked");
    let opcode = pending[0] & 0x0F;
    let (len, header) = match pending[1] & 0x7F {
        126 => {
            fill(pending, 4);
            (usize::from(u16::from_be_bytes([pending[2], pending[3]])), 4)
        }
        127 => {
            fill(pending, 10);
            let mut n = [0u8; 8];
            n.copy_from_slice(&pending[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    fill(pending, header + len);
    let payload = pending[header..header + len].to_vec();
    pending.drain(..header + len);
    (opcode, payload)
}

const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n\
    Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nOrigin: http://ws.example\r\n\r\n";

#[test]
fn websocket_echo_through_the_tunnel() {
    let b = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b]);
    let mut s = connect(proxy.addr);
    s.write_all(HANDSHAKE).expect("handshake");
    let mut pending = Vec::new();
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("upgrade"), Some("websocket"));
    assert!(resp
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(resp.backend(), "b1");

    let mask = Some([0x12, 0x34, 0x56, 0x78]);
    s.write_all(&frame(OP_TEXT, "héllo, tunnel".as_bytes(), mask))
        .expect("text");
    assert_eq!(
        read_frame(&mut s, &mut pending),
        (OP_TEXT, "héllo, tunnel".as_bytes().to_vec())
    );

    // Bigger than any buffer on the way: the tunnel streams it both ways.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let encoded = frame(OP_BINARY, &big, Some([0xde, 0xad, 0xbe, 0xef]));
    let mut writer = s.try_clone().expect("clone");
    let t = std::thread::spawn(move || writer.write_all(&encoded).expect("binary"));
    let (op, echoed) = read_frame(&mut s, &mut pending);
    t.join().expect("writer");
    assert_eq!(op, OP_BINARY);
    assert!(echoed == big, "binary echo differs");

    // Several frames in one write come back in order.
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend(frame(OP_TEXT, format!("msg {i}").as_bytes(), mask));
    }
    burst.extend(frame(OP_PING, b"are you there", mask));
    s.write_all(&burst).expect("burst");
    for i in 0..5 {
        assert_eq!(
            read_frame(&mut s, &mut pending),
            (OP_TEXT, format!("msg {i}").into_bytes())
        );
    }
    assert_eq!(
        read_frame(&mut s, &mut pending),
        (OP_PONG, b"are you there".to_vec())
    );

    // Close: the backend answers with a close frame and ends the connection.
    s.write_all(&frame(OP_CLOSE, &1000u16.to_be_bytes(), mask))
        .expect("close");
    assert_eq!(
        read_frame(&mut s, &mut pending),
        (OP_CLOSE, 1000u16.to_be_bytes().to_vec())
    );
    assert!(pending.is_empty());
    assert_closed(&mut s);
}

#[test]
fn websocket_bytes_sent_with_the_handshake_are_not_lost() {
    let b = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b]);
    let mut s = connect(proxy.addr);
    // A client may send its first frame right behind the request, before the 101.
    let mut first = HANDSHAKE.to_vec();
    first.extend(frame(OP_TEXT, b"early", Some([1, 2, 3, 4])));
    s.write_all(&first).expect("handshake and frame");
    let mut pending = Vec::new();
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.status, 101);
    assert_eq!(
        read_frame(&mut s, &mut pending),
        (OP_TEXT, b"early".to_vec())
    );
    // The client closing its side ends the tunnel too.
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_closed(&mut s);
}

#[test]
fn refused_upgrade_is_an_ordinary_response() {
    let b = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b]);
    let mut s = connect(proxy.addr);
    // No key: the backend answers 400, and the connection stays HTTP.
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .expect("request");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("upgrade"), None);
    s.write_all(b"GET /echo?after HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("next");
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert!(head.starts_with("GET /echo?after HTTP/1.1\r\n"));

    // An upgrade the backend ignores (h2c on /echo) is answered normally, and the backend saw
    // the upgrade request with its Upgrade header.
    s.write_all(
        b"GET /echo?h2c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .expect("h2c");
    let resp = read_response(&mut s, false);
    let (head, _) = echo_parts(&resp);
    assert_eq!(field_values(&head, "upgrade"), ["h2c"]);
    assert_eq!(field_values(&head, "connection"), ["Upgrade"]);
    assert!(field_values(&head, "http2-settings").is_empty());
    s.write_all(b"GET /echo?last HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("last");
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert!(head.starts_with("GET /echo?last HTTP/1.1\r\n"));
}

#[test]
fn server_bytes_right_behind_the_101_reach_the_client() {
    // A server may speak first: its first frame can share a segment with the 101.
    let backend = ScriptedBackend::start(|mut s, _| {
        if read_head(&mut s).is_empty() {
            return;
        }
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec();
        out.extend(frame(OP_TEXT, b"welcome", None));
        if s.write_all(&out).is_err() {
            return;
        }
        // Then echo raw bytes until the client is done.
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    s.write_all(HANDSHAKE).expect("handshake");
    let mut pending = Vec::new();
    let resp = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(resp.status, 101);
    assert_eq!(
        read_frame(&mut s, &mut pending),
        (OP_TEXT, b"welcome".to_vec())
    );
    // Raw bytes both ways, whatever they are: the tunnel does not look at them.
    let raw: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mut writer = s.try_clone().expect("clone");
    let sent = raw.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent).expect("raw"));
    let mut got = std::mem::take(&mut pending);
    let mut chunk = [0u8; 16384];
    while got.len() < raw.len() {
        let n = s.read(&mut chunk).expect("read echo");
        assert!(n > 0, "tunnel closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    t.join().expect("writer");
    assert!(got == raw, "tunnel changed the bytes");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_closed(&mut s);
}
