//! HTTP through TLS as clients use it: Python's ssl module and curl get answers from the
//! backends, the backends learn the request came over HTTPS, keep-alive connections go round
//! the backends, WebSocket upgrades become tunnels, and `redirect_http` sends plain clients to
//! HTTPS.

use std::io::Write;

use super::*;

fn three_backends() -> Vec<DemoBackend> {
    (1..=3)
        .map(|i| DemoBackend::start(&format!("b{i}")))
        .collect()
}

#[test]
fn python_get_through_tls_is_answered_by_the_backend() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let mut py = PyClient::start(lb.tls, "a.test", site().pki.ca_path(), "session");
    let hello = py.next();
    assert_eq!(hello["event"], "handshake", "{hello}");
    assert_eq!(hello["version"], "TLSv1.3", "{hello}");
    assert_eq!(hello["alpn"], "http/1.1", "{hello}");
    assert_eq!(hello["cn"], "a.test", "{hello}");
    assert_eq!(hello["serial"].as_u64(), Some(site().a.serial), "{hello}");
    let resp = py.request("GET /");
    assert_eq!(py_status(&resp), 200, "{resp}");
    assert_eq!(py_header(&resp, "x-backend").as_deref(), Some("b1"));
    assert!(py_body(&resp).contains("served by b1"), "{resp}");
    // A body goes through intact.
    let resp = py.request("POST /echo hello-over-tls");
    assert_eq!(py_status(&resp), 200, "{resp}");
    assert!(py_body(&resp).ends_with("\r\n\r\nhello-over-tls"), "{resp}");
}

#[test]
fn the_backend_learns_the_request_came_over_https() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let mut py = PyClient::start(lb.tls, "a.test", site().pki.ca_path(), "session");
    py.next();
    let resp = py.request("GET /echo/tls?q=1");
    assert_eq!(py_status(&resp), 200, "{resp}");
    let head = py_body(&resp);
    assert!(head.starts_with("GET /echo/tls?q=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        field_values(&head, "x-forwarded-proto"),
        ["https"],
        "{head}"
    );
    assert_eq!(
        field_values(&head, "x-forwarded-for"),
        ["127.0.0.1"],
        "{head}"
    );
    assert_eq!(field_values(&head, "host"), ["a.test"], "{head}");
    assert_eq!(
        field_values(&head, "x-forwarded-host"),
        ["a.test"],
        "{head}"
    );
    // A client cannot pass itself off as HTTPS on the plain listener, nor as plain on TLS.
    let plain = roundtrip(
        lb.plain(),
        b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    let (head, _) = echo_parts(&plain);
    assert_eq!(field_values(&head, "x-forwarded-proto"), ["http"], "{head}");
    let out = s_client(
        lb.tls,
        &["-servername", "a.test", "-ign_eof"],
        b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n",
    );
    let protos: Vec<&str> = out
        .text
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-proto:"))
        .collect();
    assert_eq!(protos, ["X-Forwarded-Proto: https"], "{}", out.text);
}

#[test]
fn a_hundred_requests_on_one_tls_connection_go_round_the_backends() {
    let backends = three_backends();
    let refs: Vec<&DemoBackend> = backends.iter().collect();
    let lb = Lb::site("", &refs);
    let mut py = PyClient::start(lb.tls, "b.test", site().pki.ca_path(), "session");
    let hello = py.next();
    assert_eq!(hello["cn"], "b.test", "{hello}");
    let mut served = Vec::new();
    let mut connections = std::collections::HashSet::new();
    for i in 0..100 {
        let resp = py.request("GET /");
        assert_eq!(py_status(&resp), 200, "request {i}: {resp}");
        served.push(py_header(&resp, "x-backend").expect("X-Backend"));
        connections.insert((
            py_header(&resp, "x-backend").expect("X-Backend"),
            py_header(&resp, "x-backend-connection").expect("X-Backend-Connection"),
        ));
    }
    // Round robin as on the plain listener: b1 b2 b3 b1 ... from wherever it started.
    let first: Vec<&String> = served[..3].iter().collect();
    assert!(
        first[0] != first[1] && first[1] != first[2] && first[0] != first[2],
        "{served:?}"
    );
    for i in 3..served.len() {
        assert_eq!(served[i], served[i - 3], "request {i}: {served:?}");
    }
    // 33 or 34 each, and each backend answered on one connection from lb, kept in the pool
    // (X-Backend-Connection numbers a backend's connections).
    for b in &backends {
        let n = served.iter().filter(|s| **s == b.name).count();
        assert!((33..=34).contains(&n), "{}: {n}", b.name);
    }
    assert_eq!(connections.len(), 3, "{connections:?}");
}

#[test]
fn pipelined_requests_in_one_tls_record_are_answered_in_order() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    // s_client sends what it reads from stdin as it comes: here, all of it at once.
    let mut requests = Vec::new();
    for i in 0..5 {
        requests.extend(format!("GET /echo?n={i} HTTP/1.1\r\nHost: a.test\r\n\r\n").bytes());
    }
    requests.extend(closing_request("a.test"));
    let out = s_client(lb.tls, &["-servername", "a.test", "-ign_eof"], &requests);
    let seen: Vec<&str> = out
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("GET /echo?n="))
        .collect();
    let expected: Vec<String> = (0..5).map(|i| format!("{i} HTTP/1.1")).collect();
    assert_eq!(seen, expected, "{}", out.text);
    let statuses = out
        .text
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 200 OK"))
        .count();
    assert_eq!(statuses, 6, "{}", out.text);
}

