//! Hostile and broken clients on the TLS listener: garbage instead of a ClientHello, plain HTTP
//! on the HTTPS port, a thousand half-finished handshakes, handshakes that stall or vanish, and
//! renegotiation. After each, the proxy still serves a normal HTTPS request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

fn lb_with_timeout(b: &DemoBackend) -> Lb {
    Lb::site("handshake_timeout = \"1s\"", &[b])
}

/// A real ClientHello record (TLS 1.3 and 1.2 offered, SNI a.test), as `openssl s_client`
/// sends it, caught on a listener of our own.
fn client_hello() -> &'static [u8] {
    static HELLO: OnceLock<Vec<u8>> = OnceLock::new();
    HELLO.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "a.test",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl");
        let (mut s, _) = listener.accept().expect("accept s_client");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut header = [0u8; 5];
        s.read_exact(&mut header).expect("record header");
        assert_eq!(header[0], 0x16, "not a handshake record");
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut record = header.to_vec();
        record.resize(5 + len, 0);
        s.read_exact(&mut record[5..]).expect("ClientHello");
        let _ = child.kill();
        let _ = child.wait();
        record
    })
}

/// Reads until the peer closes (end of stream or reset), at most `within`; returns what
/// arrived, or `None` if the connection was still open then.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => return Some(all),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Some(all)
            }
            Err(_) => {}
        }
    }
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_at_once() {
    let b1 = DemoBackend::start("b1");
    let mut lb = Lb::site("", &[&b1]);
    let mut noise = vec![0u8; 4096];
    fastrand::Rng::with_seed(7).fill(&mut noise);
    noise[0] = 0xde;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", noise),
        // Not a letter: a first byte that is one looks like a plain HTTP method (the next test).
        (
            "a record of an unknown type",
            b"\x19\x03\x03\x00\x05hello".to_vec(),
        ),
        // Longer than any TLS record may be (2^14 + 2048).
        ("an oversized record", b"\x16\x03\x01\xff\xff".to_vec()),
        (
            "a handshake record of junk",
            b"\x16\x03\x01\x00\x08\x01\x00\x00\x04junk".to_vec(),
        ),
        (
            "SSLv2-style hello",
            b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = connect(lb.tls);
        let started = Instant::now();
        // The proxy may close before taking everything in: a failed write is an answer too.
        let _ = s.write_all(&bytes);
        let reply = read_until_closed(&mut s, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{what}: still open after 2 s"));
        // Nothing but a TLS alert record (content type 21), if anything.
        assert!(
            reply.is_empty() || reply[0] == 0x15,
            "{what}: {:?}",
            String::from_utf8_lossy(&reply)
        );
        eprintln!(
            "{what}: closed after {:?} with {} bytes",
            started.elapsed(),
            reply.len()
        );
        lb.assert_serves();
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_or_a_close() {
    let recorder = Recorder::start();
    let mut lb = Lb::site_recorded("", &recorder);
    for request in [
        &b"GET /plain-on-tls HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        b"POST /plain-on-tls HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /plain-on-tls HTTP/1.0\r\n\r\n",
    ] {
        let mut s = connect(lb.tls);
        let _ = s.write_all(request);
        let reply = read_until_closed(&mut s, Duration::from_secs(2))
            .expect("plain HTTP on the TLS port left hanging for 2 s");
        let text = String::from_utf8_lossy(&reply);
        // As nginx: a plain-text 400 saying what went wrong, then the close; or just the close.
        assert!(
            reply.is_empty() || text.starts_with("HTTP/1.1 400 "),
            "{text:?}"
        );
        eprintln!("plain HTTP on the TLS port: {text:?}");
    }
    // The backend has the normal request by the time it answers, and none of the others.
    lb.assert_serves();
    let seen = String::from_utf8_lossy(&recorder.all_bytes()).into_owned();
    assert!(seen.contains("GET / HTTP/1.1"), "{seen}");
    assert!(
        !seen.contains("/plain-on-tls"),
        "a plain request on the TLS port reached the backend: {seen}"
    );
}

#[test]
fn a_thousand_half_handshakes_are_closed_by_the_timeout_in_bounded_memory() {
    const CLIENTS: usize = 1_000;
    raise_nofile_limit();
    let b1 = DemoBackend::start("b1");
    let mut lb = lb_with_timeout(&b1);
    let hello = client_hello();
    let half = &hello[..hello.len() / 2];
    lb.assert_serves();
    let rss_before = lb.process.rss_kib();
    let fds_before = fd_count(lb.pid());

    // A normal client keeps making HTTPS requests the whole time.
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let tls = lb.tls;
    let bystander = thread::spawn(move || {
        let mut answered = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let r = curl_at(tls, "b.test", "/", &[]);
            answered.push((r.response.status, Instant::now()));
        }
        answered
    });

    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = connect(lb.tls);
            s.write_all(half).expect("write half a ClientHello");
            s
        })
        .collect();
    let opened = started.elapsed();
    // Nothing left unread on lb's side: every half hello is in lb's memory, or already closed.
    wait_until("lb to read every half handshake", || {
        unread_bytes_at(lb.tls) == 0
    });
    let rss_held = lb.process.rss_kib();
    // Each one is closed by lb, without a byte but perhaps an alert, within the timeout.
    let window = HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    for (i, s) in held.iter_mut().enumerate() {
        let left = window.saturating_sub(started.elapsed());
        let reply = read_until_closed(s, left)
            .unwrap_or_else(|| panic!("half handshake {i} still open after {window:?}"));
        assert!(reply.is_empty() || reply[0] == 0x15, "{i}: {reply:?}");
    }
    let all_closed = Instant::now();
    done.store(true, Ordering::SeqCst);
    let answered = bystander.join().expect("bystander");
    let peak = lb.process.peak_rss_kib();
    eprintln!(
        "{CLIENTS} half handshakes opened in {opened:?}, all closed after {:?}; lb RSS \
         {rss_before} KiB -> {rss_held} KiB with them open, peak {peak} KiB; bystander made {} \
         requests",
        started.elapsed(),
        answered.len()
    );
    assert!(
        answered.iter().all(|(status, _)| *status == 200),
        "{answered:?}"
    );
    assert!(
        answered.iter().any(|(_, at)| *at < all_closed),
        "the bystander got no answer while the half handshakes were open"
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(
        rss_held.saturating_sub(rss_before) < 32 * 1024,
        "{CLIENTS} half handshakes took {} KiB",
        rss_held - rss_before
    );
    wait_until("lb's descriptors to come back", || {
        fd_count(lb.pid()) <= fds_before
    });
    lb.assert_serves();
}

#[test]
fn clients_vanishing_mid_handshake_leak_nothing() {
    let b1 = DemoBackend::start("b1");
    // Longer than the wait below: what lets the connections go must be their end, not a timer.
    let mut lb = Lb::site("handshake_timeout = \"30s\"", &[&b1]);
    lb.assert_serves();
    let fds_before = fd_count(lb.pid());
    let hello = client_hello();
    for i in 0..200 {
        let mut s = connect(lb.tls);
        if i % 2 == 0 {
            s.write_all(&hello[..hello.len() / 2]).expect("half hello");
        } else {
            // The whole hello, and some of lb's answer, then gone.
            s.write_all(hello).expect("hello");
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).expect("read the server's flight");
            assert!(n > 0 && buf[0] == 0x16, "{:?}", &buf[..n]);
        }
        set_linger_zero(&s);
        drop(s);
    }
    wait_until("lb's descriptors to come back", || {
        fd_count(lb.pid()) <= fds_before
    });
    lb.assert_serves();
}

