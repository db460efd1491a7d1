//! `[tls]` and the backends' TLS keys: the errors that come before any file is read, and the
//! default server name.

use super::{assert_err, parse};

#[test]
fn tls_settings_are_checked_before_any_file_is_read() {
    assert_err(
        "[tls]\nmin_version = \"1.1\"\n[[tls.certificate]]\ncert = \"a\"\nkey = \"b\"\n",
        "tls.min_version",
        2,
        "\"1.2\" or \"1.3\"",
    );
    assert_err(
        "[tls]\nlisten = \"127.0.0.1:8443\"\n",
        "tls.certificate",
        1,
        "at least one",
    );
    assert_err(
        "[tls]\n[[tls.certificate]]\ncert = \"a.crt\"\n",
        "tls.certificate[0].key",
        2,
        "missing",
    );
    assert_err(
        "[tls]\n[[tls.certificate]]\ncert = \"/nonexistent/a.crt\"\nkey = \"/nonexistent/a.key\"\n",
        "tls.certificate[0].cert",
        3,
        "cannot read /nonexistent/a.crt",
    );
}

#[test]
fn backend_tls_keys_need_tls_on() {
    assert_err(
        "[[backend]]\naddress = \"127.0.0.1:8001\"\ntls_server_name = \"api.internal\"\n",
        "backend[0].tls_server_name",
        3,
        "tls = true",
    );
    assert_err(
        "[[backend]]\naddress = \"127.0.0.1:8001\"\ntls = true\ntls_ca = \"/nonexistent/ca.pem\"\n",
        "backend[0].tls_ca",
        4,
        "cannot read",
    );
    let cfg = parse("[[backend]]\naddress = \"localhost:8443\"\ntls = true\n");
    let tls = cfg.backends[0].tls.as_ref().expect("tls on");
    assert_eq!(tls.server_name, "localhost", "the host as written");
    assert_eq!(tls.ca, None);
}