#[test]
fn curl_keep_alive_reuses_the_tls_connection() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let url = format!("https://a.test:{}/", lb.tls.port());
    // Three URLs in one curl run: one TLS connection, reused (curl says so).
    let r = curl(&lb, "a.test", "/", &[&url, &url]);
    assert_eq!(r.response.status, 200);
    let reused = r
        .verbose
        .lines()
        .filter(|l| l.contains("Re-using existing connection"))
        .count();
    assert_eq!(reused, 2, "{}", r.verbose);
    // Three answers from the backend, on one connection of lb's to it (curl wrote the three
    // heads and bodies one after the other).
    let body = String::from_utf8_lossy(&r.response.body).into_owned();
    assert_eq!(body.matches("served by b1").count(), 3, "{body}");
    let first = r.response.header("x-backend-connection").expect("serial");
    let same = format!("X-Backend-Connection: {first}\r\n");
    assert_eq!(body.matches(&same).count(), 2, "{body}");
}

#[test]
fn websocket_over_tls_echoes_frames() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let mut py = PyClient::start(lb.tls, "a.test", site().pki.ca_path(), "ws");
    let hello = py.next();
    assert_eq!(hello["event"], "handshake", "{hello}");
    let ws = py.next();
    assert_eq!(ws["event"], "upgrade", "{ws}");
    assert_eq!(
        ws["status_line"], "HTTP/1.1 101 Switching Protocols",
        "{ws}"
    );
    assert_eq!(ws["headers"]["upgrade"], "websocket", "{ws}");
    assert_eq!(ws["headers"]["x-backend"], "b1", "{ws}");
    // The accept key is the client's key, hashed: the backend saw this client's handshake.
    let key = ws["key"].as_str().expect("key");
    let accept = {
        use base64::Engine;
        let mut sha = sha1_smol::Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
    };
    assert_eq!(
        ws["headers"]["sec-websocket-accept"],
        accept.as_str(),
        "{ws}"
    );
    assert_eq!(ws["text"], serde_json::json!([1, "héllo over tls"]), "{ws}");
    // 70,000 bytes: more than a TLS record and any buffer on the way, both directions.
    assert_eq!(ws["binary_echoed"], true, "{ws}");
    assert_eq!(ws["close"], serde_json::json!([8, 1000]), "{ws}");
}

#[test]
fn a_request_head_too_slow_over_tls_is_a_408() {
    // The handshake done, the head timeout applies as on the plain listener.
    let b1 = DemoBackend::start("b1");
    let lb = Lb::start(&format!(
        "[timeouts]\nclient_header = \"1s\"\n{}",
        config_text("", &[&site().a], &[&b1])
    ));
    let started = Instant::now();
    let out = s_client(
        lb.tls,
        &["-servername", "a.test", "-ign_eof"],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ",
    );
    assert_eq!(
        out.http_status_line(),
        Some("HTTP/1.1 408 Request Timeout"),
        "{}",
        out.text
    );
    assert!(out.text.contains("X-LB-Error: "), "{}", out.text);
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

#[test]
fn redirect_http_sends_plain_clients_to_https() {
    let recorder = Recorder::start();
    let lb = Lb::site_recorded("redirect_http = true", &recorder);
    let port = lb.tls.port();
    let resp = roundtrip(
        lb.plain(),
        b"GET /some/path?q=1&r=2 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 308, "{resp:?}");
    assert_eq!(
        resp.header("location"),
        Some(format!("https://example.test:{port}/some/path?q=1&r=2").as_str()),
        "{resp:?}"
    );
    // A POST keeps its method under 308, so it is redirected too, not forwarded; the port the
    // client used for plain HTTP is not the TLS one.
    let resp = roundtrip(
        lb.plain(),
        b"POST /form HTTP/1.1\r\nHost: example.test:8080\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(resp.status, 308, "{resp:?}");
    assert_eq!(
        resp.header("location"),
        Some(format!("https://example.test:{port}/form").as_str()),
        "{resp:?}"
    );
    // The target alone is kept: `/` on a keep-alive connection.
    let mut s = connect(lb.plain());
    s.write_all(b"GET /?keep HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some(format!("https://a.test:{port}/?keep").as_str())
    );
    // HTTPS itself is served; none of the redirected requests reached the backend, which has
    // seen the HTTPS one by the time it answers.
    let r = curl(&lb, "a.test", "/after-redirect", &[]);
    assert_eq!(r.response.status, 200, "{}", r.verbose);
    let seen = String::from_utf8_lossy(&recorder.all_bytes()).into_owned();
    assert!(seen.contains("GET /after-redirect "), "{seen}");
    for target in ["/some/path", "/form", "/?keep"] {
        assert!(
            !seen.contains(target),
            "{target} reached the backend: {seen}"
        );
    }
}

#[test]
fn without_redirect_http_the_plain_listener_serves_as_before() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let resp = get(lb.plain(), "/");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.backend(), "b1");
}
