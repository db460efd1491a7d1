//! HTTP/1.1 semantics through the proxy, as a client and a backend see them: methods and
//! targets, header forwarding, body framing both ways, keep-alive, pipelining, 100-continue,
//! backend connection reuse, round-robin, slow clients and big heads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;

fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("write request");
}

/// One demo backend behind a fresh proxy.
fn single() -> (DemoBackend, Proxy) {
    let b = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b]);
    (b, proxy)
}

/// A chunked encoding of `body` in pieces of `size` bytes, with an extension on the first chunk
/// and a trailer field at the end.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, piece) in body.chunks(size).enumerate() {
        if i == 0 {
            out.extend_from_slice(format!("{:X};ext=\"v\"\r\n", piece.len()).as_bytes());
        } else {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    out
}

// ---- 1. methods and targets ------------------------------------------------------------------

#[test]
fn every_method_reaches_the_backend_with_its_target_and_query() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    for (i, method) in [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "MKCOL",
    ]
    .into_iter()
    .enumerate()
    {
        let target = format!("/echo/{method}/x.y?n={i}&q=a%20b&empty=&flag");
        let body = format!("body of {method}");
        let has_body = matches!(method, "POST" | "PUT" | "PATCH");
        let request = if has_body {
            format!(
                "{method} {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n")
        };
        send(&mut s, request.as_bytes());
        let resp = read_response(&mut s, false);
        let (head, got_body) = echo_parts(&resp);
        let request_line = head.split("\r\n").next().unwrap_or("");
        assert_eq!(request_line, format!("{method} {target} HTTP/1.1"));
        if has_body {
            assert_eq!(got_body, body.as_bytes(), "{method}");
            assert_eq!(
                field_values(&head, "content-length"),
                [body.len().to_string()]
            );
        } else {
            assert!(got_body.is_empty(), "{method}");
        }
        assert_eq!(resp.backend(), "b1");
    }
}

