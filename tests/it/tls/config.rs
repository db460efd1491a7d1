//! The `[tls]` section as an operator meets it: what stops `lb` from starting (exit status 2, a
//! message naming the key) and what only warns.

use super::*;
use crate::support::tls::{KeyKind, Pki};

/// Runs `lb` on a file with `text`; expects a configuration error and returns its message.
fn expect_config_error(text: &str) -> String {
    let path = config_file(text);
    let out = run_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--config", path.to_str().expect("utf-8 path")]),
        b"",
        PATIENCE,
    );
    let message = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{message}\nconfig:\n{text}");
    assert!(message.starts_with("lb: "), "{message}");
    message
}

fn backend_only() -> String {
    "[[backend]]\naddress = \"127.0.0.1:9\"\n".to_string()
}

/// `[tls]` with these keys (and `listen` on port 0 unless given) and these
/// `[[tls.certificate]]` entries (cert, key paths).
fn tls_text(keys: &str, entries: &[(&str, &str)]) -> String {
    let listen = if keys.starts_with("listen") {
        ""
    } else {
        "listen = \"127.0.0.1:0\"\n"
    };
    let mut text = format!("[tls]\n{listen}{keys}\n");
    for (cert, key) in entries {
        text.push_str(&format!(
            "[[tls.certificate]]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ));
    }
    text + &backend_only()
}

#[test]
fn a_missing_certificate_or_key_file_is_named() {
    let s = site();
    let missing = s.pki.path("does-not-exist.crt");
    let missing = missing.to_str().expect("utf-8 path");
    let message = expect_config_error(&tls_text("", &[(missing, s.a.key_path())]));
    assert!(message.contains("tls.certificate[0].cert"), "{message}");
    assert!(message.contains(missing), "{message}");
    // The second entry's key: the index says which.
    let message = expect_config_error(&tls_text(
        "",
        &[
            (s.a.cert_path(), s.a.key_path()),
            (s.b.cert_path(), missing),
        ],
    ));
    assert!(message.contains("tls.certificate[1].key"), "{message}");
}

#[test]
fn files_that_are_not_pem_certificates_and_keys_are_named() {
    let s = site();
    let junk = temp_file("tls-junk.pem", "this is not PEM\n");
    let junk = junk.to_str().expect("utf-8 path");
    let message = expect_config_error(&tls_text("", &[(junk, s.a.key_path())]));
    assert!(message.contains("tls.certificate[0].cert"), "{message}");
    let message = expect_config_error(&tls_text("", &[(s.a.cert_path(), junk)]));
    assert!(message.contains("tls.certificate[0].key"), "{message}");
    // A key where the certificate should be, and the other way round.
    let message = expect_config_error(&tls_text("", &[(s.a.key_path(), s.a.cert_path())]));
    assert!(message.contains("tls.certificate[0]"), "{message}");
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let pki = Pki::new("mismatch");
    let leaf = pki.mismatched_leaf("wrong", &["a.test"]);
    let message = expect_config_error(&tls_text("", &[(leaf.cert_path(), leaf.key_path())]));
    assert!(message.contains("tls.certificate[0]"), "{message}");
    // Another certificate's key (of another kind, too).
    let s = site();
    let message = expect_config_error(&tls_text("", &[(s.a.cert_path(), s.b.key_path())]));
    assert!(message.contains("tls.certificate[0]"), "{message}");
}

#[test]
fn two_certificates_for_one_name_clash() {
    let pki = Pki::new("clash");
    let first = pki.leaf("first", &["a.test", "www.a.test"], KeyKind::EcdsaP256);
    let second = pki.leaf("second", &["www.a.test"], KeyKind::EcdsaP256);
    let message = expect_config_error(&tls_text(
        "",
        &[
            (first.cert_path(), first.key_path()),
            (second.cert_path(), second.key_path()),
        ],
    ));
    assert!(message.contains("tls.certificate[1]"), "{message}");
    assert!(message.contains("www.a.test"), "{message}");
}

#[test]
fn min_version_must_be_1_2_or_1_3() {
    let s = site();
    let cert = [(s.a.cert_path(), s.a.key_path())];
    for bad in ["\"1.1\"", "\"1.0\"", "\"TLSv1.3\"", "1.3"] {
        let message = expect_config_error(&tls_text(&format!("min_version = {bad}"), &cert));
        assert!(message.contains("tls.min_version"), "{bad}: {message}");
    }
}

#[test]
fn other_tls_keys_are_checked_too() {
    let s = site();
    let cert = [(s.a.cert_path(), s.a.key_path())];
    let message = expect_config_error(&tls_text("handshake_timeout = \"soon\"", &cert));
    assert!(message.contains("tls.handshake_timeout"), "{message}");
    let message = expect_config_error(&tls_text("redirect_http = \"yes\"", &cert));
    assert!(message.contains("tls.redirect_http"), "{message}");
    let message = expect_config_error(&tls_text("listen = \"nowhere\"", &cert));
    assert!(message.contains("tls.listen"), "{message}");
    let message = expect_config_error(&tls_text("alpn = [\"h2\"]", &cert));
    assert!(message.contains("alpn"), "unknown key: {message}");
    // A TLS listener needs a certificate to present.
    let message = expect_config_error(&tls_text("", &[]));
    assert!(message.contains("tls.certificate"), "{message}");
}

#[test]
fn an_expired_certificate_only_warns() {
    // From the CA s_client trusts, so that the expiry is the only thing wrong with it.
    let old = site()
        .pki
        .expired_leaf("expired", &["a.test"], KeyKind::EcdsaP256);
    let b1 = DemoBackend::start("b1");
    let lb = Lb::start(&config_text("", &[&old], &[&b1]));
    let warning = lb.log_line("expired");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("tls.certificate[0]") || warning.contains(old.cert_path()),
        "the warning does not say which certificate: {warning}"
    );
    // It is served as it is; clients decide (s_client reports the expiry, and carries on).
    let out = s_client(
        lb.tls,
        &["-servername", "a.test", "-ign_eof"],
        &closing_request("a.test"),
    );
    assert_eq!(out.server_cert(), old.pem(), "{}", out.text);
    assert!(out.text.contains("certificate has expired"), "{}", out.text);
    assert_eq!(
        out.http_status_line(),
        Some("HTTP/1.1 200 OK"),
        "{}",
        out.text
    );
}
