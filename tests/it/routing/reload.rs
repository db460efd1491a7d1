//! A reload rewires pools and routes while clients keep sending: nothing fails, nothing drops.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use super::*;

#[test]
fn reload_rewires_routes_and_pools_under_load_without_a_failed_request() {
    let (a1, w1, n1, d1) = (
        DemoBackend::start("a1"),
        DemoBackend::start("w1"),
        DemoBackend::start("n1"),
        DemoBackend::start("d1"),
    );
    let before = {
        let (a, w, d) = (a1.config(), w1.config(), d1.config());
        move |c: &mut Config| {
            c.backends = vec![d];
            c.pools = vec![pool("api", vec![a]), pool("www", vec![w])];
            c.routes = vec![to_pool("api", prefix("/x/")), to_pool("www", prefix("/y/"))];
        }
    };
    let proxy = Proxy::start_with(Vec::new(), before);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            let addr = proxy.addr;
            thread::spawn(move || {
                // Keep-alive connections that live across the reload.
                let mut s = connect(addr);
                let path = if i % 2 == 0 { "/x/a" } else { "/y/b" };
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent =
                        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
                    let r = read_response(&mut s, false);
                    // The demo backends answer 404 for these paths: what matters is that a
                    // backend answered.
                    if sent.is_err() || r.backend().is_empty() || r.header("x-lb-error").is_some() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    if seen.last() != Some(&r.backend().to_string()) {
                        seen.push(r.backend().to_string());
                    }
                }
                seen
            })
        })
        .collect();
    wait_until("traffic before the reload", || {
        served.load(Ordering::Relaxed) > 200
    });

    // /x/ now goes to a new pool, /y/ to the default; the pool www is gone.
    let mut after = Config {
        access_log: false,
        backends: vec![d1.config()],
        ..Config::default()
    };
    after.pools = vec![
        pool("api", vec![a1.config()]),
        pool("new", vec![n1.config()]),
    ];
    after.routes = vec![to_pool("new", prefix("/x/"))];
    proxy.reload(after);
    wait_until("/x/ served by the new pool", || {
        get_as(proxy.addr, "h", "/x/a", "").backend() == "n1"
    });
    let at_reload = served.load(Ordering::Relaxed);
    wait_until("traffic after the reload", || {
        served.load(Ordering::Relaxed) > at_reload + 200
    });
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Vec<String>> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests");
    for (i, seen) in seen.iter().enumerate() {
        let want = if i % 2 == 0 {
            ["a1", "n1"]
        } else {
            ["w1", "d1"]
        };
        assert_eq!(seen, &want, "client {i}: the same connection, rerouted");
    }
    assert_eq!(get_as(proxy.addr, "h", "/y/b", "").backend(), "d1");
    assert!(proxy.backends.pool_index("www").is_none());
    assert!(proxy.backends.find("w1").is_none(), "removed with its pool");
}
