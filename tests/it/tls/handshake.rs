//! The TLS handshake as clients see it: which certificate SNI picks (by name, wildcard, none,
//! unknown), protocol versions offered and refused, ALPN, and session resumption.

use super::*;

fn s_client_sni(lb: &Lb, name: &str, extra: &[&str]) -> SClient {
    let mut args = vec!["-servername", name, "-ign_eof"];
    args.extend(extra);
    s_client(lb.tls, &args, &closing_request(name))
}

#[test]
fn each_sni_name_gets_its_own_certificate_and_is_served() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let s = site();
    // curl checks the chain and the name itself: a wrong certificate fails the request.
    let a = curl(&lb, "a.test", "/", &[]);
    assert_eq!(a.response.status, 200, "{}", a.verbose);
    assert_eq!(a.response.backend(), "b1");
    assert!(a.subject().contains("CN=a.test"), "{}", a.subject());
    let b = curl(&lb, "b.test", "/", &[]);
    assert_eq!(b.response.status, 200, "{}", b.verbose);
    assert!(b.subject().contains("CN=b.test"), "{}", b.subject());
    // The exact certificates, and their keys: ECDSA P-256 for a.test, RSA 2048 for b.test.
    let a = s_client_sni(&lb, "a.test", &[]);
    assert_eq!(a.server_cert(), s.a.pem(), "{}", a.text);
    assert!(
        a.text.contains("Server public key is 256 bit"),
        "{}",
        a.text
    );
    assert!(a.text.contains("Verify return code: 0 (ok)"), "{}", a.text);
    let b = s_client_sni(&lb, "b.test", &[]);
    assert_eq!(b.server_cert(), s.b.pem(), "{}", b.text);
    assert!(
        b.text.contains("Server public key is 2048 bit"),
        "{}",
        b.text
    );
    assert!(b.text.contains("Verify return code: 0 (ok)"), "{}", b.text);
}

#[test]
fn a_wildcard_name_covers_one_label() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let s = site();
    let www = curl(&lb, "www.wild.test", "/", &[]);
    assert_eq!(www.response.status, 200, "{}", www.verbose);
    assert!(
        www.subject().contains("CN=*.wild.test"),
        "{}",
        www.subject()
    );
    let deep = s_client_sni(&lb, "api.wild.test", &[]);
    assert_eq!(deep.server_cert(), s.wild.pem(), "{}", deep.text);
    // `*.wild.test` does not cover `wild.test` itself nor `a.b.wild.test`: the default.
    for name in ["wild.test", "a.b.wild.test"] {
        let out = s_client_sni(&lb, name, &[]);
        assert_eq!(out.server_cert(), s.a.pem(), "{name}: {}", out.text);
    }
}

#[test]
fn a_client_without_sni_or_with_an_unknown_name_gets_the_first_certificate() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    let s = site();
    let none = s_client(
        lb.tls,
        &["-noservername", "-ign_eof"],
        &closing_request("x"),
    );
    assert_eq!(none.server_cert(), s.a.pem(), "{}", none.text);
    assert!(none.version().is_some(), "{}", none.text);
    assert_eq!(
        none.http_status_line(),
        Some("HTTP/1.1 200 OK"),
        "{}",
        none.text
    );
    let unknown = s_client_sni(&lb, "unknown.test", &[]);
    assert_eq!(unknown.server_cert(), s.a.pem(), "{}", unknown.text);
    // The name is checked against the certificate by the client, not the proxy: curl refuses.
    let out = run_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", s.pki.ca_path()])
            .args([
                "--resolve",
                &format!("unknown.test:{}:127.0.0.1", lb.tls.port()),
            ])
            .arg(format!("https://unknown.test:{}/", lb.tls.port())),
        b"",
        PATIENCE,
    );
    assert!(
        !out.status.success(),
        "curl accepted a.test's cert for unknown.test"
    );
    // Whichever certificate a name picks, the order of `[[tls.certificate]]` decides the
    // default: with b.test first, a client without SNI gets b.test.
    let lb2 = Lb::start(&config_text("", &[&s.b, &s.a], &[&b1]));
    let none = s_client(
        lb2.tls,
        &["-noservername", "-ign_eof"],
        &closing_request("x"),
    );
    assert_eq!(none.server_cert(), s.b.pem(), "{}", none.text);
    let a = s_client_sni(&lb2, "a.test", &[]);
    assert_eq!(a.server_cert(), s.a.pem(), "{}", a.text);
}

