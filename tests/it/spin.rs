//! `idle_spin`: a reactor kept busy by new connections polls on instead of sleeping, and
//! `/metrics` says for how long; an idle reactor, or one told `idle_spin = "0s"`, never does.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

fn spin_seconds(admin: SocketAddr) -> f64 {
    let text = get(admin, "/metrics").text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("lb_reactor_spin_seconds_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no lb_reactor_spin_seconds_total in /metrics"))
}

/// Clients that each open a connection per request, as fast as they are answered, until
/// `stop`; every answer must be a whole 200. Returns the count of requests served.
fn new_connection_load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u64> {
    let served = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut s = connect(addr);
                    s.write_all(b"GET / HTTP/1.1\r\nHost: spin\r\nConnection: close\r\n\r\n")
                        .expect("send the request");
                    let mut answer = Vec::new();
                    s.read_to_end(&mut answer).expect("read the answer");
                    assert!(
                        answer.starts_with(b"HTTP/1.1 200 "),
                        "{:?}",
                        String::from_utf8_lossy(&answer)
                    );
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    thread::spawn(move || {
        for w in workers {
            w.join().expect("a client thread failed");
        }
        served.load(Ordering::Relaxed)
    })
}

#[test]
fn a_reactor_busy_with_new_connections_spins_and_reports_it() {
    let backend = DemoBackend::start("b");
    // A window wider than the default, so that a loaded test machine, whose exchanges take
    // longer than the bench's, still shows idle moments within it.
    let proxy = Proxy::start_with_admin(vec![backend.config()], |c| {
        c.idle_spin = Duration::from_millis(1);
    });
    let admin = proxy.admin_addr();
    // One exchange, then idle: a light load never spins.
    assert_eq!(get(proxy.addr, "/").status, 200);
    assert_eq!(spin_seconds(admin), 0.0);

    let stop = Arc::new(AtomicBool::new(false));
    let load = new_connection_load(proxy.addr, 4, Arc::clone(&stop));
    wait_until("the busy reactor to report spinning", || {
        spin_seconds(admin) > 0.0
    });
    stop.store(true, Ordering::Relaxed);
    let served = load.join().expect("load");
    assert!(served > 0);
    assert_eq!(get(proxy.addr, "/").status, 200);
}

#[test]
fn idle_spin_zero_never_spins_under_the_same_load() {
    let backend = DemoBackend::start("b");
    let proxy = Proxy::start_with_admin(vec![backend.config()], |c| {
        c.idle_spin = Duration::ZERO;
    });
    let admin = proxy.admin_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let load = new_connection_load(proxy.addr, 4, Arc::clone(&stop));
    // As long as the other test needs at most, here, to see nothing.
    let until = Instant::now() + Duration::from_secs(2);
    let mut scrapes = 0;
    while Instant::now() < until {
        assert_eq!(spin_seconds(admin), 0.0);
        scrapes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let served = load.join().expect("load");
    assert!(served > 100, "{served} requests in 2 s");
    assert!(scrapes > 0);
}
