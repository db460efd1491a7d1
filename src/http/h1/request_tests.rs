//! Request heads: parsing, validation, and the head forwarded to the backend.
use super::*;
use std::net::Ipv4Addr;

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 8192,
    max_headers: 100,
    max_target_bytes: 1024,
};
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

fn forward(head: &str) -> Result<(Request, String), RequestError> {
    let mut out = Vec::new();
    let req = parse(head.as_bytes(), &LIMITS, CLIENT, true, &mut out)?.expect("complete head");
    Ok((req, String::from_utf8(out).expect("utf-8 head")))
}

#[test]
fn forwards_headers_in_order_and_strips_hop_by_hop() {
    let (req, out) = forward(
        "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\nConnection: keep-alive, X-Drop\r\n\
         Keep-Alive: timeout=5\r\nX-A: 2\r\nX-Drop: gone\r\nTE: trailers\r\nProxy-Connection: x\r\n\
         Trailer: X\r\nUpgrade: h2c\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        out,
        "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\nX-A: 2\r\n\
         X-Forwarded-For: 1.2.3.4, 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: example.com\r\n\r\n"
    );
    assert!(req.keep_alive && !req.upgrade);
    assert_eq!(req.body, BodyKind::None);
    assert_eq!(req.request_line.as_deref(), Some("GET /a?b=c HTTP/1.1"));
}

#[test]
fn framing_headers_are_normalised() {
    let (req, out) =
        forward("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
    assert_eq!(req.body, BodyKind::Length(5));
    assert_eq!(out.matches("Content-Length: 5\r\n").count(), 1);
    let (req, out) =
        forward("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(req.body, BodyKind::Chunked);
    assert!(out.contains("Transfer-Encoding: chunked\r\n"));
}

#[test]
fn refuses_ambiguous_framing() {
    let cases = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
        "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a?b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n",
        "GET http://a|b/ HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    ];
    for head in cases {
        assert!(
            matches!(forward(head), Err(RequestError::Malformed(_))),
            "{head:?} gave {:?}",
            forward(head)
        );
    }
    assert_eq!(
        forward("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err(),
        RequestError::NotImplemented("transfer coding other than chunked")
    );
    assert_eq!(
        forward("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").unwrap_err(),
        RequestError::MethodNotAllowed
    );
    assert_eq!(
        forward("GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err(),
        RequestError::VersionNotSupported
    );
    assert!(matches!(
        forward("GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        Err(RequestError::Malformed(_))
    ));
}

#[test]
fn http10_keep_alive_and_upgrade() {
    let (req, out) = forward("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!req.keep_alive);
    assert!(out.ends_with("Connection: keep-alive\r\n\r\n"));
    let (req, _) = forward("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
    assert!(req.keep_alive);
    let (req, out) =
        forward("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
    assert!(req.upgrade);
    assert!(out.ends_with("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
}

#[test]
fn absolute_form_and_asterisk_targets() {
    let (_, out) = forward("GET http://a:80/x?y HTTP/1.1\r\nHost: A:80\r\n\r\n").unwrap();
    assert!(
        out.starts_with("GET /x?y HTTP/1.1\r\nHost: A:80\r\n"),
        "{out}"
    );
    let (_, out) = forward("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
    let (_, out) = forward("GET HTTP://a:8080 HTTP/1.0\r\n\r\n").unwrap();
    assert!(
        out.starts_with("GET / HTTP/1.0\r\nHost: a:8080\r\n"),
        "{out}"
    );
    let (_, out) = forward("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
    assert!(forward("GET http://a:80/x HTTP/1.1\r\nHost: A:80\r\n\r\n").is_ok());
    assert!(forward("GET http://[::1]:80/ HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").is_ok());
    assert!(forward("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example:8080\r\n\r\n").is_ok());
    assert!(forward("GET / HTTP/1.1\r\nHost: \r\n\r\n").is_ok());
    assert!(forward("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    assert!(forward("GET * HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
}

#[test]
fn limits_map_to_their_statuses() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    assert_eq!(
        forward(&long_target).unwrap_err(),
        RequestError::TargetTooLong
    );
    assert_eq!(
        check_partial(long_target.as_bytes(), &LIMITS),
        Err(RequestError::TargetTooLong)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X: y\r\n".repeat(150)
    );
    assert_eq!(forward(&many).unwrap_err(), RequestError::HeadTooLarge);
    let big = vec![b'a'; 9000];
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.extend_from_slice(&big);
    assert_eq!(
        check_partial(&head, &LIMITS),
        Err(RequestError::HeadTooLarge)
    );
}
