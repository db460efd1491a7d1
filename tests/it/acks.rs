//! Packets saved on the client's side: with `tcp_smart_accept` the ACK of a request that came
//! whole rides with its response (and a client whose request comes in parts is ACKed at once so
//! that it can send the rest), and the last response of a closing connection carries the FIN.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Segments the client's socket has received so far (SYN-ACK included).
fn segments_in(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

/// For each of `tries` new connections, the segments it received up to the end of one
/// keep-alive response (so no FIN is among them).
fn segments_per_exchange(proxy: &Proxy, tries: usize) -> Vec<u32> {
    (0..tries)
        .map(|_| {
            let mut s = connect(proxy.addr);
            s.set_nodelay(true).expect("nodelay");
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("write");
            let r = read_response(&mut s, false);
            assert_eq!((r.status, r.backend()), (200, "b1"));
            segments_in(&s)
        })
        .collect()
}

#[test]
fn a_whole_request_is_acked_by_its_response() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b1]);
    // SYN-ACK and the response; a separate ACK of the request would make three. The kernel's
    // delayed-ACK timer (40 ms) sends one anyway if the response is slower than that, which a
    // loaded machine may cause now and then: one connection in five must show it.
    assert_one_saw_two(&segments_per_exchange(&proxy, 5));
}

/// At least one of the connections received just two segments.
fn assert_one_saw_two(segments_per_connection: &[u32]) {
    assert!(
        segments_per_connection.contains(&2),
        "segments received per connection: {segments_per_connection:?}"
    );
}

#[test]
fn without_tcp_smart_accept_the_request_gets_an_ack_of_its_own() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with(vec![b1.config()], |c| c.tcp_smart_accept = false);
    let seen = segments_per_exchange(&proxy, 3);
    assert!(
        seen.iter().all(|&n| n >= 3),
        "segments received per exchange: {seen:?}"
    );
}

/// The fastest of five exchanges whose request a client with Nagle's algorithm on (no
/// TCP_NODELAY) writes in `parts`: the kernel holds each part after the first until the one
/// before is ACKed.
fn fastest_exchange_in_parts(proxy: &Proxy, parts: &[&[u8]]) -> Duration {
    (0..5)
        .map(|_| {
            let mut s = connect(proxy.addr);
            s.set_nodelay(false).expect("nodelay");
            let started = Instant::now();
            for part in parts {
                s.write_all(part).expect("write");
            }
            let r = read_response(&mut s, false);
            assert_eq!((r.status, r.backend()), (200, "b1"));
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

// Were the balancer to keep delaying its ACK, each exchange below would take the kernel's
// delayed-ACK timer, 40 ms at least; the best of five shows whether it does.

#[test]
fn a_request_written_in_parts_with_nagle_on_is_not_held_for_the_delayed_ack() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b1]);
    let best = fastest_exchange_in_parts(&proxy, &[b"GET / HTTP/1.1\r\n", b"Host: t\r\n\r\n"]);
    assert!(
        best < Duration::from_millis(40),
        "fastest exchange: {best:?}"
    );
}

#[test]
fn a_body_written_after_its_head_with_nagle_on_is_not_held_for_the_delayed_ack() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b1]);
    let best = fastest_exchange_in_parts(
        &proxy,
        &[
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
            b"hello",
        ],
    );
    assert!(
        best < Duration::from_millis(40),
        "fastest exchange: {best:?}"
    );
}

/// The segments a new connection received by the time the balancer closed it after one
/// `Connection: close` exchange, with what was read.
fn closing_exchange(proxy: &Proxy, target: &str) -> (u32, Vec<u8>) {
    let mut s = connect(proxy.addr);
    s.set_nodelay(true).expect("nodelay");
    // One write: a request in parts would switch the quick ACKs back on.
    let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).expect("write");
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("read until the balancer closes");
    (segments_in(&s), all)
}

#[test]
fn the_last_response_of_a_closing_connection_carries_the_fin() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b1]);
    // SYN-ACK, then the response with the FIN in its segment; a FIN of its own would make
    // three. A delayed ACK of the request (a loaded machine, see above) also makes three, so
    // one connection in five must show two.
    let seen: Vec<u32> = (0..5)
        .map(|_| {
            let (segments, all) = closing_exchange(&proxy, "/");
            let (r, len) = parse_head(&all).expect("a response head");
            assert_eq!((r.status, r.backend()), (200, "b1"));
            assert_eq!(r.header("connection"), Some("close"));
            let body = &all[len..];
            let declared: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("length");
            assert_eq!(body.len(), declared, "the whole body, then the close");
            segments
        })
        .collect();
    assert_one_saw_two(&seen);
}

#[test]
fn a_closing_response_larger_than_the_socket_buffers_arrives_whole() {
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start(&[&b1]);
    // Far more than loopback's send and receive buffers hold: the last writes are partial,
    // and the held tail must still go out before the FIN.
    let n = 8 << 20;
    let (_, all) = closing_exchange(&proxy, &format!("/bytes/{n}"));
    let (r, len) = parse_head(&all).expect("a response head");
    assert_eq!(r.status, 200);
    assert_eq!(all.len() - len, n, "body length");
    assert!(
        all[len..] == pattern(n)[..],
        "body bytes differ from the backend's"
    );
}
