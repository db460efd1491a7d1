//! Backends from DNS: SRV and A records from a real DNS server on loopback, changed while load
//! runs.

use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use lb::config::{DiscoverConfig, DiscoverTarget, DiscoverySettings};
use lb::upstream::BackendState;

use crate::support::*;

const SRV_NAME: &str = "_http._tcp.app.test";

fn srv_zone(backends: &[&DemoBackend]) -> Zone {
    Zone::srv_of(SRV_NAME, "app.test", backends)
}

fn discovering(dns: &DnsServer, target: DiscoverTarget) -> impl FnOnce(&mut lb::config::Config) {
    let resolver = dns.addr;
    move |c| {
        c.discover = vec![DiscoverConfig {
            name: "app".into(),
            pool: "default".into(),
            backup: false,
            target,
            weight: 1,
            tls: None,
        }];
        c.discovery = DiscoverySettings {
            resolve_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            resolvers: vec![resolver],
        };
        c.health.interval = Duration::from_millis(50);
        c.health.timeout = Duration::from_millis(500);
        c.health.rise = 2;
    }
}

fn states(proxy: &Proxy) -> HashMap<String, BackendState> {
    proxy
        .backends
        .snapshot()
        .iter()
        .map(|b| (b.name.clone(), b.state()))
        .collect()
}

fn up_count(proxy: &Proxy) -> usize {
    states(proxy)
        .values()
        .filter(|s| **s == BackendState::Up)
        .count()
}

#[test]
fn srv_discovery_follows_scale_up_and_down_under_load_without_a_failed_request() {
    let d1 = DemoBackend::start("d1");
    let d2 = DemoBackend::start("d2");
    let d3 = DemoBackend::start("d3");
    let dns = DnsServer::start(srv_zone(&[&d1, &d2]));
    let proxy = Proxy::start_with_health(
        Vec::new(),
        discovering(&dns, DiscoverTarget::Srv(SRV_NAME.into())),
    );
    wait_until("the two published backends to come up", || {
        up_count(&proxy) == 2
    });
    let name = |b: &DemoBackend| format!("app@{}", b.addr);
    assert!(states(&proxy).contains_key(&name(&d1)));

    // Keep-alive load from four clients, remembering who answered.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let served: Arc<Mutex<Vec<String>>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, served, addr) = (
                Arc::clone(&stop),
                Arc::clone(&failed),
                Arc::clone(&served),
                proxy.addr,
            );
            thread::spawn(move || {
                let mut s = connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        s = connect(addr);
                        continue;
                    }
                    let r = read_response(&mut s, false);
                    if r.status == 200 {
                        served.lock().expect("lock").push(r.backend().to_string());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let seen = |backend: &str| served.lock().expect("lock").iter().any(|b| b == backend);
    wait_until("load on the first two", || seen("d1") && seen("d2"));

    // Scale up: d3 is published, passes its checks, and takes traffic.
    dns.set(srv_zone(&[&d1, &d2, &d3]));
    wait_until("d3 to serve", || seen("d3"));

    // Scale down to d3 alone: the others are removed, their requests in flight finish.
    dns.set(srv_zone(&[&d3]));
    wait_until("d1 and d2 to be removed", || {
        let s = states(&proxy);
        s.get(&name(&d1)) == Some(&BackendState::Removed)
            && s.get(&name(&d2)) == Some(&BackendState::Removed)
    });
    let mark = served.lock().expect("lock").len();
    wait_until("200 more responses", || {
        served.lock().expect("lock").len() >= mark + 200
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    let served = served.lock().expect("lock");
    // A response already under way at the removal may come from d1/d2; after that, d3 only.
    assert!(
        served[mark + 50..].iter().all(|b| b == "d3"),
        "{:?}",
        &served[mark..mark + 60]
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the changes"
    );
}

#[test]
fn a_records_discover_and_a_failed_lookup_keeps_the_last_known_set() {
    let only = DemoBackend::start("only");
    let mut zone = Zone::default();
    zone.a.insert("api.test".into(), vec![Ipv4Addr::LOCALHOST]);
    let dns = DnsServer::start(zone);
    let target = DiscoverTarget::Host {
        host: "api.test".into(),
        port: only.addr.port(),
    };
    let proxy = Proxy::start_with_health(Vec::new(), discovering(&dns, target));
    wait_until("the backend to come up", || up_count(&proxy) == 1);
    assert_eq!(get(proxy.addr, "/").backend(), "only");

    // The name disappears from DNS (NXDOMAIN): the last known set stays.
    dns.set(Zone::default());
    let asked = dns.queries.load(Ordering::SeqCst);
    wait_until("a few more lookups", || {
        dns.queries.load(Ordering::SeqCst) >= asked + 6
    });
    assert_eq!(up_count(&proxy), 1);
    assert_eq!(get(proxy.addr, "/").backend(), "only");
}

#[test]
fn a_published_backend_gets_traffic_only_after_passing_health_checks() {
    let good = DemoBackend::start("good");
    // Published in DNS, but failing its health checks.
    let sick = ScriptedBackend::start(|mut s, _| loop {
        let head = read_head(&mut s);
        if head.is_empty() {
            return;
        }
        let response: &[u8] = if head.starts_with(b"GET /health ") {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nX-Backend: sick\r\nContent-Length: 0\r\n\r\n"
        };
        if s.write_all(response).is_err() {
            return;
        }
    });
    let mut zone = Zone::default();
    zone.a
        .insert("good.app.test".into(), vec![Ipv4Addr::LOCALHOST]);
    zone.a
        .insert("sick.app.test".into(), vec![Ipv4Addr::LOCALHOST]);
    zone.srv.insert(
        SRV_NAME.into(),
        vec![
            ("good.app.test".into(), good.addr.port()),
            ("sick.app.test".into(), sick.addr.port()),
        ],
    );
    let dns = DnsServer::start(zone);
    let proxy = Proxy::start_with_health(
        Vec::new(),
        discovering(&dns, DiscoverTarget::Srv(SRV_NAME.into())),
    );
    wait_until("both to be known and good to be up", || {
        states(&proxy).len() == 2 && up_count(&proxy) == 1
    });
    for _ in 0..20 {
        assert_eq!(get(proxy.addr, "/").backend(), "good");
    }
    assert_eq!(
        states(&proxy).get(&format!("app@{}", sick.addr)),
        Some(&BackendState::Down)
    );
}
