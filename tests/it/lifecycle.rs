//! Graceful stop (SIGTERM) and configuration reload (SIGHUP) of the real `lb` binary.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::*;

fn signal(proxy: &ProxyProcess, sig: i32) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    let rc = unsafe { libc::kill(proxy.child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

fn config_file(name: &str, body: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("lb-lifecycle-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, body).expect("write config");
    path
}

fn backend_table(b: &DemoBackend) -> String {
    format!(
        "[[backend]]\nname = \"{}\"\naddress = \"{}\"\n",
        b.name, b.addr
    )
}

#[test]
fn health_endpoint_says_draining_during_a_graceful_stop() {
    let backend = DemoBackend::start("slow");
    let path = config_file("health", &backend_table(&backend));
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let admin = proxy.admin_addr();
    let r = get(admin, "/api/health");
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"status":"ready"}"#.to_string())
    );
    // A request in flight keeps the process in its drain long enough to ask.
    let mut client = connect(proxy.addr);
    client
        .write_all(b"GET /delay/800 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    wait_until("the request to reach the backend", || {
        backend.stats().1 >= 1
    });
    signal(&proxy, libc::SIGTERM);
    wait_until("the health endpoint to say draining", || {
        get(admin, "/api/health").status == 503
    });
    assert_eq!(get(admin, "/api/health").text(), r#"{"status":"draining"}"#);
    assert_eq!(read_response(&mut client, false).status, 200);
    assert!(proxy.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_exits_zero() {
    let backend = DemoBackend::start("slow");
    let path = config_file("drain", &backend_table(&backend));
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = connect(proxy.addr);
            s.write_all(b"GET /delay/700 HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("write");
            s
        })
        .collect();
    // An idle keep-alive connection, which the drain closes at once.
    let mut idle = connect(proxy.addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut idle, false).status, 200);
    wait_until("the slow requests to reach the backend", || {
        backend.stats().1 >= 6
    });
    signal(&proxy, libc::SIGTERM);
    assert_closed(&mut idle);
    let started = Instant::now();
    for mut c in clients {
        let r = read_response(&mut c, false);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "delayed 700 ms");
        assert_eq!(r.header("connection"), Some("close"));
        assert_closed(&mut c);
    }
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        TcpStream::connect(proxy.addr).is_err(),
        "still accepting after the drain"
    );
}

#[test]
fn a_connection_yet_to_send_its_first_request_is_served_through_the_drain() {
    let backend = DemoBackend::start("last");
    let path = config_file("drain-new", &backend_table(&backend));
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let admin = proxy.admin_addr();
    // Connected (maybe by an L4 tier that has not seen the drain yet), request still on its
    // way: one accepted already, one perhaps still in the listener's backlog when the drain
    // begins.
    let mut accepted = connect(proxy.addr);
    wait_until("the first connection to be accepted", || {
        get(admin, "/api/state")
            .text()
            .contains("\"active_connections\":1")
    });
    let mut queued = connect(proxy.addr);
    signal(&proxy, libc::SIGTERM);
    proxy.wait_for_log("draining");
    for (what, s) in [("accepted", &mut accepted), ("queued", &mut queued)] {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let r = read_response(s, false);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.backend(), "last", "{what}");
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert_closed(s);
    }
    assert!(proxy.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let backend = DemoBackend::start("slower");
    let body = format!("[timeouts]\ndrain = \"300ms\"\n{}", backend_table(&backend));
    let path = config_file("drain-timeout", &body);
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let mut client = connect(proxy.addr);
    client
        .write_all(b"GET /delay/5000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    wait_until("the request to reach the backend", || {
        backend.stats().1 >= 1
    });
    let started = Instant::now();
    signal(&proxy, libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(4));
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

fn served_by(addr: SocketAddr) -> String {
    get(addr, "/").backend().to_string()
}

#[test]
fn sighup_applies_a_new_backend_set_without_dropping_connections() {
    let old = DemoBackend::start("old");
    let new = DemoBackend::start("new");
    let path = config_file("reload", &backend_table(&old));
    let proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    assert_eq!(served_by(proxy.addr), "old");

    // A keep-alive client that stays connected across the reload.
    let mut client = connect(proxy.addr);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut client, false).backend(), "old");

    let body = format!(
        "retries = 1\n[health]\ninterval = \"200ms\"\n{}",
        backend_table(&new)
    );
    std::fs::write(&path, body).expect("rewrite config");
    signal(&proxy, libc::SIGHUP);
    proxy.wait_for_log("configuration reloaded");
    for _ in 0..5 {
        assert_eq!(served_by(proxy.addr), "new");
    }
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let r = read_response(&mut client, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "new");
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_config() {
    let only = DemoBackend::start("only");
    let path = config_file("broken", &backend_table(&only));
    let proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    assert_eq!(served_by(proxy.addr), "only");
    std::fs::write(&path, "listen = 42\n[[backend]]\naddress = \"nowhere\"\n").expect("rewrite");
    signal(&proxy, libc::SIGHUP);
    proxy.wait_for_log("configuration refused");
    for _ in 0..3 {
        assert_eq!(served_by(proxy.addr), "only");
    }
}

/// CPU ticks (user + system) a thread of `pid` named `name` has used.
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
    }
    None
}