#[test]
fn tls_1_2_and_1_3_are_both_served() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client_sni(&lb, "a.test", &[flag]);
        assert_eq!(out.version().as_deref(), Some(version), "{}", out.text);
        assert_eq!(
            out.http_status_line(),
            Some("HTTP/1.1 200 OK"),
            "{flag}: {}",
            out.text
        );
        assert!(out.text.contains("X-Backend: b1"), "{}", out.text);
    }
    // The RSA certificate over TLS 1.2 too (RSA signatures in the key exchange).
    let out = s_client_sni(&lb, "b.test", &["-tls1_2"]);
    assert_eq!(out.version().as_deref(), Some("TLSv1.2"), "{}", out.text);
    // With no version forced, a client gets the newest.
    let out = s_client_sni(&lb, "a.test", &[]);
    assert_eq!(out.version().as_deref(), Some("TLSv1.3"), "{}", out.text);
}

/// Asserts that a handshake offering only `flags`' version fails, and the proxy still serves.
fn assert_refused(lb: &mut Lb, flags: &[&str]) {
    let started = Instant::now();
    let out = s_client_sni(lb, "a.test", flags);
    assert_eq!(out.version(), None, "{flags:?} negotiated: {}", out.text);
    assert!(!out.success, "{flags:?}: s_client succeeded: {}", out.text);
    assert!(out.http_status_line().is_none(), "{}", out.text);
    // Refused at once with an alert, not left to time out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{flags:?} took {:?}",
        started.elapsed()
    );
    lb.assert_serves();
}

#[test]
fn tls_1_0_and_1_1_are_refused() {
    let b1 = DemoBackend::start("b1");
    let mut lb = Lb::site("", &[&b1]);
    // OpenSSL 3 will not even offer TLS 1.0 or 1.1 (SHA-1 signatures) above security level 0.
    for flag in ["-tls1", "-tls1_1"] {
        assert_refused(&mut lb, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]);
    }
}

#[test]
fn min_version_1_3_refuses_tls_1_2() {
    let b1 = DemoBackend::start("b1");
    let mut lb = Lb::site("min_version = \"1.3\"", &[&b1]);
    assert_refused(&mut lb, &["-tls1_2"]);
    let out = s_client_sni(&lb, "a.test", &["-tls1_3"]);
    assert_eq!(out.version().as_deref(), Some("TLSv1.3"), "{}", out.text);
    assert_eq!(
        out.http_status_line(),
        Some("HTTP/1.1 200 OK"),
        "{}",
        out.text
    );
}

#[test]
fn alpn_offers_h2_first_and_http_1_1_and_no_h2_when_disabled() {
    let b1 = DemoBackend::start("b1");
    let mut lb = Lb::site("", &[&b1]);
    let out = s_client_sni(&lb, "a.test", &["-alpn", "http/1.1"]);
    assert_eq!(out.alpn().as_deref(), Some("http/1.1"), "{}", out.text);
    assert_eq!(
        out.http_status_line(),
        Some("HTTP/1.1 200 OK"),
        "{}",
        out.text
    );
    // What browsers offer: h2 first, and h2 it is.
    let out = s_client_sni(&lb, "a.test", &["-alpn", "h2,http/1.1"]);
    assert_eq!(out.alpn().as_deref(), Some("h2"), "{}", out.text);
    // A client offering no ALPN is served HTTP/1.1.
    let out = s_client_sni(&lb, "a.test", &[]);
    assert_eq!(
        out.http_status_line(),
        Some("HTTP/1.1 200 OK"),
        "{}",
        out.text
    );
    lb.assert_serves();

    // `[http2] enabled = false`: h2 is never chosen.
    let s = site();
    let text = config_text("", &[&s.a], &[&b1]) + "[http2]\nenabled = false\n";
    let mut lb = Lb::start(&text);
    let out = s_client_sni(&lb, "a.test", &["-alpn", "h2,http/1.1"]);
    assert_eq!(out.alpn().as_deref(), Some("http/1.1"), "{}", out.text);
    // h2 alone: either no ALPN at all or a refused handshake (RFC 7301 allows both), never h2.
    let out = s_client_sni(&lb, "a.test", &["-alpn", "h2"]);
    assert_ne!(out.alpn().as_deref(), Some("h2"), "{}", out.text);
    lb.assert_serves();
}