#[test]
fn absolute_form_target_reaches_the_backend() {
    let (_b, proxy) = single();
    let resp = roundtrip(
        proxy.addr,
        b"GET http://h.example/echo/abs?x=1 HTTP/1.1\r\nHost: h.example\r\n\r\n",
    );
    let (head, _) = echo_parts(&resp);
    // A backend is an origin server: it gets origin-form (RFC 9112 §3.2.1).
    assert!(head.starts_with("GET /echo/abs?x=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(field_values(&head, "host"), ["h.example"]);
}

#[test]
fn options_asterisk_is_forwarded_as_is() {
    let (backend, recorded) = recording_backend(
        b"HTTP/1.1 200 OK\r\nAllow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    send(&mut s, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
    // The connection goes on after it.
    send(&mut s, b"OPTIONS /x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 200);
    let heads = recorded.lock().expect("lock").clone();
    assert_eq!(heads.len(), 2);
    assert!(heads[0].starts_with(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n"));
    assert!(heads[1].starts_with(b"OPTIONS /x HTTP/1.1\r\n"));
}

// ---- 2. headers ------------------------------------------------------------------------------

#[test]
fn end_to_end_headers_are_forwarded_in_order_with_duplicates() {
    let (_b, proxy) = single();
    let resp = roundtrip(
        proxy.addr,
        b"GET /echo HTTP/1.1\r\nHost: example.test:8080\r\nX-A: 1\r\nUser-Agent: t/1\r\n\
          Cookie: a=1\r\nX-A: 2\r\nAccept: */*\r\nCookie: b=2\r\nx-lower: MiXeD Case value\r\n\
          X-Empty:\r\nX-A: 3\r\n\r\n",
    );
    let (head, _) = echo_parts(&resp);
    assert_eq!(
        head,
        "GET /echo HTTP/1.1\r\nHost: example.test:8080\r\nX-A: 1\r\nUser-Agent: t/1\r\n\
         Cookie: a=1\r\nX-A: 2\r\nAccept: */*\r\nCookie: b=2\r\nx-lower: MiXeD Case value\r\n\
         X-Empty: \r\nX-A: 3\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: example.test:8080\r\n\r\n"
    );
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let (_b, proxy) = single();
    let resp = roundtrip(
        proxy.addr,
        b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private\r\nX-Keep: 1\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          Trailer: X-Checksum\r\nUpgrade: h2c\r\nX-Private: secret\r\nconnection: X-Other\r\n\
          X-Other: also secret\r\nX-Keep: 2\r\n\r\n",
    );
    let (head, _) = echo_parts(&resp);
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "x-private",
        "x-other",
    ] {
        assert!(
            field_values(&head, name).is_empty(),
            "{name} was forwarded: {head}"
        );
    }
    assert_eq!(field_values(&head, "x-keep"), ["1", "2"]);
    assert_eq!(field_values(&head, "host"), ["h"]);
    // The client asked to keep the connection: the answer must not close it.
    assert_eq!(resp.header("connection"), None);
}

#[test]
fn x_forwarded_headers_are_appended_or_set() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    send(
        &mut s,
        b"GET /echo HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 1.2.3.4\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    );
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert_eq!(
        field_values(&head, "x-forwarded-for"),
        ["1.2.3.4, 127.0.0.1"]
    );
    assert_eq!(field_values(&head, "x-forwarded-proto"), ["http"]);
    assert_eq!(field_values(&head, "x-forwarded-host"), ["public.example"]);

    // Several X-Forwarded-For lines are one list: the proxy appends to the whole of it.
    send(
        &mut s,
        b"GET /echo HTTP/1.1\r\nHost: h2\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
          X-Forwarded-For: 10.0.0.3\r\n\r\n",
    );
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert_eq!(
        field_values(&head, "x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );

    send(&mut s, b"GET /echo HTTP/1.1\r\nHost: plain\r\n\r\n");
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert_eq!(field_values(&head, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(field_values(&head, "x-forwarded-proto"), ["http"]);
    assert_eq!(field_values(&head, "x-forwarded-host"), ["plain"]);
}

#[test]
fn response_headers_keep_order_and_lose_hop_by_hop() {
    let (backend, _) = recording_backend(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Hop: drop me\r\nConnection: X-Hop\r\n\
          Keep-Alive: timeout=5\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\nVary: A\r\n\
          Vary: B\r\n\r\nok",
    );
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    send(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    let names: Vec<&str> = resp.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Set-Cookie", "Set-Cookie", "Content-Length", "Vary", "Vary"]
    );
    assert_eq!(resp.headers[0].1, "a=1");
    assert_eq!(resp.headers[1].1, "b=2");
    assert_eq!(resp.headers[4].1, "B");
}

// ---- 3. bodies -------------------------------------------------------------------------------

#[test]
fn request_bodies_by_length_and_chunked_reach_the_backend() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    let body: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();

    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    send(&mut s, &req);
    let (head, got) = echo_parts(&read_response(&mut s, false));
    assert!(got == body, "length-delimited body differs");
    assert_eq!(
        field_values(&head, "content-length"),
        [body.len().to_string()]
    );
    assert!(field_values(&head, "transfer-encoding").is_empty());

    let mut req = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, 4093));
    send(&mut s, &req);
    let (head, got) = echo_parts(&read_response(&mut s, false));
    assert!(got == body, "chunked body differs");
    assert_eq!(field_values(&head, "transfer-encoding"), ["chunked"]);
    assert!(field_values(&head, "content-length").is_empty());

    // An empty chunked body and an explicit zero length.
    send(
        &mut s,
        b"PUT /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          PUT /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    );
    let mut pending = Vec::new();
    for _ in 0..2 {
        let (_, got) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(got.is_empty());
    }
}

#[test]
fn chunked_request_reaches_the_backend_byte_for_byte() {
    // Extensions and trailers are the client's: they pass untouched.
    let received: Recorded = Default::default();
    let keep = Arc::clone(&received);
    let body = b"4;a=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 9\r\nX-Other: y\r\n\r\n";
    let backend = ScriptedBackend::start(move |mut s, _| {
        let head = read_head(&mut s);
        let mut rest = Vec::new();
        let mut byte = [0u8; 1];
        while !rest.ends_with(b"\r\nX-Other: y\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => rest.push(byte[0]),
                _ => return,
            }
        }
        keep.lock().expect("lock").extend([head, rest]);
        let _ = s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut request =
        b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(body);
    let resp = roundtrip(proxy.addr, &request);
    assert_eq!(resp.status, 201);
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 2);
    let head = String::from_utf8_lossy(&got[0]).into_owned();
    assert_eq!(field_values(&head, "transfer-encoding"), ["chunked"]);
    assert_eq!(got[1], body);
}

#[test]
fn large_uploads_arrive_intact() {
    let (_b, proxy) = single();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let mut s = connect(proxy.addr);
    let uploads = [
        (
            format!(
                "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.clone(),
        ),
        (
            b"POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            chunked(&body, 65_000),
        ),
    ];
    for (head, encoded) in uploads {
        // Written from another thread: the proxy may answer only after it has all of it.
        let mut writer = s.try_clone().expect("clone");
        let t = std::thread::spawn(move || {
            writer.write_all(&head).expect("head");
            writer.write_all(&encoded).expect("body");
        });
        let resp = read_response(&mut s, false);
        t.join().expect("writer");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("x-received-bytes"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(
            resp.header("x-received-sum"),
            Some(sum.to_string().as_str())
        );
    }
}

#[test]
fn response_bodies_by_length_chunked_and_close() {
    let (_b, proxy) = single();
    let n = 300_000;
    let want = pattern(n);
    let mut s = connect(proxy.addr);

    send(
        &mut s,
        format!("GET /bytes/{n} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.header("content-length"), Some(n.to_string().as_str()));
    assert!(resp.body == want, "length-delimited body differs");
    assert_eq!(resp.header("connection"), None);

    send(
        &mut s,
        format!("GET /bytes/{n}?chunked=1 HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.header("content-length"), None);
    assert!(resp.body == want, "chunked body differs");
    assert_eq!(resp.header("connection"), None);

    // Still the same connection: a close-delimited body can only end by closing it.
    send(
        &mut s,
        format!("GET /bytes/{n}?close=1 HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("transfer-encoding"), None);
    assert!(resp.body == want, "close-delimited body differs");
    // read_response read to the end of the stream: the proxy did close.
    assert_closed(&mut s);
}

#[test]
fn zero_length_bodies_of_every_framing() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    send(
        &mut s,
        b"GET /bytes/0 HTTP/1.1\r\nHost: h\r\n\r\nGET /bytes/0?chunked=1 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /echo?last HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let a = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(a.header("content-length"), Some("0"));
    let b = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(b.header("transfer-encoding"), Some("chunked"));
    assert!(a.body.is_empty() && b.body.is_empty());
    let (head, _) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
    assert!(head.starts_with("GET /echo?last HTTP/1.1\r\n"));

    send(&mut s, b"GET /bytes/0?close=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    let c = read_response_buffered(&mut s, &mut pending, false);
    assert_eq!(c.status, 200);
    assert_eq!(c.header("connection"), Some("close"));
    assert!(c.body.is_empty());
}

#[test]
fn response_followed_at_once_by_the_backend_closing_is_complete() {
    // Many servers answer `Connection: close` and close in the same breath: the close arrives
    // with, or right behind, the last bytes of the response.
    let responses: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello world",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    ];
    let backend = ScriptedBackend::start(move |mut s, n| {
        if read_head(&mut s).is_empty() {
            return;
        }
        // One write, then the close: FIN right behind the data.
        let _ = s.write_all(responses[n % responses.len()]);
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    for n in 0..40 {
        send(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let resp = read_response(&mut s, false);
        if n % 4 == 3 {
            assert_eq!(resp.status, 204, "request {n}");
        } else {
            assert_eq!(resp.status, 200, "request {n}: {}", resp.text());
            assert_eq!(resp.body, b"hello world", "request {n}");
        }
        // The backend's close is not the client's: its connection goes on.
        assert_eq!(resp.header("connection"), None, "request {n}");
    }
    assert_eq!(backend.connection_count(), 40);
}

#[test]
fn chunked_response_trailers_reach_the_client() {
    let (backend, _) = recording_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
          5;note=first\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\nX-More: 1\r\n\r\n",
    );
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    send(
        &mut s,
        b"GET /t HTTP/1.1\r\nHost: h\r\n\r\nGET /t HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let all = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&all);
    // The body, extension and trailers pass byte for byte, twice: the trailers did not leak
    // into the next response.
    let body =
        "5;note=first\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\nX-More: 1\r\n\r\n";
    assert_eq!(text.matches(body).count(), 2, "{text}");
    assert!(text.ends_with(body), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    let first_end = text.find(body).expect("first body") + body.len();
    assert!(
        text[..first_end].contains("Transfer-Encoding: chunked\r\n"),
        "{text}"
    );
    assert!(!text[..first_end].contains("Connection"), "{text}");
}

#[test]
fn response_with_length_and_chunked_is_read_as_chunked() {
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and a proxy must drop the
    // Content-Length before forwarding. The Content-Length here would cut the body short.
    let (backend, _) = recording_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\n0123456789\r\n0\r\n\r\n",
    );
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    send(
        &mut s,
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    for _ in 0..2 {
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-length"), None);
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert_eq!(resp.body, b"0123456789");
    }
}

#[test]
fn early_hints_precede_the_final_response() {
    let (backend, _) = recording_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload; as=script\r\n\r\n\
          HTTP/1.1 200 OK\r\nLink: </style.css>; rel=preload\r\nContent-Length: 5\r\n\r\nhello",
    );
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    for _ in 0..2 {
        send(&mut s, b"GET /page HTTP/1.1\r\nHost: h\r\n\r\n");
        let hint = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(hint.status, 103);
        assert_eq!(
            hint.header("link"),
            Some("</style.css>; rel=preload; as=style")
        );
        let hint = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(hint.status, 103);
        assert_eq!(
            hint.header("link"),
            Some("</app.js>; rel=preload; as=script")
        );
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"hello");
        assert!(pending.is_empty());
    }

    // An HTTP/1.0 client cannot take interim responses: it gets the final one only.
    let mut s = connect(proxy.addr);
    send(&mut s, b"GET /page HTTP/1.0\r\n\r\n");
    let all = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert!(!text.contains("103"), "{text}");
}

// ---- 4. responses without a body -------------------------------------------------------------

#[test]
fn head_responses_have_no_body_and_the_connection_goes_on() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    for target in ["/bytes/100", "/bytes/100?chunked=1", "/echo", "/bytes/100"] {
        send(
            &mut s,
            format!("HEAD {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
        );
        let resp = read_response_buffered(&mut s, &mut pending, true);
        assert_eq!(resp.status, 200, "{target}");
        if target == "/bytes/100" {
            assert_eq!(resp.header("content-length"), Some("100"));
        }
        if target.contains("chunked") {
            assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        }
        // The next response starts right where this head ended: nothing extra came.
        send(
            &mut s,
            format!("GET /echo?after={target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
        );
        let next = read_response_buffered(&mut s, &mut pending, false);
        let (head, _) = echo_parts(&next);
        assert!(
            head.starts_with(&format!("GET /echo?after={target} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(pending.is_empty());
    }
}

#[test]
fn head_of_a_close_delimited_response_keeps_the_connection() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    send(
        &mut s,
        b"HEAD /bytes/100?close=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let resp = read_response(&mut s, true);
    assert_eq!(resp.status, 200);
    send(&mut s, b"GET /bytes/10 HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.body, pattern(10));
}

#[test]
fn no_body_after_204_and_304() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    for code in [204, 304, 204, 304] {
        // Pipelined behind the bodiless response: any stray byte would corrupt the echo.
        send(
            &mut s,
            format!(
                "GET /status/{code} HTTP/1.1\r\nHost: h\r\n\r\nGET /echo?after={code} HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            .as_bytes(),
        );
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(resp.status, code);
        assert_eq!(resp.header("content-length"), None);
        assert_eq!(resp.header("transfer-encoding"), None);
        let (head, _) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(head.starts_with(&format!("GET /echo?after={code} HTTP/1.1\r\n")));
    }
}

#[test]
fn bodiless_responses_ignore_their_length_headers() {
    // A 304 may carry the Content-Length of the representation, and a HEAD response the
    // Content-Length or chunked coding a GET would have had: none of them has a body, so the
    // next response starts right after the head.
    let backend = ScriptedBackend::start(|mut s, _| loop {
        let head = read_head(&mut s);
        if head.is_empty() {
            return;
        }
        let reply: &[u8] = if head.starts_with(b"GET /304") {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n"
        } else if head.starts_with(b"HEAD /length") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
        } else if head.starts_with(b"HEAD /chunked") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
        };
        if s.write_all(reply).is_err() {
            return;
        }
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    for (request, status, is_head) in [
        ("GET /304", 304, false),
        ("HEAD /length", 200, true),
        ("HEAD /chunked", 200, true),
    ] {
        send(
            &mut s,
            format!("{request} HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
                .as_bytes(),
        );
        let resp = read_response_buffered(&mut s, &mut pending, is_head);
        assert_eq!(resp.status, status, "{request}");
        let next = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(next.body, b"next", "{request}");
        assert!(pending.is_empty(), "{request}");
    }
    let resp = {
        send(&mut s, b"GET /304 HTTP/1.1\r\nHost: h\r\n\r\n");
        read_response_buffered(&mut s, &mut pending, false)
    };
    assert_eq!(resp.header("content-length"), Some("1234"));
    assert_eq!(resp.header("etag"), Some("\"v1\""));
    // One backend connection carried all of it.
    assert_eq!(backend.connection_count(), 1);
}

// ---- 5. client keep-alive --------------------------------------------------------------------

#[test]
fn a_hundred_requests_on_one_client_connection() {
    let (b, proxy) = single();
    let mut s = connect(proxy.addr);
    for i in 0..100 {
        let req = if i % 2 == 0 {
            format!("GET /echo?i={i} HTTP/1.1\r\nHost: h\r\n\r\n")
        } else {
            format!("POST /echo?i={i} HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        };
        send(&mut s, req.as_bytes());
        let resp = read_response(&mut s, false);
        let (head, _) = echo_parts(&resp);
        assert!(
            head.contains(&format!("?i={i} HTTP/1.1\r\n")),
            "{i}: {head}"
        );
        assert_eq!(resp.header("connection"), None);
    }
    assert_eq!(b.stats().1, 100);
}

#[test]
fn http10_without_keep_alive_is_closed_after_the_response() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    send(&mut s, b"GET /bytes/1000 HTTP/1.0\r\n\r\n");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, pattern(1000));
    assert_eq!(resp.header("connection"), Some("close"));
    assert_closed(&mut s);
}

#[test]
fn http10_with_keep_alive_stays_open() {
    let (b, proxy) = single();
    let mut s = connect(proxy.addr);
    for i in 0..3 {
        send(
            &mut s,
            format!("GET /echo?i={i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        );
        let resp = read_response(&mut s, false);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        let (head, _) = echo_parts(&resp);
        assert!(
            head.starts_with(&format!("GET /echo?i={i} HTTP/1.0\r\n")),
            "{head}"
        );
        // Without Host, there is nothing to put in X-Forwarded-Host.
        assert!(field_values(&head, "x-forwarded-host").is_empty());
    }
    // A chunked answer cannot go to a 1.0 client: the backend closes-delimits it, so the
    // connection ends after it.
    send(
        &mut s,
        b"GET /bytes/5000?chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.body, pattern(5000));
    assert_closed(&mut s);
    assert_eq!(b.stats().1, 4);
}

#[test]
fn http11_connection_close_closes_after_the_response() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    // A request pipelined after the closing one is not answered.
    send(
        &mut s,
        b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /echo?no HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let all = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
    assert!(text.contains("Connection: close\r\n"));
    assert!(!text.contains("?no"));
}

#[test]
fn half_closed_client_still_gets_its_responses() {
    let (b, proxy) = single();
    // What `printf '...' | nc -N` does: send everything, half-close, read.
    let mut s = connect(proxy.addr);
    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
    );
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (_, body) = echo_parts(&read_response(&mut s, false));
    assert_eq!(body, b"body");
    assert_closed(&mut s);

    // Pipelined requests before the half-close are all answered, in order.
    let mut s = connect(proxy.addr);
    send(
        &mut s,
        b"GET /echo?n=1 HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /echo?n=2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
          GET /echo?n=3 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut pending = Vec::new();
    for n in 1..=3 {
        let (head, _) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(
            head.contains(&format!("/echo?n={n} HTTP/1.1\r\n")),
            "{head}"
        );
    }
    assert!(pending.is_empty());
    assert_closed(&mut s);

    // A request cut short by the half-close is not answered; the connection just ends.
    for partial in [
        &b"GET /echo HTTP/1.1\r\nHost:"[..],
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nonly5",
    ] {
        let mut s = connect(proxy.addr);
        send(&mut s, partial);
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        assert_closed(&mut s);
    }
    // The four complete requests arrived. The cut-short POST's head may have been streamed on
    // before the proxy saw its body run out; the cut-short head never was.
    let requests = b.stats().1;
    assert!((4..=5).contains(&requests), "{requests}");
}

// ---- 6. pipelining ---------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    let mut all = Vec::new();
    for n in 1..=5 {
        all.extend_from_slice(format!("GET /echo?n={n} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    send(&mut s, &all);
    let mut pending = Vec::new();
    for n in 1..=5 {
        let (head, _) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(
            head.starts_with(&format!("GET /echo?n={n} HTTP/1.1\r\n")),
            "{n}: {head}"
        );
    }
    assert!(pending.is_empty());
}

#[test]
fn a_thousand_pipelined_requests_overflowing_the_buffer() {
    let (b, proxy) = single();
    let mut s = connect(proxy.addr);
    let mut all = Vec::new();
    for n in 0..1000 {
        all.extend_from_slice(format!("GET /echo?n={n} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    // More than one buffer's worth (32 KiB by default): the proxy must stop reading, not drop.
    assert!(all.len() > 32_768);
    let mut writer = s.try_clone().expect("clone");
    let t = std::thread::spawn(move || writer.write_all(&all).expect("write"));
    let mut pending = Vec::new();
    for n in 0..1000 {
        let (head, _) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(
            head.starts_with(&format!("GET /echo?n={n} HTTP/1.1\r\n")),
            "{n}: {head}"
        );
    }
    t.join().expect("writer");
    assert_eq!(b.stats(), (1, 1000));
}

#[test]
fn pipelined_requests_with_bodies_are_answered_in_order() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    let mut all = Vec::new();
    let bodies: Vec<Vec<u8>> = (1..=6)
        .map(|n| format!("payload {n} ").repeat(n * 300).into_bytes())
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        let n = i + 1;
        if n % 2 == 0 {
            all.extend_from_slice(
                format!(
                    "POST /echo?n={n} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            );
            all.extend_from_slice(&chunked(body, 1000));
        } else {
            all.extend_from_slice(
                format!(
                    "POST /echo?n={n} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            all.extend_from_slice(body);
        }
        // A GET between the POSTs, so bodies end exactly where heads begin.
        all.extend_from_slice(
            format!("GET /echo?after={n} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
        );
    }
    let mut writer = s.try_clone().expect("clone");
    let t = std::thread::spawn(move || writer.write_all(&all).expect("write"));
    let mut pending = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let n = i + 1;
        let (head, got) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(
            head.starts_with(&format!("POST /echo?n={n} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(&got == body, "body {n} differs");
        let (head, got) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(
            head.starts_with(&format!("GET /echo?after={n} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(got.is_empty());
    }
    t.join().expect("writer");
}

// ---- 7. Expect: 100-continue -----------------------------------------------------------------

#[test]
fn expect_100_continue_is_relayed() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    for round in 0..2 {
        send(
            &mut s,
            b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
        );
        // The body is held back until the backend asks for it.
        let mut interim = [0u8; 25];
        s.read_exact(&mut interim).expect("100 Continue");
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "round {round}");
        send(&mut s, b"hello world");
        let resp = read_response(&mut s, false);
        let (head, body) = echo_parts(&resp);
        assert_eq!(body, b"hello world");
        assert_eq!(field_values(&head, "expect"), ["100-continue"]);
    }
    // Chunked too.
    send(
        &mut s,
        b"PUT /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 100);
    send(&mut s, b"3\r\nabc\r\n0\r\n\r\n");
    let (_, body) = echo_parts(&read_response(&mut s, false));
    assert_eq!(body, b"abc");
}

#[test]
fn final_answer_instead_of_100_continue_ends_the_exchange() {
    // The backend refuses the upload outright: the client never sends the body, so the
    // connection cannot carry another request and the proxy says so.
    let (backend, recorded) =
        recording_backend(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo large");
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    send(
        &mut s,
        b"PUT /big HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 413);
    assert_eq!(resp.body, b"too large");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_closed(&mut s);
    assert_eq!(recorded.lock().expect("lock").len(), 1);
}

// ---- 9. backend connection reuse -------------------------------------------------------------

#[test]
fn backend_connections_are_reused() {
    let (b, proxy) = single();
    let serial = |resp: &Response| {
        resp.header("x-backend-connection")
            .unwrap_or("")
            .to_string()
    };
    // Sequential requests on one client connection: the backend connection goes back to the
    // pool after each response and is taken again for the next request.
    let mut s = connect(proxy.addr);
    let mut first = None;
    for i in 0..200 {
        let req = format!("GET /echo?i={i} HTTP/1.1\r\nHost: h\r\n\r\n");
        send(&mut s, req.as_bytes());
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 200);
        let first = first.get_or_insert_with(|| serial(&resp));
        assert_eq!(
            &serial(&resp),
            first,
            "request {i} used another backend connection"
        );
    }
    // Separate client connections, closed each time, share the pool too.
    let mut serials = std::collections::HashSet::new();
    for _ in 0..50 {
        let resp = get(proxy.addr, "/bytes/10");
        assert_eq!(resp.body, pattern(10));
        serials.insert(serial(&resp));
    }
    assert!(serials.len() <= 2, "{serials:?}");
    let (connections, requests) = b.stats();
    assert_eq!(requests, 250);
    assert!(
        connections <= 3,
        "{connections} backend connections for 250 requests"
    );
    let opened = proxy
        .backends
        .in_slot(0)
        .map(|bk| bk.connections.load(Ordering::Relaxed));
    assert_eq!(opened, Some(connections));
}

#[test]
fn pooled_connection_closed_by_the_backend_is_not_used_again() {
    // Each connection answers one request, says nothing about closing, and closes. The close
    // may come before the next request (the pool drops the connection) or race with it (the
    // request is replayed on a fresh one): either way the client does not notice.
    let backend = ScriptedBackend::start(|mut s, n| {
        if read_head(&mut s).is_empty() {
            return;
        }
        let body = format!("conn {n}");
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    for n in 0..50 {
        send(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 200, "request {n}: {}", resp.text());
        assert_eq!(resp.text(), format!("conn {n}"));
        assert_eq!(backend.connection_count(), n + 1);
    }
}

#[test]
fn pooled_connection_closed_while_idle_is_not_used_again() {
    // The backend closes each connection once its response has reached the client: the
    // connection is in the pool by then, and the close reaches the proxy before the next
    // request. That includes POSTs, which could not be replayed if the dead connection were
    // picked.
    let closed: Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>> = Default::default();
    let closed_by_script = Arc::clone(&closed);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let backend = ScriptedBackend::start(move |mut s, n| {
        let head = read_head(&mut s);
        if head.is_empty() {
            return;
        }
        if head.starts_with(b"POST") {
            let mut body = [0u8; 4];
            if s.read_exact(&mut body).is_err() {
                return;
            }
        }
        let body = format!("conn {n}");
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let _ = go_rx.lock().expect("lock").recv();
        let proxy_side = s.peer_addr().expect("peer");
        drop(s);
        closed_by_script.lock().expect("lock").push(proxy_side);
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    for n in 0..20 {
        let request: &[u8] = if n % 2 == 0 {
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        } else {
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\ndata"
        };
        send(&mut s, request);
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 200, "request {n}: {}", resp.text());
        assert_eq!(resp.text(), format!("conn {n}"));
        go_tx.send(()).expect("signal");
        // Sent is not enough: the close must have arrived at the proxy's socket (it leaves
        // ESTABLISHED), or the next request could legitimately race it.
        wait_until("the close reached the proxy", || {
            let closed = closed.lock().expect("lock");
            closed.len() == n + 1 && tcp_state(closed[n], backend.addr) != Some(1)
        });
    }
    assert_eq!(backend.connection_count(), 20);
}

#[test]
fn stale_pooled_connection_is_replayed_for_idempotent_requests() {
    // Connection 0 answers one request, then reads the next and closes without an answer: what
    // a backend whose idle timeout raced our reuse does. Later connections answer normally.
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    let backend = ScriptedBackend::start(move |mut s, n| loop {
        if read_head(&mut s).is_empty() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        if n == 0 && count.load(Ordering::SeqCst) > 1 {
            return;
        }
        let body = format!("conn {n}");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(reply.as_bytes()).is_err() {
            return;
        }
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    send(&mut s, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(read_response(&mut s, false).text(), "conn 0");
    send(&mut s, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "conn 1");
    assert_eq!(received.load(Ordering::SeqCst), 3);
}

#[test]
fn non_idempotent_request_is_not_replayed() {
    // RFC 9110 §9.2.2: "A proxy MUST NOT automatically retry non-idempotent requests." The
    // backend may have acted on the POST before the connection died.
    let posts = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&posts);
    let backend = ScriptedBackend::start(move |mut s, n| {
        let mut served = 0;
        loop {
            let head = read_head(&mut s);
            if head.is_empty() {
                return;
            }
            if head.starts_with(b"POST") {
                let mut body = [0u8; 4];
                if s.read_exact(&mut body).is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
            served += 1;
            if n == 0 && served > 1 {
                // Acted on it, then died before answering.
                return;
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    send(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 200);
    send(
        &mut s,
        b"POST /order HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbuy1",
    );
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the POST was sent twice");
}

// ---- 10. round-robin -------------------------------------------------------------------------

#[test]
fn round_robin_order_is_exact() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let b3 = DemoBackend::start("b3");
    let proxy = Proxy::start(&[&b1, &b2, &b3]);
    let mut s = connect(proxy.addr);
    let names = ["b1", "b2", "b3"];
    for i in 0..300 {
        send(&mut s, b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n");
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.backend(), names[i % 3], "request {i}");
    }
    // New client connections do not restart the cycle.
    for i in 300..330 {
        let resp = get(proxy.addr, "/health");
        assert_eq!(resp.backend(), names[i % 3], "request {i}");
    }
    for b in [&b1, &b2, &b3] {
        let (connections, requests) = b.stats();
        assert_eq!(requests, 110, "{}", b.name);
        assert!(connections <= 2, "{}: {connections} connections", b.name);
    }
}

// ---- 11. slow clients ------------------------------------------------------------------------

#[test]
fn head_arriving_one_byte_at_a_time() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    s.set_nodelay(true).expect("nodelay");
    let head = b"GET /echo?slow=1 HTTP/1.1\r\nHost: slow.example\r\nX-A: 1\r\nX-B: two\r\n\r\n";
    for round in 0..2 {
        for byte in head {
            s.write_all(std::slice::from_ref(byte)).expect("byte");
            s.flush().expect("flush");
        }
        let (got, _) = echo_parts(&read_response(&mut s, false));
        assert!(
            got.starts_with(
                "GET /echo?slow=1 HTTP/1.1\r\nHost: slow.example\r\nX-A: 1\r\nX-B: two\r\n"
            ),
            "round {round}: {got}"
        );
    }
}

#[test]
fn bodies_split_across_many_writes() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    s.set_nodelay(true).expect("nodelay");
    let body: Vec<u8> = (0..2000u32).map(|i| (i % 256) as u8).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    for piece in req.chunks(7) {
        s.write_all(piece).expect("piece");
    }
    let (_, got) = echo_parts(&read_response(&mut s, false));
    assert!(got == body, "length-delimited body differs");

    // Chunked, one byte per write: the chunk framing itself is split everywhere.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body[..300], 37));
    for byte in &req {
        s.write_all(std::slice::from_ref(byte)).expect("byte");
    }
    let (_, got) = echo_parts(&read_response(&mut s, false));
    assert!(got == body[..300], "chunked body differs");
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name: state is the first, utime the 12th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("tick count"))
        .collect();
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::time::Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks_per_second)
}

#[test]
fn empty_lines_before_a_request_are_skipped_without_spinning() {
    let b = DemoBackend::start("b1");
    let backend_flag = format!("b1={}", b.addr);
    let proxy = ProxyProcess::start(&["--backend", &backend_flag, "--log-level", "warn"]);
    let pid = proxy.child.id();

    // RFC 9112 §2.2: empty lines before a request line are ignored. Here they arrive alone,
    // and the request they precede comes later.
    let mut idle = connect(proxy.addr);
    send(&mut idle, b"\r\n\r\n");

    // While that connection waits, the proxy must sit idle, not spin on it. A slow backend
    // response gives it a stretch of nothing to do; compare its CPU time with that stretch.
    let mut busy = connect(proxy.addr);
    send(&mut busy, b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(read_response(&mut busy, false).status, 200);
    let cpu_before = cpu_time(pid);
    let started = std::time::Instant::now();
    send(&mut busy, b"GET /delay/300 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(read_response(&mut busy, false).status, 200);
    let wall = started.elapsed();
    let cpu = cpu_time(pid) - cpu_before;
    assert!(
        cpu < wall / 4,
        "the proxy used {cpu:?} of CPU in {wall:?} of waiting"
    );

    send(&mut idle, b"GET /echo?late HTTP/1.1\r\nHost: h\r\n\r\n");
    let (head, _) = echo_parts(&read_response(&mut idle, false));
    assert!(head.starts_with("GET /echo?late HTTP/1.1\r\n"), "{head}");

    // The classic case: a CRLF after a POST body, before the next request.
    send(
        &mut idle,
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab\r\n\
          GET /echo?next HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let mut pending = Vec::new();
    let (_, body) = echo_parts(&read_response_buffered(&mut idle, &mut pending, false));
    assert_eq!(body, b"ab");
    let (head, _) = echo_parts(&read_response_buffered(&mut idle, &mut pending, false));
    assert!(head.starts_with("GET /echo?next HTTP/1.1\r\n"), "{head}");

    // Empty lines and then the client's half-close: nothing to answer, so the proxy closes.
    let mut quiet = connect(proxy.addr);
    send(&mut quiet, b"\r\n\r\n\n");
    quiet.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_closed(&mut quiet);
}

#[test]
fn response_arriving_one_byte_at_a_time() {
    let reply: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
        HTTP/1.1 200 OK\r\nX-Slow: yes\r\nTransfer-Encoding: chunked\r\n\r\n\
        3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";
    let backend = ScriptedBackend::start(move |mut s, _| loop {
        if read_head(&mut s).is_empty() {
            return;
        }
        let _ = s.set_nodelay(true);
        for byte in reply {
            if s.write_all(std::slice::from_ref(byte)).is_err() {
                return;
            }
        }
    });
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    let mut pending = Vec::new();
    for _ in 0..3 {
        send(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let hint = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(hint.status, 103);
        let resp = read_response_buffered(&mut s, &mut pending, false);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-slow"), Some("yes"));
        assert_eq!(resp.body, b"abc0123456789abcdef");
        assert!(pending.is_empty());
    }
    assert_eq!(backend.connection_count(), 1);
}

// ---- 12. big heads ---------------------------------------------------------------------------

#[test]
fn large_headers_near_the_limit_pass() {
    let (_b, proxy) = single();
    let mut s = connect(proxy.addr);
    // The default limit is 32768 bytes for the whole head; leave a little room.
    let prefix = "GET /echo HTTP/1.1\r\nHost: h\r\nX-Big: ";
    let value = "v".repeat(32_768 - prefix.len() - 4 - 100);
    let head = format!("{prefix}{value}\r\n\r\n");
    assert!(head.len() > 32_000);
    send(&mut s, head.as_bytes());
    let (got, _) = echo_parts(&read_response(&mut s, false));
    assert_eq!(field_values(&got, "x-big"), [value]);

    // A long target too (the default target limit is 8192).
    let target = format!("/echo?q={}", "x".repeat(8000));
    send(
        &mut s,
        format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
    );
    let (got, _) = echo_parts(&read_response(&mut s, false));
    assert!(got.starts_with(&format!("GET {target} HTTP/1.1\r\n")));

    // Exactly at the limit, with a body and a pipelined request right behind it in the same
    // write, and again split so the head's last bytes come alone.
    let prefix = "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nX-Big: ";
    let value = "w".repeat(32_768 - prefix.len() - 4);
    let head = format!("{prefix}{value}\r\n\r\n");
    assert_eq!(head.len(), 32_768);
    let mut all = head.clone().into_bytes();
    all.extend_from_slice(b"bodyGET /echo?behind HTTP/1.1\r\nHost: h\r\n\r\n");
    for split in [all.len(), 32_760] {
        let (a, b) = all.split_at(split);
        send(&mut s, a);
        s.flush().expect("flush");
        send(&mut s, b);
        let mut pending = Vec::new();
        let (got, body) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert_eq!(field_values(&got, "x-big"), [value.as_str()]);
        assert_eq!(body, b"body");
        let (got, _) = echo_parts(&read_response_buffered(&mut s, &mut pending, false));
        assert!(got.starts_with("GET /echo?behind HTTP/1.1\r\n"), "{got}");
    }
}

#[test]
fn large_response_heads_pass() {
    let cookie = "c".repeat(20_000);
    let reply: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nSet-Cookie: big={cookie}\r\n{}Content-Length: 2\r\n\r\nok",
            (0..100)
                .map(|i| format!("X-R-{i}: {i}\r\n"))
                .collect::<String>()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (backend, _) = recording_backend(reply);
    let proxy = Proxy::start_with(vec![backend.config("s1")], |_| {});
    let mut s = connect(proxy.addr);
    for _ in 0..2 {
        send(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let resp = read_response(&mut s, false);
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("set-cookie"),
            Some(format!("big={cookie}").as_str())
        );
        assert_eq!(resp.header("x-r-99"), Some("99"));
        assert_eq!(resp.body, b"ok");
    }
}

#[test]
fn ninety_headers_pass() {
    let (_b, proxy) = single();
    let mut head = String::from("GET /echo HTTP/1.1\r\nHost: h\r\n");
    for i in 0..89 {
        head.push_str(&format!("X-Header-{i}: value {i}\r\n"));
    }
    head.push_str("\r\n");
    let resp = roundtrip(proxy.addr, head.as_bytes());
    let (got, _) = echo_parts(&resp);
    let fields = head_fields(&got);
    // 90 of ours and three X-Forwarded-*.
    assert_eq!(fields.len(), 93);
    for i in 0..89 {
        assert_eq!(
            fields[i + 1],
            (format!("X-Header-{i}"), format!("value {i}"))
        );
    }
}

// ---- curl ------------------------------------------------------------------------------------

/// Runs curl with `args`; returns its stdout, asserting it succeeded.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn curl_sees_correct_responses() {
    let (b, proxy) = single();
    let base = format!("http://{}", proxy.addr);

    let out = curl(&["--include", &format!("{base}/echo?via=curl")]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("\r\n\r\nGET /echo?via=curl HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Host: {}\r\n", proxy.addr)),
        "{text}"
    );
    assert!(text.contains("User-Agent: curl/"), "{text}");

    // HEAD: curl knows no body follows and does not wait for one.
    let out = curl(&["--head", &format!("{base}/bytes/100")]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("Content-Length: 100\r\n"), "{text}");

    // Three URLs in one run share one connection.
    let out = curl(&[
        "--write-out",
        "[%{num_connects}]",
        &format!("{base}/bytes/5"),
        &format!("{base}/bytes/7?chunked=1"),
        &format!("{base}/status/204"),
        &format!("{base}/bytes/3"),
    ]);
    let mut want = pattern(5);
    want.extend_from_slice(b"[1]");
    want.extend(pattern(7));
    want.extend_from_slice(b"[0][0]");
    want.extend(pattern(3));
    want.extend_from_slice(b"[0]");
    assert_eq!(out, want, "{}", String::from_utf8_lossy(&out));

    // HTTP/1.0, and a close-delimited body.
    let out = curl(&["--http1.0", &format!("{base}/bytes/70000?close=1")]);
    assert!(out == pattern(70_000));
    assert!(b.stats().1 >= 7);
}

#[test]
fn curl_uploads() {
    let (_b, proxy) = single();
    let base = format!("http://{}", proxy.addr);
    let dir = std::env::temp_dir().join(format!("lb-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("upload.bin");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&file, &body).expect("write upload");
    let upload = format!("@{}", file.display());
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();

    // curl waits for 100 Continue up to --expect100-timeout: a proxy that did not relay it
    // would make this run out of --max-time.
    let out = curl(&[
        "--include",
        "--expect100-timeout",
        "60",
        "--header",
        "Expect: 100-continue",
        "--data-binary",
        &upload,
        &format!("{base}/sink"),
    ]);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("X-Received-Sum: {sum}\r\n")),
        "{text}"
    );

    let out = curl(&[
        "--include",
        "--header",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload,
        &format!("{base}/sink"),
    ]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("X-Received-Bytes: 200000\r\n"), "{text}");
    assert!(
        text.contains(&format!("X-Received-Sum: {sum}\r\n")),
        "{text}"
    );

    let out = curl(&[
        "--request",
        "PUT",
        "--data-binary",
        &upload,
        &format!("{base}/echo"),
    ]);
    assert!(out.ends_with(&body));
    assert!(String::from_utf8_lossy(&out).starts_with("PUT /echo HTTP/1.1\r\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