#[test]
fn two_workers_share_the_port_the_backends_and_the_round_robin() {
    let backends: Vec<DemoBackend> = (1..=3)
        .map(|i| DemoBackend::start(&format!("w{i}")))
        .collect();
    let tables: String = backends.iter().map(backend_table).collect();
    let path = config_file("workers", &format!("workers = 2\n{tables}"));
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let pid = proxy.child.id();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..300 {
        let r = get(proxy.addr, "/");
        assert_eq!(r.status, 200);
        *counts.entry(r.backend().to_string()).or_insert(0) += 1;
    }
    // One round-robin cursor for both reactors: exact shares.
    for b in &backends {
        assert_eq!(counts.get(&b.name), Some(&100), "{counts:?}");
    }
    // The second reactor runs on a thread of its own, beside the first on the main thread.
    assert!(
        thread_ticks(pid, "reactor-1").is_some(),
        "no second reactor thread"
    );
    signal(&proxy, libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
}

/// The state the admin API gives each backend whose name starts with `prefix`.
fn states_of(admin: SocketAddr, prefix: &str) -> Vec<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_slice(&get(admin, "/api/state").body).expect("state JSON");
    doc["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| Some((b["name"].as_str()?, b["state"].as_str()?)))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, state)| (name.to_string(), state.to_string()))
        .collect()
}

#[test]
fn sighup_starts_and_ends_dns_discovery_of_an_entry() {
    let fixed = DemoBackend::start("fixed");
    let d1 = DemoBackend::start("d1");
    let d2 = DemoBackend::start("d2");
    let dns = DnsServer::start(Zone::srv_of("_http._tcp.app.test", "app.test", &[&d1, &d2]));
    let without = format!(
        "[health]\ninterval = \"50ms\"\nrise = 1\n\
         [discovery]\nresolve_interval = \"100ms\"\nresolvers = [\"{}\"]\n{}",
        dns.addr,
        backend_table(&fixed)
    );
    let with =
        format!("{without}[[backend]]\nname = \"app\"\ndiscover = \"_http._tcp.app.test\"\n");
    let path = config_file("discover", &without);
    let proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let admin = proxy.admin_addr();
    assert_eq!(served_by(proxy.addr), "fixed");
    assert_eq!(dns.queries.load(std::sync::atomic::Ordering::SeqCst), 0);

    std::fs::write(&path, &with).expect("rewrite config");
    signal(&proxy, libc::SIGHUP);
    let mut seen = std::collections::HashSet::new();
    wait_until("the discovered backends to take requests", || {
        seen.insert(served_by(proxy.addr));
        seen.contains("d1") && seen.contains("d2")
    });
    let names = |states: Vec<(String, String)>| {
        let mut names: Vec<String> = states.into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    };
    let mut expected = [format!("app@{}", d1.addr), format!("app@{}", d2.addr)];
    expected.sort();
    assert_eq!(names(states_of(admin, "app@")), expected);

    std::fs::write(&path, &without).expect("rewrite config");
    signal(&proxy, libc::SIGHUP);
    wait_until("the discovered backends to be removed", || {
        states_of(admin, "app@").iter().all(|(_, s)| s == "removed")
    });
    for _ in 0..10 {
        assert_eq!(served_by(proxy.addr), "fixed");
    }
    // No more lookups for an entry that is gone (200 ms: two resolve intervals).
    let asked = dns.queries.load(std::sync::atomic::Ordering::SeqCst);
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        assert_eq!(served_by(proxy.addr), "fixed");
    }
    assert_eq!(dns.queries.load(std::sync::atomic::Ordering::SeqCst), asked);
}

/// Reads `stream` until it ends, at most `within`; returns what came and whether it ended.
fn read_until_end(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset ends it too.
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[test]
fn sigterm_ends_event_streams_and_admin_connections_and_exits_zero_promptly() {
    let backend = DemoBackend::start("b");
    let path = config_file("stop-admin", &backend_table(&backend));
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let admin = proxy.admin_addr();
    // A dashboard's event stream, live.
    let mut events = connect(admin);
    events
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: admin\r\nAccept: text/event-stream\r\n\r\n")
        .expect("write");
    let head = String::from_utf8(read_head(&mut events)).expect("head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let mut first = String::new();
    wait_until("the first stats event", || {
        let (more, ended) = read_until_end(&mut events, Duration::from_millis(100));
        assert!(!ended, "the stream ended early");
        first.push_str(&more);
        first.contains("event: stats")
    });
    // A client that connected and never sent its request: its thread waits in a read.
    let mut silent = connect(admin);
    // Connections are taken in order: once this is answered, the silent one has its thread.
    assert_eq!(get(admin, "/api/health").status, 200);

    let started = Instant::now();
    signal(&proxy, libc::SIGTERM);
    let (_, ended) = read_until_end(&mut events, Duration::from_secs(3));
    assert!(ended, "the event stream did not end");
    let (_, ended) = read_until_end(&mut silent, Duration::from_secs(3));
    assert!(ended, "the silent admin connection was not closed");
    let status = proxy.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let line = proxy.wait_for_log("stopped: admin API");
    assert!(
        line.contains("event streams, health checks, discovery"),
        "{line}"
    );
}

#[test]
fn sigterm_does_not_wait_for_a_dns_server_that_never_answers() {
    let backend = DemoBackend::start("b");
    // Bound, never read: every query to it goes unanswered until the 30 s timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let body = format!(
        "[discovery]\ntimeout = \"30s\"\nresolvers = [\"{}\"]\n{}\
         [[backend]]\nname = \"app\"\ndiscover = \"app.test:80\"\n",
        silent.local_addr().expect("addr"),
        backend_table(&backend)
    );
    let path = config_file("stop-dns", &body);
    let mut proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    assert_eq!(served_by(proxy.addr), "b");
    let started = Instant::now();
    signal(&proxy, libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(6));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    proxy.wait_for_log("the discovery thread did not stop in time");
}
