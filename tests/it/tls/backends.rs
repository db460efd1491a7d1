//! TLS to backends (`[[backend]] tls = true`): an in-process balancer whose backend is a real
//! `lb` terminating TLS in front of a demo backend. What it shows: requests get through over
//! one reused TLS connection, the certificate is checked (name and CA), a failed handshake
//! sends even a POST to another backend, and health checks speak TLS too.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lb::config::{BackendConfig, BackendTls};
use lb::upstream::BackendState;

use super::{site, Lb};
use crate::support::tls::Pki;
use crate::support::*;

fn tls_backend(name: &str, lb: &Lb, server_name: &str, ca: &str) -> BackendConfig {
    BackendConfig {
        name: name.to_string(),
        address: lb.tls,
        weight: 1,
        tls: Some(BackendTls {
            server_name: server_name.to_string(),
            ca: Some(ca.into()),
        }),
        backup: false,
    }
}

#[test]
fn requests_reach_a_tls_backend_over_one_reused_connection() {
    let demo = DemoBackend::start("behind-tls");
    let inner = Lb::site("", &[&demo]);
    let ca = site().pki.ca_path().to_string();
    let proxy = Proxy::start_with(vec![tls_backend("tls", &inner, "a.test", &ca)], |_| {});
    for i in 0..20 {
        let resp = get(proxy.addr, "/");
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.backend(), "behind-tls");
    }
    let echoed = roundtrip(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(echoed.status, 200, "{echoed:?}");
    let (head, body) = echo_parts(&echoed);
    assert_eq!(body, b"hello");
    // The terminating lb saw TLS: it says so to the demo backend.
    assert!(head.contains("X-Forwarded-Proto: https"), "{head}");
    let backend = proxy.backends.in_slot(0).expect("backend");
    assert_eq!(
        backend.connections.load(Ordering::Relaxed),
        1,
        "21 requests, one after another, over one pooled TLS connection"
    );
    assert_eq!(backend.errors.load(Ordering::Relaxed), 0);
}

#[test]
fn a_certificate_for_another_name_or_from_another_ca_is_refused_and_a_post_goes_elsewhere() {
    let demo = DemoBackend::start("behind-tls");
    let inner = Lb::site("", &[&demo]);
    let plain = DemoBackend::start("plain");
    let ca = site().pki.ca_path().to_string();
    // a.test's certificate is the one served to a client asking for "elsewhere.test".
    let wrong_name = tls_backend("wrong-name", &inner, "elsewhere.test", &ca);
    let other_ca = Pki::new("other-ca");
    let wrong_ca = tls_backend("wrong-ca", &inner, "a.test", other_ca.ca_path());
    let proxy = Proxy::start_with(vec![wrong_name, wrong_ca, plain.config()], |c| {
        c.retries = 2;
    });
    for i in 0..6 {
        // Not idempotent: only a failure before any byte of it left may send it elsewhere,
        // and a failed handshake is one (no request byte goes out before it is done).
        let resp = roundtrip(
            proxy.addr,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert_eq!(resp.backend(), "plain", "request {i}");
        assert_eq!(echo_parts(&resp).1, b"hi");
    }
    for index in [0, 1] {
        let b = proxy.backends.in_slot(index).expect("backend");
        assert_eq!(b.state(), BackendState::Down, "{}", b.name);
        assert!(b.errors.load(Ordering::Relaxed) >= 1, "{}", b.name);
    }
}

#[test]
fn health_checks_speak_tls_to_a_tls_backend() {
    let demo = DemoBackend::start("behind-tls");
    let inner = Lb::site("", &[&demo]);
    let ca = site().pki.ca_path().to_string();
    let other_ca = Pki::new("health-ca");
    let good = tls_backend("good", &inner, "a.test", &ca);
    let untrusted = tls_backend("untrusted", &inner, "a.test", other_ca.ca_path());
    let proxy = Proxy::start_with_health(vec![good, untrusted], |c| {
        c.health.interval = Duration::from_millis(100);
        c.health.timeout = Duration::from_millis(1000);
        c.health.fall = 1;
    });
    wait_until("a passing TLS probe and a failing one", || {
        let good = proxy.backends.in_slot(0).expect("good").health();
        let untrusted = proxy.backends.in_slot(1).expect("untrusted");
        good.last_ok == Some(true) && untrusted.state() == BackendState::Down
    });
    let good = proxy.backends.in_slot(0).expect("good");
    assert_eq!(good.state(), BackendState::Up);
    assert_eq!(good.health().last_detail, "status 200");
}
