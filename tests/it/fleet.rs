//! Two balancer instances behind a real L4 tier (HAProxy in `mode tcp`, health-checking each
//! instance's `GET /api/health`): one is drained with SIGTERM under load, and no request fails.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _config: std::path::PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// HAProxy in TCP mode in front of `instances` (traffic address, admin address): it probes each
/// instance's `/api/health` every 100 ms and retries a refused connect on the other.
fn start_haproxy(instances: &[(SocketAddr, SocketAddr)]) -> Haproxy {
    let port = free_port();
    let servers: String = instances
        .iter()
        .enumerate()
        .map(|(i, (traffic, admin))| {
            format!(
                "  server lb{i} {traffic} check port {} inter 100ms fall 1 rise 2\n",
                admin.port()
            )
        })
        .collect();
    let config = format!(
        "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  \
         timeout server 10s\n  retries 3\n  option redispatch\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend lbs\n\
         backend lbs\n  balance roundrobin\n  option httpchk GET /api/health\n{servers}"
    );
    let path = std::env::temp_dir().join(format!("lb-fleet-{}-{port}.cfg", std::process::id()));
    std::fs::write(&path, config).expect("write haproxy config");
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy must be installed (scripts/install-test-deps.sh installs it)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("haproxy to listen", || TcpStream::connect(addr).is_ok());
    Haproxy {
        child,
        addr,
        _config: path,
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

#[test]
fn one_of_two_instances_drains_behind_an_l4_tier_without_a_failed_request() {
    let backends: Vec<DemoBackend> = (1..=2)
        .map(|i| DemoBackend::start(&format!("f{i}")))
        .collect();
    let flags: Vec<String> = backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.addr))
        .collect();
    let args: Vec<&str> = flags
        .iter()
        .flat_map(|f| ["--backend", f.as_str()])
        .collect();
    let mut a = ProxyProcess::start(&args);
    let b = ProxyProcess::start(&args);
    let (a_admin, b_admin) = (a.admin_addr(), b.admin_addr());
    let tier = start_haproxy(&[(a.addr, a_admin), (b.addr, b_admin)]);

    // Requests on new connections through the tier, from four threads, counting failures.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, addr) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                tier.addr,
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let result = TcpStream::connect(addr).and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        s.write_all(
                            b"GET /delay/20 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        )?;
                        let all = read_to_close(&mut s);
                        Ok(all.starts_with(b"HTTP/1.1 200 "))
                    });
                    match result {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    wait_until("load through both instances", || {
        ok.load(Ordering::Relaxed) >= 100
    });
    let drained_at = Instant::now();
    sigterm(&a.child);
    // The tier sees /api/health turn 503 and stops sending new connections; requests in flight
    // on the drained instance finish; it exits 0.
    let status = a.wait_exit(PATIENCE);
    assert!(status.success(), "{status:?}");
    let after_drain = ok.load(Ordering::Relaxed);
    wait_until("load to go on through the other instance", || {
        ok.load(Ordering::Relaxed) >= after_drain + 100
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    eprintln!(
        "fleet drain: {} requests ok, {} failed, drained instance exited after {:?}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        drained_at.elapsed()
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the drain"
    );
    drop(b);
}
