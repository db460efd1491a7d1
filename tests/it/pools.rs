//! Idle backend connections with several reactors (`workers = 2`): a reactor with no idle
//! connection to a backend takes one another reactor is not using before it opens a new one,
//! and `limits.pool_max_idle` bounds the whole process. The kernel spreads client connections
//! over the reactors' listeners (SO_REUSEPORT) anew for each connection, so a load that comes
//! in waves of fresh connections lands unevenly on them, wave after wave.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;

use crate::support::{
    connect, connections_to, read_response, roundtrip, temp_file, wait_until, DemoBackend,
    ProxyProcess, TCP_ESTABLISHED,
};

/// Client connections at once in each wave.
const CLIENTS: usize = 8;
const WAVES: usize = 10;
const REQUESTS: usize = 50;

/// lb with two reactors in front of `backend`, probing it once (at startup) and not again
/// during the test, so that every later connection the backend sees is lb's traffic.
fn two_workers(name: &str, backend: &DemoBackend, limits: &str) -> ProxyProcess {
    let config = format!(
        "workers = 2\n[health]\ninterval = \"1h\"\n[limits]\n{limits}\n\
         [[backend]]\nname = \"{}\"\naddress = \"{}\"\n",
        backend.name, backend.addr
    );
    let path = temp_file(&format!("pools-{name}.toml"), &config);
    let proxy = ProxyProcess::start(&["--config", path.to_str().expect("utf-8 path")]);
    wait_until("the startup health probe", || backend.stats().1 >= 1);
    proxy
}

/// `clients` connections that all connect, then each send `requests` keep-alive GETs of
/// `path` and check the answers.
fn wave(proxy: SocketAddr, clients: usize, path: &'static str, requests: usize) {
    let start = Arc::new(Barrier::new(clients));
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut s = connect(proxy);
                start.wait();
                for i in 0..requests {
                    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
                    s.write_all(request.as_bytes()).expect("send request");
                    let resp = read_response(&mut s, false);
                    assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
}

#[test]
fn two_workers_open_no_more_backend_connections_than_requests_in_flight() {
    // Per-reactor pools would end up with as many connections as each reactor ever had clients
    // at once, added up: about 12 to 14 here. One reactor needs at most CLIENTS.
    let backend = DemoBackend::start("waves");
    let proxy = two_workers("waves", &backend, "");
    let (conns_before, requests_before) = backend.stats();
    for _ in 0..WAVES {
        wave(proxy.addr, CLIENTS, "/", REQUESTS);
    }
    let (conns_after, requests_after) = backend.stats();
    // The first stats request is counted in the second's figures.
    let opened = conns_after - conns_before - 1;
    let served = requests_after - requests_before - 1;
    assert_eq!(served, (WAVES * CLIENTS * REQUESTS) as u64);
    assert!(
        opened <= CLIENTS as u64,
        "{opened} backend connections for {served} requests from {WAVES} waves of {CLIENTS} \
         client connections: never more than {CLIENTS} requests were in flight"
    );
}

#[test]
fn pool_max_idle_bounds_the_process_not_each_worker() {
    // Eight slow requests at once: eight backend connections, spread over both reactors. Once
    // they are idle, four stay (pool_max_idle), not four per reactor.
    let backend = DemoBackend::start("bounded");
    let proxy = two_workers("bounded", &backend, "pool_max_idle = 4");
    let (conns_before, _) = backend.stats();
    wave(proxy.addr, CLIENTS, "/delay/300", 1);
    let (conns_after, _) = backend.stats();
    assert_eq!(conns_after - conns_before - 1, CLIENTS as u64);
    wait_until("the idle connections past pool_max_idle to close", || {
        connections_to(backend.addr, &[TCP_ESTABLISHED]) == 4
    });
    // Four clients at once, wherever the kernel puts them, need no new connection: each
    // reactor uses the kept ones, its own or the other's.
    for _ in 0..WAVES {
        wave(proxy.addr, 4, "/", REQUESTS);
    }
    let (conns_last, _) = backend.stats();
    assert_eq!(conns_last - conns_after - 1, 0, "new backend connections");
}

#[test]
fn removing_a_backend_closes_its_idle_connections_in_every_worker() {
    // Eight slow requests at once leave idle connections parked by both reactors. The removal
    // is carried out by one of them; the other must close its own within a pool sweep, not
    // keep them until the (here five-minute) idle timeout.
    let backend = DemoBackend::start("removed");
    let proxy = two_workers("removed", &backend, "[timeouts]\nbackend_idle = \"300s\"");
    let admin = proxy.admin_addr();
    wave(proxy.addr, CLIENTS, "/delay/300", 1);
    wait_until("every backend connection to be idle and open", || {
        connections_to(backend.addr, &[TCP_ESTABLISHED]) == CLIENTS
    });
    let answer = roundtrip(
        admin,
        format!(
            "DELETE /api/backends/{} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
            backend.name
        )
        .as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    wait_until("the removed backend's idle connections to close", || {
        connections_to(backend.addr, &[TCP_ESTABLISHED]) == 0
    });
}
