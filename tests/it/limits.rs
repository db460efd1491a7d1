//! Resource limits of the real `lb` binary: `limits.max_connections`, running out of
//! descriptors (EMFILE), ten thousand idle keep-alive connections, and a thousand clients
//! vanishing mid-transfer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

const GET_KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Starts the proxy in front of `backend` with these `[limits]` lines, no access log, and
/// health checks only at startup (a probe's socket would come and go under the descriptor
/// counts).
fn start(limits: &str, backend: SocketAddr, nofile: Option<u64>) -> ProxyProcess {
    start_with(false, limits, backend, nofile)
}

/// The proxy with `max_connections` a little above `clients`.
fn start_with_room_for(clients: usize, backend: SocketAddr) -> ProxyProcess {
    start(
        &format!("max_connections = {}\n", clients + 100),
        backend,
        None,
    )
}

fn start_with(
    access_log: bool,
    limits: &str,
    backend: SocketAddr,
    nofile: Option<u64>,
) -> ProxyProcess {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("limits-{}.toml", NEXT.fetch_add(1, Ordering::SeqCst));
    let config = temp_file(
        &name,
        &format!("access_log = {access_log}\n[health]\ninterval = \"1h\"\n[limits]\n{limits}"),
    );
    // Not on 127.0.0.1: tests elsewhere use ports they found free there (or of backends they
    // killed) as "nothing listens here", and their proxies and health checks would keep
    // connecting to this one had it got such a port, making its descriptor counts move.
    ProxyProcess::start_on(
        "127.0.0.2",
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--backend",
            &format!("b={backend}"),
        ],
        nofile,
    )
}

/// One read attempt (the socket has a short read timeout); returns the status once a whole
/// response with a Content-Length body is in `buf`.
fn poll_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk) {
        Ok(0) => panic!(
            "closed before a response: {:?}",
            String::from_utf8_lossy(buf)
        ),
        Ok(n) => buf.extend_from_slice(&chunk[..n]),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => panic!("read: {e}"),
    }
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(head)) = resp.parse(buf) else {
        return None;
    };
    let length: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    (buf.len() >= head + length).then(|| resp.code.unwrap_or(0))
}

/// Every line the proxy logged since the last call.
fn new_log_lines(proxy: &ProxyProcess) -> Vec<String> {
    proxy.output.try_iter().collect()
}

/// A GET on a keep-alive connection that is already open.
fn request_on(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(GET_KEEP_ALIVE).expect("write");
    read_response(s, false).status
}

/// CPU ticks the process uses over `window` (a measurement, not a wait).
fn cpu_over(pid: u32, window: Duration) -> u64 {
    let before = cpu_ticks(pid);
    thread::sleep(window);
    cpu_ticks(pid) - before
}

#[test]
fn max_connections_leaves_the_rest_in_the_backlog() {
    let backend = DemoBackend::start("b");
    let proxy = start("max_connections = 20\n", backend.addr, None);
    let pid = proxy.child.id();
    // Twenty clients, each served once (so each is surely accepted), then idle.
    let mut held: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = connect(proxy.addr);
            assert_eq!(request_on(&mut s), 200, "client {i}");
            s
        })
        .collect();
    // The 21st: the kernel completes its handshake (backlog), the proxy does not take it.
    let mut extra = connect(proxy.addr);
    extra.write_all(GET_KEEP_ALIVE).expect("write");
    extra
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut pending = Vec::new();
    // Saturated, the proxy waits for a session to end; it does not poll the listener.
    let used = cpu_over(pid, Duration::from_secs(1));
    assert!(used < 10, "the saturated proxy used {used} ticks in 1 s");
    assert_eq!(
        poll_response(&mut extra, &mut pending),
        None,
        "the 21st client was served while 20 were open"
    );
    // The held ones are still served.
    assert_eq!(request_on(&mut held[0]), 200);
    // One leaves: the 21st is accepted and its request answered.
    drop(held.pop());
    extra.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let resp = read_response_buffered(&mut extra, &mut pending, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    // And it is now one of the twenty: a 22nd waits in turn, until another leaves.
    let mut extra2 = connect(proxy.addr);
    extra2.write_all(GET_KEEP_ALIVE).expect("write");
    extra2
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut pending = Vec::new();
    assert_eq!(poll_response(&mut extra2, &mut pending), None, "the 22nd");
    drop(held.pop());
    extra2.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let resp = read_response_buffered(&mut extra2, &mut pending, false);
    assert_eq!(resp.status, 200, "after another left: {resp:?}");
    assert!(proxy_alive(&proxy));
}