#[test]
fn a_client_closing_mid_handshake_is_let_go_at_once() {
    // One at a time, so that lb is idle when each arrives: then the bytes and the FIN right
    // behind them, as a client that gives up sends them, usually reach it in one go.
    const CLIENTS: usize = 200;
    let b1 = DemoBackend::start("b1");
    // Longer than the wait below: what ends the connections must be their close.
    let mut lb = Lb::site("handshake_timeout = \"30s\"", &[&b1]);
    let hello = client_hello();
    let fds = fd_count(lb.pid());
    let mut kept = Vec::new();
    for i in 0..CLIENTS {
        let mut s = connect(lb.tls);
        s.write_all(&hello[..hello.len() / 2]).expect("half hello");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        if read_until_closed(&mut s, Duration::from_secs(2)).is_none() {
            kept.push(i);
        }
    }
    assert!(
        kept.is_empty(),
        "lb kept connections whose client had closed, for 2 s and more: {} of {CLIENTS} ({kept:?})",
        kept.len()
    );
    wait_until("lb's descriptors to come back", || {
        fd_count(lb.pid()) <= fds
    });
    lb.assert_serves();
}

#[test]
fn stalled_handshakes_are_closed_after_handshake_timeout() {
    let b1 = DemoBackend::start("b1");
    let mut lb = lb_with_timeout(&b1);
    let hello = client_hello();
    // Silent from the start; stopped halfway through the hello; or silent once lb has sent
    // its whole flight (lb waits for the client's Finished).
    let stalls: [(&str, &[u8]); 3] = [
        ("nothing sent", b""),
        ("half a hello", &hello[..hello.len() / 2]),
        ("a whole hello", hello),
    ];
    let clients: Vec<_> = stalls
        .into_iter()
        .map(|(what, bytes)| {
            let tls = lb.tls;
            thread::spawn(move || {
                let mut s = connect(tls);
                let started = Instant::now();
                s.write_all(bytes).expect("write");
                let reply = read_until_closed(&mut s, HANDSHAKE_TIMEOUT + Duration::from_secs(3));
                (what, started.elapsed(), reply.map(|r| r.len()))
            })
        })
        .collect();
    for c in clients {
        let (what, took, reply) = c.join().expect("client");
        eprintln!("stalled handshake, {what}: closed after {took:?} ({reply:?} bytes)");
        assert!(reply.is_some(), "{what}: still open after {took:?}");
        // Not cut off the moment it was accepted: the timeout is what closed it.
        assert!(
            took >= HANDSHAKE_TIMEOUT / 2,
            "{what}: closed after {took:?}"
        );
    }
    lb.assert_serves();
}

