//! Health checks, passive detection, retries and failover: what clients see when backends die,
//! hang, babble or come back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb::config::BackendConfig;
use lb::upstream::BackendState;

use crate::support::*;

/// An address nothing listens on: connecting to it is refused at once.
fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

fn dead(name: &str) -> BackendConfig {
    BackendConfig {
        name: name.to_string(),
        address: dead_address(),
        weight: 1,
        tls: None,
        backup: false,
    }
}

fn state(proxy: &Proxy, index: usize) -> BackendState {
    proxy.backends.in_slot(index).expect("backend").state()
}

#[test]
fn dead_backend_is_skipped_and_marked_down() {
    let b1 = DemoBackend::start("b1");
    let b3 = DemoBackend::start("b3");
    let proxy = Proxy::start_with(vec![b1.config(), dead("b2"), b3.config()], |_| {});
    let mut served = Vec::new();
    for _ in 0..30 {
        let r = get(proxy.addr, "/");
        assert_eq!(r.status, 200, "{}", r.text());
        served.push(r.backend().to_string());
    }
    assert!(served.iter().all(|b| b == "b1" || b == "b3"), "{served:?}");
    assert_eq!(state(&proxy, 1), BackendState::Down);
    // Once down it gets no more tries: the one redispatch was the request that found it dead.
    let b2 = proxy.backends.in_slot(1).expect("b2");
    assert_eq!(b2.redispatches.load(Ordering::Relaxed), 1);
}