fn proxy_alive(proxy: &ProxyProcess) -> bool {
    // try_wait needs &mut; /proc tells as much for a child we have not reaped.
    std::fs::read_to_string(format!("/proc/{}/stat", proxy.child.id()))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn running_out_of_descriptors_pauses_accepting_without_spinning() {
    const NOFILE: u64 = 64;
    let backend = DemoBackend::start("b");
    // With the access log: a client's line comes after anything logged while serving it.
    let proxy = start_with(true, "", backend.addr, Some(NOFILE));
    let pid = proxy.child.id();
    // The startup health probe holds a descriptor for a moment: let it finish first, or its
    // socket closing would make room for an accept in the middle of the test.
    wait_until("the startup health probe", || backend.stats().1 >= 1);
    wait_until("the probe's socket to close", || {
        connections_to(
            backend.addr,
            &[TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE_WAIT],
        ) == 0
    });
    eprintln!(
        "lb runs with RLIMIT_NOFILE {NOFILE}, {} descriptors open",
        fd_count(pid)
    );
    // Clients one at a time, each served and kept, until the proxy has no descriptor left.
    // Counting them in /proc is not enough: the admin thread, blocked in accept(), holds a
    // descriptor number that /proc does not show. The proxy tells instead: right after it
    // accepts a client, in the same turn of its loop, it tries to accept again, and at the
    // limit that fails (Linux fails accept() before it looks for a waiting connection) and is
    // logged. Each client makes two requests: the second is read in a later turn, so once its
    // access log line is out, so is any failure that followed the client's accept.
    let mut log: Vec<String> = Vec::new();
    let mut served: Vec<TcpStream> = Vec::new();
    loop {
        assert!((served.len() as u64) < NOFILE, "{} clients", served.len());
        let mut s = connect(proxy.addr);
        assert_eq!(request_on(&mut s), 200, "client {}", served.len());
        assert_eq!(request_on(&mut s), 200, "client {}", served.len());
        let me = format!("{} \"GET / HTTP/1.1\" 200", s.local_addr().expect("addr"));
        served.push(s);
        wait_until("the client's second access log line", || {
            log.extend(new_log_lines(&proxy));
            log.iter().filter(|l| l.contains(&me)).count() == 2
        });
        if log.iter().any(|l| l.contains("accept failed")) {
            break;
        }
    }
    eprintln!(
        "no descriptor left after {} clients ({} open)",
        served.len(),
        fd_count(pid)
    );
    assert!(
        log.iter()
            .any(|l| l.contains("accept failed") && l.contains("Too many open files")),
        "{log:?}"
    );
    // The next client waits in the backlog.
    let mut stuck = connect(proxy.addr);
    stuck.write_all(GET_KEEP_ALIVE).expect("write");
    // Out of descriptors, the proxy retries accepting at a slow pace instead of spinning; new
    // connections arriving meanwhile (each one a readiness event on the listener) wait in the
    // backlog without a retry of their own.
    let addr = proxy.addr;
    let arrivals = thread::spawn(move || {
        let started = Instant::now();
        let mut extras = Vec::new();
        while started.elapsed() < Duration::from_millis(900) {
            extras.push(connect(addr));
            thread::sleep(Duration::from_millis(3));
        }
        extras
    });
    let used = cpu_over(pid, Duration::from_secs(1));
    let extras = arrivals.join().expect("arrivals");
    log.extend(new_log_lines(&proxy));
    let warnings = log.iter().filter(|l| l.contains("accept failed")).count();
    eprintln!(
        "1 s out of descriptors, {} more clients connecting meanwhile: {used} CPU ticks, \
         {warnings} warning(s) logged: {:?}",
        extras.len(),
        log.iter().find(|l| l.contains("accept failed"))
    );
    assert!(used < 20, "the proxy used {used} ticks in 1 s");
    assert_eq!(warnings, 1, "{log:?}");
    // Still saturated: the client in the backlog has no answer.
    stuck
        .set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let mut stuck_buf = Vec::new();
    assert_eq!(poll_response(&mut stuck, &mut stuck_buf), None);
    // Clients already connected are still served (on the pooled backend connection).
    for (i, s) in served.iter_mut().take(3).enumerate() {
        assert_eq!(request_on(s), 200, "held client {i}");
    }
    // Some leave: the proxy accepts again and the waiting request is answered (it is first in
    // the backlog); new clients too, once the proxy has gone through the ones that gave up.
    drop(extras);
    served.truncate(served.len() - 5);
    stuck.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let resp = read_response_buffered(&mut stuck, &mut stuck_buf, false);
    assert_eq!(resp.status, 200, "{resp:?}");
    for i in 0..3 {
        assert_eq!(get(proxy.addr, "/").status, 200, "new client {i}");
    }
    // It counted its retries: one per pause of 100 ms (and one per closed connection), not
    // one per arriving connection.
    let mut recovered = None;
    wait_until("the proxy to log that it accepts again", || {
        log.extend(new_log_lines(&proxy));
        recovered = log.iter().find_map(|l| {
            let rest = l.split("accepting again after ").nth(1)?;
            let attempts: f64 = rest.split(' ').next()?.parse().ok()?;
            let seconds: f64 = rest
                .split(" over ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((attempts, seconds))
        });
        recovered.is_some()
    });
    let (attempts, seconds) = recovered.expect("recovery line");
    eprintln!("accepting again after {attempts} failed attempts over {seconds} s");
    assert!(
        attempts <= seconds * 10.0 + 10.0,
        "{attempts} failed accepts in {seconds} s"
    );
    assert!(proxy_alive(&proxy));
}

#[test]
fn ten_thousand_idle_keep_alive_connections_fit_in_little_memory() {
    const WANTED: usize = 10_000;
    const THREADS: usize = 8;
    let limit = raise_nofile_limit() as usize;
    // This process holds one descriptor per client, the proxy one per client and a few more.
    let n = if limit < WANTED + 100 {
        let n = limit.saturating_sub(200) / THREADS * THREADS;
        eprintln!("RLIMIT_NOFILE hard limit is {limit}: {n} connections instead of {WANTED}");
        n
    } else {
        WANTED
    };
    let backend = DemoBackend::start("b");
    let proxy = start_with_room_for(n, backend.addr);
    let pid = proxy.child.id();
    let addr = proxy.addr;
    // Connections held by THREADS clients each: one request and response, then idle.
    let open = |count: usize| -> Vec<TcpStream> {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                thread::spawn(move || {
                    (0..count / THREADS)
                        .map(|_| {
                            let mut s = connect(addr);
                            assert_eq!(request_on(&mut s), 200);
                            s
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect()
    };
    // Warm up at the same concurrency (buffers in the free list, the backend pool), then let go.
    let started = Instant::now();
    let fds_before = fd_count(pid);
    drop(open(THREADS * 4));
    wait_until("the warm-up connections to close", || {
        fd_count(pid) <= fds_before + THREADS
    });
    let rss_before = proxy.rss_kib();
    let held = open(n);
    assert_eq!(held.len(), n);
    let rss_after = proxy.rss_kib();
    let fds = fd_count(pid);
    let grown = rss_after.saturating_sub(rss_before);
    let per_conn = grown as f64 * 1024.0 / n as f64;
    eprintln!(
        "{n} idle keep-alive connections: lb RSS {rss_before} KiB -> {rss_after} KiB \
         (+{grown} KiB, {per_conn:.0} bytes per connection), {fds} descriptors, \
         opened in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        fds >= n,
        "the proxy holds {fds} descriptors for {n} clients"
    );
    assert!(
        grown < 64 * 1024,
        "{n} idle connections grew the proxy by {grown} KiB"
    );
    // Idle, they cost no CPU, and each is still usable.
    let used = cpu_over(pid, Duration::from_millis(500));
    assert!(used < 10, "{used} ticks with {n} idle connections");
    let mut held = held;
    for i in [0, n / 2, n - 1] {
        assert_eq!(request_on(&mut held[i]), 200, "connection {i}");
    }
}

/// Opens up to `wanted` clients that each send `first` and then stay silent, waits until the
/// proxy has read every byte, and returns the proxy's RSS growth per client in bytes; then each
/// sends `rest` and must be answered 200, so whatever the proxy kept of `first` was kept
/// intact. `fds_per_client`: descriptors each client costs the proxy.
fn rss_per_silent_client(wanted: usize, fds_per_client: usize, first: &[u8], rest: &[u8]) -> f64 {
    let limit = raise_nofile_limit() as usize;
    let n = wanted.min(limit.saturating_sub(200) / fds_per_client);
    let backend = DemoBackend::start("b");
    let proxy = start_with_room_for(n, backend.addr);
    let pid = proxy.child.id();
    for _ in 0..4 {
        assert_eq!(request_on(&mut connect(proxy.addr)), 200);
    }
    let rss_before = proxy.rss_kib();
    let mut held: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = connect(proxy.addr);
            s.write_all(first).expect("write the first part");
            s
        })
        .collect();
    wait_until("the proxy to read what every client sent", || {
        fd_count(pid) >= fds_per_client * n && unread_bytes_at(proxy.addr) == 0
    });
    let rss_after = proxy.rss_kib();
    let per_client = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / n as f64;
    eprintln!(
        "{n} silent clients after {:?}: lb RSS {rss_before} KiB -> {rss_after} KiB \
         ({per_client:.0} bytes per client)",
        String::from_utf8_lossy(first)
    );
    for s in held.iter_mut() {
        s.write_all(rest).expect("write the rest");
    }
    for (i, s) in held.iter_mut().enumerate() {
        assert_eq!(read_response(s, false).status, 200, "client {i}");
    }
    per_client
}

#[test]
fn slow_partial_heads_cost_their_bytes_not_a_buffer() {
    // A slowloris client: most of a head, then silence. A whole buffer each (32 KiB) would be
    // 64 MiB for 2,000 of them.
    let per_client = rss_per_silent_client(
        2_000,
        1,
        b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ",
        b"1\r\n\r\n",
    );
    assert!(
        per_client < 2048.0,
        "{per_client:.0} bytes of RSS per connection holding a partial head"
    );
}

#[test]
fn slow_uploads_hold_no_buffer_while_they_wait() {
    // A slow upload: a POST announcing 20 bytes, 10 of them sent, then silence. The bytes sent
    // have gone on to the backend (a connection each); a POST is never sent twice, so nothing
    // need stay behind.
    let per_client = rss_per_silent_client(
        500,
        2,
        b"POST /sink HTTP/1.1\r\nHost: slow\r\nContent-Length: 20\r\n\r\n0123456789",
        b"0123456789",
    );
    assert!(
        per_client < 4096.0,
        "{per_client:.0} bytes of RSS per waiting upload"
    );
}

#[test]
fn busy_poll_keeps_the_reactor_awake_and_serving() {
    let backend = DemoBackend::start("b");
    let config = temp_file(
        "limits-busy-poll.toml",
        "access_log = false\nbusy_poll = true\n[health]\ninterval = \"1h\"\n",
    );
    let proxy = ProxyProcess::start_on(
        "127.0.0.2",
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--backend",
            &format!("b={}", backend.addr),
        ],
        None,
    );
    assert_eq!(request_on(&mut connect(proxy.addr)), 200);
    // Idle, it still polls all the time (an idle default reactor uses 0–2 ticks in 500 ms
    // here). Other tests share the two CPUs and can starve it for a while, so it has six
    // windows to show a clear share in one of them.
    let mut used = Vec::new();
    while used.len() < 6 && used.last().is_none_or(|&u| u < 10) {
        used.push(cpu_over(proxy.child.id(), Duration::from_millis(500)));
    }
    assert!(
        used.last().is_some_and(|&u| u >= 10),
        "ticks per 500 ms with busy_poll on: {used:?}"
    );
    let mut s = connect(proxy.addr);
    for _ in 0..3 {
        assert_eq!(request_on(&mut s), 200);
    }
}

// ---- clients vanishing mid-transfer, at scale ------------------------------------------------

const VANISHING: usize = 1_000;
const WORKERS: usize = 4;

/// Runs `vanish` for `VANISHING` clients on `WORKERS` threads while a bystander keeps making
/// requests; then checks every bystander request was answered and the proxy's descriptors are
/// back where they were.
fn vanish_at_scale(what: &str, vanish: fn(SocketAddr, usize)) {
    let backend = DemoBackend::start("b");
    // No pool: afterwards the proxy holds no backend connection at all.
    let proxy = start("pool_max_idle = 0\n", backend.addr, None);
    let pid = proxy.child.id();
    let addr = proxy.addr;
    let baseline = fd_count(pid);
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let (statuses_tx, statuses) = mpsc::channel();
    let bystander = thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            let mut s = connect(addr);
            let status = s
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .ok()
                .map(|_| read_to_close(&mut s))
                .and_then(|r| String::from_utf8_lossy(&r).get(9..12).map(str::to_string));
            let _ = statuses_tx.send((status, t.elapsed(), Instant::now()));
        }
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            thread::spawn(move || {
                for i in 0..VANISHING / WORKERS {
                    vanish(addr, w * VANISHING + i);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("vanishing client thread");
    }
    let took = started.elapsed();
    let storm_over = Instant::now();
    done.store(true, Ordering::SeqCst);
    bystander.join().expect("bystander");
    let results: Vec<(Option<String>, Duration, Instant)> = statuses.try_iter().collect();
    let slowest = results.iter().map(|r| r.1).max().unwrap_or_default();
    let during = results.iter().filter(|r| r.2 < storm_over).count();
    let statuses: Vec<Option<String>> = results.into_iter().map(|r| r.0).collect();
    let failed: Vec<&Option<String>> = statuses
        .iter()
        .filter(|s| s.as_deref() != Some("200"))
        .collect();
    eprintln!(
        "{VANISHING} clients vanishing {what} in {:.1} s; a bystander made {} requests \
         ({during} answered during the storm), the slowest in {:.1} ms",
        took.as_secs_f64(),
        statuses.len(),
        slowest.as_secs_f64() * 1000.0
    );
    // The clients dump their bytes faster than the proxy forwards them, so the backlog (and a
    // bystander's wait in it) grows; it must still be served, during the storm too.
    assert!(
        during >= 1,
        "no bystander request was answered during the storm"
    );
    assert!(failed.is_empty(), "bystander requests failed: {failed:?}");
    // Every descriptor comes back (at most: a probe may have been open at the baseline).
    let mut now = 0;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        now = fd_count(pid);
        if now <= baseline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(now <= baseline, "{now} descriptors, {baseline} before");
    assert_eq!(get(addr, "/").status, 200);
    assert!(proxy_alive(&proxy));
}

#[test]
fn a_thousand_clients_vanishing_mid_upload_leak_nothing() {
    vanish_at_scale("mid-upload", |addr, i| {
        let s = connect(addr);
        (&s).write_all(b"POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 100000000\r\n\r\n")
            .expect("write head");
        let body = pattern_window(64 * 1024);
        for _ in 0..4 {
            (&s).write_all(&body[..64 * 1024]).expect("write body");
        }
        // Half leave with a FIN, half with a reset.
        if i % 2 == 1 {
            set_linger_zero(&s);
        }
    });
}

#[test]
fn a_thousand_clients_vanishing_mid_download_leak_nothing() {
    vanish_at_scale("mid-download", |addr, i| {
        let mut s = connect(addr);
        s.write_all(b"GET /bytes/100000000 HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("write request");
        // Some of the body first, so the response is well under way.
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 128 * 1024 {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed early");
            got += n;
        }
        if i % 2 == 1 {
            set_linger_zero(&s);
        }
    });
}
