//! SIGHUP and certificates: new files are picked up by new connections while open ones carry
//! on, and files that do not load leave the running certificates in place.

use super::*;
use crate::support::tls::{KeyKind, Leaf};

/// The files the configuration names, into which a test copies one certificate or another.
struct Live {
    leaf: Leaf,
}

impl Live {
    fn new(stem: &str, from: &Leaf) -> Live {
        let pki = &site().pki;
        let leaf = Leaf {
            cert: pki.path(&format!("{stem}-live.crt")),
            key: pki.path(&format!("{stem}-live.key")),
            serial: from.serial,
        };
        let live = Live { leaf };
        live.install(from);
        live
    }

    /// Copies `from`'s certificate and key over the live files.
    fn install(&self, from: &Leaf) {
        std::fs::copy(&from.key, &self.leaf.key).expect("copy key");
        std::fs::copy(&from.cert, &self.leaf.cert).expect("copy certificate");
    }
}

/// The certificate a new connection to `a.test` is shown.
fn presented(lb: &Lb) -> String {
    s_client(
        lb.tls,
        &["-servername", "a.test", "-ign_eof"],
        &closing_request("a.test"),
    )
    .server_cert()
}

#[test]
fn sighup_loads_new_certificates_and_open_connections_carry_on() {
    let pki = &site().pki;
    let v1 = pki.leaf("reload-v1", &["a.test"], KeyKind::EcdsaP256);
    let v2 = pki.leaf("reload-v2", &["a.test"], KeyKind::Rsa2048);
    let live = Live::new("reload", &v1);
    let b1 = DemoBackend::start("b1");
    let lb = Lb::start(&config_text("", &[&live.leaf], &[&b1]));
    assert_eq!(presented(&lb), v1.pem());

    // A keep-alive TLS connection from before the reload.
    let mut before = PyClient::start(lb.tls, "a.test", pki.ca_path(), "session");
    let hello = before.next();
    assert_eq!(hello["serial"].as_u64(), Some(v1.serial), "{hello}");
    assert_eq!(py_status(&before.request("GET /")), 200);

    live.install(&v2);
    lb.signal(libc::SIGHUP);
    lb.log_line("configuration reloaded");

    // New connections get the new certificate (and its RSA key)...
    assert_eq!(presented(&lb), v2.pem());
    let r = curl(&lb, "a.test", "/", &[]);
    assert_eq!(r.response.status, 200, "{}", r.verbose);
    assert!(
        r.subject().contains(&format!("serialNumber={}", v2.serial)),
        "{}",
        r.subject()
    );
    let mut after = PyClient::start(lb.tls, "a.test", pki.ca_path(), "session");
    assert_eq!(after.next()["serial"].as_u64(), Some(v2.serial));
    assert_eq!(py_status(&after.request("GET /")), 200);
    // ...while the old connection, on the old certificate's session, keeps working.
    for _ in 0..3 {
        let resp = before.request("GET /");
        assert_eq!(py_status(&resp), 200, "{resp}");
        assert_eq!(py_header(&resp, "x-backend").as_deref(), Some("b1"));
    }
}

#[test]
fn sighup_adds_a_certificate_for_a_new_name() {
    let s = site();
    let b1 = DemoBackend::start("b1");
    let lb = Lb::start(&config_text("", &[&s.a], &[&b1]));
    // Before: b.test is not known, and gets the default.
    let out = s_client(
        lb.tls,
        &["-servername", "b.test", "-ign_eof"],
        &closing_request("b.test"),
    );
    assert_eq!(out.server_cert(), s.a.pem(), "{}", out.text);
    std::fs::write(&lb.config, config_text("", &[&s.a, &s.b], &[&b1])).expect("rewrite");
    lb.signal(libc::SIGHUP);
    lb.log_line("configuration reloaded");
    let r = curl(&lb, "b.test", "/", &[]);
    assert_eq!(r.response.status, 200, "{}", r.verbose);
    assert!(r.subject().contains("CN=b.test"), "{}", r.subject());
    let none = s_client(
        lb.tls,
        &["-noservername", "-ign_eof"],
        &closing_request("x"),
    );
    assert_eq!(
        none.server_cert(),
        s.a.pem(),
        "the default moved: {}",
        none.text
    );
}

#[test]
fn sighup_with_a_broken_certificate_keeps_the_running_ones() {
    let pki = &site().pki;
    let v1 = pki.leaf("broken-v1", &["a.test"], KeyKind::EcdsaP256);
    let v2 = pki.leaf("broken-v2", &["a.test"], KeyKind::EcdsaP256);
    let live = Live::new("broken", &v1);
    let b1 = DemoBackend::start("b1");
    let mut lb = Lb::start(&config_text("", &[&live.leaf], &[&b1]));
    let mut open = PyClient::start(lb.tls, "a.test", pki.ca_path(), "session");
    open.next();
    assert_eq!(py_status(&open.request("GET /")), 200);

    // A certificate file cut short, as by a deploy still copying it.
    let pem = v2.pem();
    std::fs::write(&live.leaf.cert, &pem[..pem.len() / 2]).expect("truncate");
    lb.signal(libc::SIGHUP);
    let refused = lb.log_line("refused");
    assert!(
        refused.contains("tls.certificate[0]") || refused.contains(live.leaf.cert_path()),
        "the log does not say which certificate: {refused}"
    );
    assert!(lb.alive());
    assert_eq!(presented(&lb), v1.pem(), "the old certificate is gone");
    assert_eq!(py_status(&open.request("GET /")), 200);

    // A key that belongs to another certificate: refused the same way.
    live.install(&v2);
    std::fs::copy(&v1.key, &live.leaf.key).expect("copy the wrong key");
    let refusals = lb.log().iter().filter(|l| l.contains("refused")).count();
    lb.signal(libc::SIGHUP);
    wait_until("lb to refuse the mismatched key", || {
        lb.log().iter().filter(|l| l.contains("refused")).count() > refusals
    });
    assert_eq!(presented(&lb), v1.pem());

    // Fixed: the next SIGHUP takes it.
    live.install(&v2);
    lb.signal(libc::SIGHUP);
    lb.log_line("configuration reloaded");
    assert_eq!(presented(&lb), v2.pem());
    assert_eq!(py_status(&open.request("GET /")), 200);
    lb.assert_serves();
}

#[test]
fn sighup_cannot_remove_the_tls_listener() {
    let s = site();
    let b1 = DemoBackend::start("b1");
    let lb = Lb::start(&config_text("", &[&s.a], &[&b1]));
    std::fs::write(
        &lb.config,
        format!(
            "[health]\ninterval = \"1h\"\n[[backend]]\nname = \"b1\"\naddress = \"{}\"\n",
            b1.addr
        ),
    )
    .expect("rewrite");
    lb.signal(libc::SIGHUP);
    lb.log_line("needs a restart");
    // The listener and its certificate stay until the restart the log asks for.
    assert_eq!(presented(&lb), s.a.pem());
    let r = curl(&lb, "a.test", "/", &[]);
    assert_eq!(r.response.status, 200, "{}", r.verbose);
}
