//! What an operator sees of the TLS listener through the admin API: its settings and
//! certificates in `/api/state`, and handshakes counted by version, resumption and failure
//! reason there and in `/metrics`.

use std::io::Write;

use super::*;

impl Lb {
    /// The admin API's address, from the startup log.
    fn admin(&self) -> SocketAddr {
        let line = self.log_line("admin API and dashboard on http://");
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.trim().trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"))
    }
}

fn tls_state(admin: SocketAddr) -> serde_json::Value {
    let resp = get(admin, "/api/state");
    assert_eq!(resp.status, 200, "{resp:?}");
    let state: serde_json::Value = serde_json::from_slice(&resp.body).expect("state JSON");
    state["tls"].clone()
}

#[test]
fn the_admin_api_shows_the_tls_settings_and_certificates() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("handshake_timeout = \"1s\"\nmin_version = \"1.2\"", &[&b1]);
    let admin = lb.admin();
    let tls = tls_state(admin);
    assert_eq!(tls["min_version"], "1.2", "{tls}");
    assert_eq!(tls["handshake_timeout_ms"], 1000, "{tls}");
    let s = site();
    let certs = tls["certificates"].as_array().expect("certificates");
    let listed: Vec<(&str, &serde_json::Value)> = certs
        .iter()
        .map(|c| (c["cert"].as_str().unwrap_or(""), &c["names"]))
        .collect();
    assert_eq!(
        listed,
        [
            (s.a.cert_path(), &serde_json::json!(["a.test"])),
            (s.b.cert_path(), &serde_json::json!(["b.test"])),
            (s.wild.cert_path(), &serde_json::json!(["*.wild.test"])),
        ],
        "{tls}"
    );
    assert_eq!(tls["handshakes"], 0, "{tls}");
    // The address it serves on, as for the plain listener: with port 0 configured, `:0` is of
    // no use to a dashboard or an operator.
    assert_eq!(tls["listen"], lb.tls.to_string(), "{tls}");
    let metrics = get(admin, "/metrics").text();
    let label = format!("lb_tls_resumptions_total{{listener=\"{}\"}} 0", lb.tls);
    assert!(
        metrics.lines().any(|l| l == label),
        "no {label:?} in {metrics}"
    );
}

#[test]
fn handshakes_are_counted_by_version_resumption_and_failure() {
    let b1 = DemoBackend::start("b1");
    let lb = Lb::site("handshake_timeout = \"1s\"", &[&b1]);
    let admin = lb.admin();
    let s = site();

    // Two full handshakes and one resumed; then one failure of each kind a client can cause.
    let session = s.pki.path(&format!("observe-{}.pem", std::process::id()));
    let session = session.to_str().expect("utf-8 path");
    let request = closing_request("a.test");
    let sni = ["-servername", "a.test", "-ign_eof"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = sni.iter().chain(extra).copied().collect();
        s_client(lb.tls, &args, &request)
    };
    assert_eq!(run(&["-tls1_3"]).version().as_deref(), Some("TLSv1.3"));
    assert!(!run(&["-tls1_2", "-sess_out", session]).reused());
    assert!(run(&["-tls1_2", "-sess_in", session]).reused());
    assert_eq!(
        run(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).version(),
        None
    );
    let mut plain = connect(lb.tls);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .expect("plain request");
    read_to_close(&mut plain);
    let mut garbage = connect(lb.tls);
    garbage.write_all(&[0xde; 64]).expect("garbage");
    read_to_close(&mut garbage);
    // Silent until handshake_timeout runs out.
    let mut silent = connect(lb.tls);
    read_to_close(&mut silent);
    // Gone before saying anything.
    let gone = connect(lb.tls);
    gone.shutdown(std::net::Shutdown::Write).expect("shutdown");
    drop(gone);

    let mut tls = tls_state(admin);
    let total = |tls: &serde_json::Value| -> u64 {
        let failures = tls["failures"].as_object().expect("failures");
        failures.values().filter_map(|n| n.as_u64()).sum()
    };
    let deadline = Instant::now() + PATIENCE;
    // Every failure counted (or the time up: the asserts below then say which is missing).
    while total(&tls) < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        tls = tls_state(admin);
    }
    eprintln!("tls state after the handshakes: {tls}");
    assert_eq!(tls["handshakes"], 3, "{tls}");
    assert_eq!(tls["resumed"], 1, "{tls}");
    assert_eq!(
        tls["versions"],
        serde_json::json!({"TLSv1.2": 2, "TLSv1.3": 1}),
        "{tls}"
    );
    let failures = &tls["failures"];
    for (reason, n) in [
        ("protocol_version", 1),
        ("plain_http", 1),
        ("bad_message", 1),
        ("timeout", 1),
        ("closed", 1),
        ("no_shared_parameters", 0),
        ("alert_received", 0),
        ("other", 0),
    ] {
        assert_eq!(failures[reason], n, "{reason}: {tls}");
    }

    // The same counts in Prometheus' format (its listener label is checked above).
    let metrics = get(admin, "/metrics").text();
    for (family, labels, value) in [
        ("lb_tls_handshakes_total", "version=\"1.2\"", 2),
        ("lb_tls_handshakes_total", "version=\"1.3\"", 1),
        ("lb_tls_resumptions_total", "", 1),
        ("lb_tls_handshake_failures_total", "reason=\"timeout\"", 1),
        (
            "lb_tls_handshake_failures_total",
            "reason=\"plain_http\"",
            1,
        ),
        (
            "lb_tls_handshake_failures_total",
            "reason=\"protocol_version\"",
            1,
        ),
    ] {
        let found = metrics.lines().any(|l| {
            l.starts_with(&format!("{family}{{listener=\""))
                && l.contains(labels)
                && l.ends_with(&format!("}} {value}"))
        });
        assert!(found, "no {family} {labels} {value} in {metrics}");
    }
}