#[test]
fn an_established_connection_outlives_the_handshake_timeout() {
    let b1 = DemoBackend::start("b1");
    let lb = lb_with_timeout(&b1);
    let mut py = PyClient::start(lb.tls, "a.test", site().pki.ca_path(), "session");
    py.next();
    let first = py.request("GET /");
    assert_eq!(py_status(&first), 200, "{first}");
    // Idle past handshake_timeout: only client_idle (60 s) applies once the handshake is done.
    thread::sleep(HANDSHAKE_TIMEOUT * 2);
    let resp = py.request("GET /");
    assert_eq!(py_status(&resp), 200, "{resp}");
    // The same connection from lb to the backend, kept alive, for both requests.
    assert_eq!(
        py_header(&resp, "x-backend-connection"),
        py_header(&first, "x-backend-connection")
    );
}

#[test]
fn renegotiation_is_refused_without_harm() {
    let b1 = DemoBackend::start("b1");
    let mut lb = Lb::site("", &[&b1]);
    let mut client = SClientSession::start(lb.tls, &["-servername", "a.test", "-tls1_2"]);
    assert!(
        client.wait_for("Verify return code"),
        "no TLS 1.2 handshake: {:#?}",
        client.seen
    );
    // `R` on a line of its own: s_client asks the server for a new handshake.
    client.send(b"R\n");
    assert!(client.wait_for("RENEGOTIATING"), "{:#?}", client.seen);
    // Then a request, if the connection is still there: served, or the connection is gone.
    client.send(&closing_request("a.test"));
    let served = client.wait_for("HTTP/1.1 200 OK");
    let status = client.wait_exit();
    eprintln!(
        "renegotiation: served afterwards: {served}; s_client {status}; {:?}",
        client
            .seen
            .iter()
            .filter(|l| l.contains("alert") || l.contains("error") || l.contains("RENEG"))
            .collect::<Vec<_>>()
    );
    lb.assert_serves();
}

#[test]
fn tls_1_3_key_updates_keep_the_connection_usable() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let mut client = SClientSession::start(lb.tls, &["-servername", "a.test", "-tls1_3"]);
    assert!(
        client.wait_for("Verify return code"),
        "no TLS 1.3 handshake: {:#?}",
        client.seen
    );
    // `K`: s_client sends a KeyUpdate and asks lb to update its keys too.
    client.send(b"K\n");
    assert!(client.wait_for("KEYUPDATE"), "{:#?}", client.seen);
    client.send(&closing_request("a.test"));
    assert!(client.wait_for("HTTP/1.1 200 OK"), "{:#?}", client.seen);
    client.wait_exit();
}