#[test]
fn all_backends_down_gives_503_fast() {
    let proxy = Proxy::start_with(vec![dead("a"), dead("b"), dead("c")], |c| {
        c.timeouts.connect = Duration::from_secs(5);
    });
    for _ in 0..3 {
        let started = Instant::now();
        let r = get(proxy.addr, "/");
        let took = started.elapsed();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-lb-error"), Some("all-backends-unreachable"));
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
}

#[test]
fn hanging_backend_yields_504_within_the_timeout() {
    // Reads requests and never answers.
    let hang = ScriptedBackend::start(|mut s, _| {
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let timeout = Duration::from_millis(300);
    let proxy = Proxy::start_with(vec![hang.config("hang")], |c| {
        c.timeouts.backend_response = timeout;
    });
    let started = Instant::now();
    let r = get(proxy.addr, "/");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-lb-error"), Some("backend-timeout"));
    assert!(took >= timeout && took < timeout * 4, "took {took:?}");
    assert_eq!(state(&proxy, 0), BackendState::Down);
}

#[test]
fn garbage_backend_gives_502_and_a_get_goes_elsewhere() {
    let garbage = ScriptedBackend::start(|mut s, _| {
        let _ = read_head(&mut s);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    });
    let alone = Proxy::start_with(vec![garbage.config("garbage")], |_| {});
    let r = get(alone.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-lb-error"), Some("bad-response"));

    let good = DemoBackend::start("good");
    let proxy = Proxy::start_with(vec![garbage.config("garbage"), good.config()], |_| {});
    // The first request goes to the garbage backend first and is retried on the good one.
    let r = get(proxy.addr, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "good");
    let redispatched = proxy
        .backends
        .in_slot(0)
        .expect("garbage")
        .redispatches
        .load(Ordering::Relaxed);
    assert_eq!(redispatched, 1);
}

/// A backend that reads a whole request (head and `Content-Length` body) and then closes
/// without answering, like one that crashed while handling it.
fn crashing_backend(requests: Arc<AtomicUsize>) -> ScriptedBackend {
    ScriptedBackend::start(move |mut s, _| {
        let head = read_head(&mut s);
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        let _ = s.read_exact(&mut body);
        requests.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn post_whose_body_was_sent_is_not_retried() {
    let crashed = Arc::new(AtomicUsize::new(0));
    let crashing = crashing_backend(Arc::clone(&crashed));
    let (recording, recorded) =
        recording_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let proxy = Proxy::start_with(
        vec![crashing.config("crashing"), recording.config("recording")],
        |_| {},
    );
    let r = roundtrip(
        proxy.addr,
        b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-lb-error"), Some("backend-closed"));
    assert_eq!(crashed.load(Ordering::SeqCst), 1);
    assert!(
        recorded.lock().expect("lock").is_empty(),
        "the POST went to a second backend"
    );
}

#[test]
fn get_that_met_a_crash_is_retried_on_another_backend() {
    let crashed = Arc::new(AtomicUsize::new(0));
    let crashing = crashing_backend(Arc::clone(&crashed));
    let good = DemoBackend::start("good");
    let proxy = Proxy::start_with(vec![crashing.config("crashing"), good.config()], |_| {});
    let r = get(proxy.addr, "/echo");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "good");
    assert_eq!(crashed.load(Ordering::SeqCst), 1);
    // Its failure on live traffic took the crashing backend out of rotation.
    assert_eq!(state(&proxy, 0), BackendState::Down);
    for _ in 0..5 {
        assert_eq!(get(proxy.addr, "/").backend(), "good");
    }
    assert_eq!(crashed.load(Ordering::SeqCst), 1);
}

#[test]
fn retries_are_bounded_by_the_config() {
    let crashed = Arc::new(AtomicUsize::new(0));
    let backends: Vec<ScriptedBackend> = (0..4)
        .map(|_| crashing_backend(Arc::clone(&crashed)))
        .collect();
    let configs = backends
        .iter()
        .enumerate()
        .map(|(i, b)| b.config(&format!("crash-{i}")))
        .collect();
    let proxy = Proxy::start_with(configs, |c| c.retries = 1);
    let r = get(proxy.addr, "/");
    assert_eq!(r.status, 502);
    // One try and one retry.
    assert_eq!(crashed.load(Ordering::SeqCst), 2);
}

/// A backend whose `/health` answers 200 or 500 as the test says; everything else gets 200.
fn switchable_backend(
    name: &'static str,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
) -> ScriptedBackend {
    ScriptedBackend::start(move |mut s, _| loop {
        let head = read_head(&mut s);
        if head.is_empty() {
            return;
        }
        let is_probe = head.starts_with(b"GET /health ");
        let status = if is_probe {
            probes.fetch_add(1, Ordering::SeqCst);
            if healthy.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "500 Internal Server Error"
            }
        } else {
            "200 OK"
        };
        let response =
            format!("HTTP/1.1 {status}\r\nX-Backend: {name}\r\nContent-Length: 2\r\n\r\nok");
        if s.write_all(response.as_bytes()).is_err() {
            return;
        }
    })
}

#[test]
fn health_checks_flip_on_the_nth_result_and_bring_a_backend_back() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let flaky = switchable_backend("flaky", Arc::clone(&healthy), Arc::clone(&probes));
    let steady = DemoBackend::start("steady");
    let proxy = Proxy::start_with_health(vec![flaky.config("flaky"), steady.config()], |c| {
        c.health.interval = Duration::from_millis(40);
        c.health.timeout = Duration::from_millis(500);
        c.health.rise = 3;
        c.health.fall = 2;
    });
    wait_until("a first probe", || probes.load(Ordering::SeqCst) >= 1);
    assert_eq!(state(&proxy, 0), BackendState::Up);

    healthy.store(false, Ordering::SeqCst);
    let failing_from = probes.load(Ordering::SeqCst);
    wait_until("flaky to go down", || {
        state(&proxy, 0) == BackendState::Down
    });
    // fall = 2: down on the second failed probe, not before (the first counted probe may have
    // been answered before the switch).
    let failed = probes.load(Ordering::SeqCst) - failing_from;
    assert!((2..=3).contains(&failed), "went down after {failed} probes");
    for _ in 0..6 {
        assert_eq!(get(proxy.addr, "/").backend(), "steady");
    }

    healthy.store(true, Ordering::SeqCst);
    let passing_from = probes.load(Ordering::SeqCst);
    wait_until("flaky to come back", || {
        state(&proxy, 0) == BackendState::Up
    });
    let passed = probes.load(Ordering::SeqCst) - passing_from;
    assert!((3..=4).contains(&passed), "came back after {passed} probes");
    let health = proxy.backends.in_slot(0).expect("flaky").health();
    assert_eq!(health.flips, 2);
    assert_eq!(health.last_ok, Some(true));
    assert_eq!(health.last_detail, "status 200");
    let served: Vec<String> = (0..4)
        .map(|_| get(proxy.addr, "/").backend().to_string())
        .collect();
    assert!(served.iter().any(|b| b == "flaky"), "{served:?}");
}

#[test]
fn health_check_timeouts_take_a_hanging_backend_down() {
    let hang = ScriptedBackend::start(|mut s, _| {
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let steady = DemoBackend::start("steady");
    let proxy = Proxy::start_with_health(vec![hang.config("hang"), steady.config()], |c| {
        c.health.interval = Duration::from_millis(50);
        c.health.timeout = Duration::from_millis(100);
        c.health.fall = 2;
    });
    wait_until("the hanging backend to go down", || {
        state(&proxy, 0) == BackendState::Down
    });
    assert_eq!(
        proxy
            .backends
            .in_slot(0)
            .expect("hang")
            .health()
            .last_detail,
        "timeout"
    );
    for _ in 0..4 {
        assert_eq!(get(proxy.addr, "/").backend(), "steady");
    }
}

#[test]
fn every_backend_failing_checks_still_serves_by_failing_open() {
    let healthy = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicUsize::new(0));
    let sick = switchable_backend("sick", Arc::clone(&healthy), Arc::clone(&probes));
    let proxy = Proxy::start_with_health(vec![sick.config("sick")], |c| {
        c.health.interval = Duration::from_millis(30);
        c.health.fall = 1;
    });
    wait_until("the backend to go down", || {
        state(&proxy, 0) == BackendState::Down
    });
    let r = get(proxy.addr, "/");
    assert_eq!(
        r.status, 200,
        "a down verdict must not turn into a certain 503"
    );
    assert_eq!(r.backend(), "sick");
}

#[test]
fn backend_killed_mid_keep_alive_loses_no_get() {
    let b1 = DemoBackend::start("b1");
    let mut b2 = Some(DemoBackend::start("b2"));
    let b2_config = b2.as_ref().expect("b2").config();
    let proxy = Proxy::start_with(vec![b1.config(), b2_config], |_| {});
    let mut client = connect(proxy.addr);
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..40 {
        if i == 10 {
            // SIGKILL: pooled connections to it are reset, new connects refused.
            drop(b2.take());
        }
        client
            .write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let r = read_response(&mut client, false);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        seen.lock().expect("lock").push(r.backend().to_string());
    }
    let seen = seen.lock().expect("lock");
    assert!(seen[12..].iter().all(|b| b == "b1"), "{seen:?}");
}

#[test]
fn the_only_backend_is_retried_after_a_crash() {
    // The first connection dies without an answer; later ones are served.
    let only = ScriptedBackend::start(|mut s, n| {
        let _ = read_head(&mut s);
        if n > 0 {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nX-Backend: only\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let proxy = Proxy::start_with(vec![only.config("only")], |_| {});
    let r = get(proxy.addr, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(only.connection_count(), 2);
}
