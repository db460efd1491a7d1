//! PROXY protocol on the listener: a trusted L4 proxy's header names the client that
//! X-Forwarded-For reports; nobody else can choose that address.

use std::io::Write;

use crate::support::*;

fn trusting(nets: &[&str]) -> impl FnOnce(&mut lb::config::Config) {
    let nets: Vec<ipnet::IpNet> = nets
        .iter()
        .map(|n| {
            n.parse().unwrap_or_else(|_| {
                ipnet::IpNet::from(n.parse::<std::net::IpAddr>().expect("address"))
            })
        })
        .collect();
    move |c| c.proxy_protocol_from = nets
}

#[test]
fn v1_header_from_a_trusted_proxy_sets_the_client() {
    let b = DemoBackend::start("b");
    let proxy = Proxy::start_with(vec![b.config()], trusting(&["127.0.0.0/8"]));
    let mut s = connect(proxy.addr);
    s.write_all(
        b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 80\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .expect("write");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    let (head, _) = echo_parts(&r);
    assert_eq!(field_values(&head, "x-forwarded-for"), ["203.0.113.7"]);
    // The header comes once per connection: the next request keeps the client.
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
        .expect("write");
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert_eq!(
        field_values(&head, "x-forwarded-for"),
        ["1.1.1.1, 203.0.113.7"]
    );
}

#[test]
fn v2_header_from_a_trusted_proxy_sets_the_client() {
    let b = DemoBackend::start("b");
    let proxy = Proxy::start_with(vec![b.config()], trusting(&["127.0.0.1"]));
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 20, 10, 0, 0, 1, 0x30, 0x39, 0, 80,
    ]);
    let mut s = connect(proxy.addr);
    s.write_all(&header).expect("write");
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let (head, _) = echo_parts(&read_response(&mut s, false));
    assert_eq!(field_values(&head, "x-forwarded-for"), ["198.51.100.20"]);
}

#[test]
fn a_trusted_peer_without_a_header_is_refused() {
    let (backend, recorded) = recording_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let proxy = Proxy::start_with(vec![backend.config("r")], trusting(&["127.0.0.0/8"]));
    let r = roundtrip(proxy.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-lb-error"), Some("bad-proxy-header"));
    assert!(recorded.lock().expect("lock").is_empty());
}

#[test]
fn an_untrusted_peer_cannot_send_a_header() {
    let (backend, recorded) = recording_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let proxy = Proxy::start_with(vec![backend.config("r")], trusting(&["10.0.0.0/8"]));
    let r = roundtrip(
        proxy.addr,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    assert!(recorded.lock().expect("lock").is_empty());
    // A plain request from it is served as usual.
    let r = roundtrip(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}