#[test]
fn sessions_are_resumed_over_tls_1_2_and_1_3() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("", &[&b1]);
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let session = site().pki.path(&format!(
            "session-{}-{}.pem",
            std::process::id(),
            &flag[1..]
        ));
        let session = session.to_str().expect("utf-8 path");
        let first = s_client_sni(&lb, "a.test", &[flag, "-sess_out", session]);
        assert_eq!(first.version().as_deref(), Some(version), "{}", first.text);
        assert!(!first.reused(), "{}", first.text);
        assert_eq!(
            first.http_status_line(),
            Some("HTTP/1.1 200 OK"),
            "{}",
            first.text
        );
        let second = s_client_sni(&lb, "a.test", &[flag, "-sess_in", session]);
        assert!(second.reused(), "{version} not resumed: {}", second.text);
        assert_eq!(
            second.version().as_deref(),
            Some(version),
            "{}",
            second.text
        );
        assert_eq!(
            second.http_status_line(),
            Some("HTTP/1.1 200 OK"),
            "{}",
            second.text
        );
    }
}

#[test]
fn two_workers_share_the_tls_port_and_the_session_cache() {
    let b1 = DemoBackend::start("b1");
    let s = site();
    let lb = Lb::start(&format!(
        "workers = 2\n{}",
        config_text("", &[&s.a, &s.b], &[&b1])
    ));
    // SO_REUSEPORT spreads the connections over both reactors: every one resumes all the same,
    // from the shared cache (1.2) or the shared ticket keys (1.3).
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let session = s.pki.path(&format!(
            "workers-{}-{}.pem",
            std::process::id(),
            &flag[1..]
        ));
        let session = session.to_str().expect("utf-8 path");
        let first = s_client_sni(&lb, "a.test", &[flag, "-sess_out", session]);
        assert_eq!(first.version().as_deref(), Some(version), "{}", first.text);
        for i in 0..10 {
            let again = s_client_sni(&lb, "a.test", &[flag, "-sess_in", session]);
            assert!(again.reused(), "{version} {i} not resumed: {}", again.text);
            assert_eq!(
                again.http_status_line(),
                Some("HTTP/1.1 200 OK"),
                "{}",
                again.text
            );
        }
    }
    for name in ["a.test", "b.test"] {
        let r = curl(&lb, name, "/", &[]);
        assert_eq!(r.response.status, 200, "{}", r.verbose);
        assert!(
            r.subject().contains(&format!("CN={name}")),
            "{}",
            r.subject()
        );
    }
}

#[test]
fn an_ecdsa_and_an_rsa_certificate_for_one_name_each_go_to_the_clients_that_can_use_them() {
    let b1 = DemoBackend::start("b1");
    let pki = &site().pki;
    let ecdsa = pki.leaf("dual-ecdsa", &["dual.test"], KeyKind::EcdsaP256);
    let rsa = pki.leaf("dual-rsa", &["dual.test"], KeyKind::Rsa2048);
    let lb = Lb::start(&config_text("", &[&site().a, &ecdsa, &rsa], &[&b1]));
    // A client that can only check RSA signatures, and one that can only check ECDSA ones.
    for (version, sigalgs, expected) in [
        ("-tls1_3", "rsa_pss_rsae_sha256", &rsa),
        ("-tls1_3", "ecdsa_secp256r1_sha256", &ecdsa),
        ("-tls1_2", "RSA+SHA256", &rsa),
        ("-tls1_2", "ECDSA+SHA256", &ecdsa),
    ] {
        let out = s_client_sni(&lb, "dual.test", &[version, "-sigalgs", sigalgs]);
        assert_eq!(
            out.server_cert(),
            expected.pem(),
            "{version} {sigalgs}: {}",
            out.text
        );
        assert_eq!(
            out.http_status_line(),
            Some("HTTP/1.1 200 OK"),
            "{}",
            out.text
        );
    }
    // A client that can check either gets one of them, and is served.
    let r = curl(&lb, "dual.test", "/", &[]);
    assert_eq!(r.response.status, 200, "{}", r.verbose);
    assert!(r.subject().contains("CN=dual.test"), "{}", r.subject());
}
