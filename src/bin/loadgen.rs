//! `loadgen`: constant keep-alive GET load from N connections for a fixed time, recording for
//! every request when it started, how long it took, its status and which backend answered
//! (the `X-Backend` header). Made for the failover scenarios in `scripts/failover.sh`: it prints
//! totals, failures, the share of each backend per phase, and when a watched backend first
//! answered after a given moment.
//!
//! A thread per connection with blocking sockets keeps it simple and exact; the request loops
//! are bounded by `--duration`.
//!
//! With `--rate R` the load is open loop (as wrk2): each connection has a fixed schedule of
//! request start times, R/connections per second, staggered across the connections, and a
//! request's latency is counted from its scheduled start, not from when it could be sent, so a
//! stall is charged to every request it delays (no coordinated omission). `scripts/bench.sh`
//! uses it for latency at a fixed rate below saturation.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Keep-alive GET load with per-backend and per-phase accounting")]
struct Args {
    /// Where to send the load.
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Phase boundaries in seconds from the start (repeatable), e.g. --mark 5 --mark 12.
    #[arg(long = "mark")]
    marks: Vec<f64>,
    /// Report when this backend first answered at or after the last mark.
    #[arg(long)]
    watch: Option<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Open loop: requests per second over all connections, each started on schedule and timed
    /// from its scheduled start. Without it, every connection sends its next request as soon as
    /// the previous answer is in (closed loop).
    #[arg(long)]
    rate: Option<f64>,
}

/// One finished request.
struct Sample {
    /// Start, in milliseconds from the beginning of the run.
    start_ms: u32,
    latency_us: u32,
    /// HTTP status, or 0 for a socket error.
    status: u16,
    backend: String,
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.duration);
    let timeout = Duration::from_secs_f64(args.timeout);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen\r\n\r\n",
        args.path, args.target
    )
    .into_bytes();

    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            eprintln!("loadgen: --rate must be a positive number of requests per second");
            std::process::exit(2);
        }
    }
    // Open loop: connection i sends at started + (i / connections + k) * interval, k = 0, 1, ...
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let request = request.clone();
            let target = args.target;
            let schedule = interval.map(|every| Schedule {
                next: started + every.mul_f64(i as f64 / args.connections as f64),
                every,
            });
            thread::Builder::new()
                .name(format!("conn-{i}"))
                .spawn(move || run_connection(target, &request, started, until, timeout, schedule))
                .expect("spawn load thread")
        })
        .collect();
    let mut samples = Vec::new();
    for w in workers {
        match w.join() {
            Ok(mut s) => samples.append(&mut s),
            Err(_) => eprintln!("a load thread panicked"),
        }
    }
    report(&args, &samples);
}

/// The request start times of one connection in open-loop mode.
struct Schedule {
    next: Instant,
    every: Duration,
}

fn run_connection(
    target: SocketAddr,
    request: &[u8],
    started: Instant,
    until: Instant,
    timeout: Duration,
    mut schedule: Option<Schedule>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut conn: Option<Conn> = None;
    loop {
        let begin = match schedule.as_mut() {
            Some(s) => {
                let at = s.next;
                if at >= until {
                    break;
                }
                s.next += s.every;
                let now = Instant::now();
                if at > now {
                    thread::sleep(at - now);
                }
                at
            }
            None => {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                now
            }
        };
        let start_ms = begin.duration_since(started).as_millis() as u32;
        let result = match conn.as_mut() {
            Some(c) => c.exchange(request),
            None => Conn::open(target, timeout).and_then(|mut c| {
                let r = c.exchange(request);
                conn = Some(c);
                r
            }),
        };
        let latency_us = begin.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        match result {
            Ok((status, backend, keep)) => {
                samples.push(Sample {
                    start_ms,
                    latency_us,
                    status,
                    backend,
                });
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                samples.push(Sample {
                    start_ms,
                    latency_us,
                    status: 0,
                    backend: String::new(),
                });
                conn = None;
                // A refused connect would otherwise spin; the proxy should never refuse.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    samples
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(target: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its response: (status, backend, connection stays open).
    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, String, bool)> {
        self.stream.write_all(request)?;
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = 0usize;
                    let mut backend = String::new();
                    let mut keep = true;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("x-backend") {
                            backend = String::from_utf8_lossy(h.value).into_owned();
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            keep = !h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    while self.buf.len() < head_len + length {
                        let n = self.stream.read(&mut chunk)?;
                        if n == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                    self.buf.drain(..head_len + length);
                    return Ok((status, backend, keep));
                }
                Ok(httparse::Status::Partial) => {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(_) => return Err(io::ErrorKind::InvalidData.into()),
            }
        }
    }
}

fn report(args: &Args, samples: &[Sample]) {
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| !(200..300).contains(&s.status))
        .collect();
    println!("requests sent:    {}", samples.len());
    if let Some(rate) = args.rate {
        println!(
            "rate:             {:.0} req/s scheduled, {:.0} req/s done (open loop; latency from the scheduled start)",
            rate,
            samples.len() as f64 / args.duration
        );
    }
    println!("requests failed:  {}", failed.len());
    if !failed.is_empty() {
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for s in &failed {
            *by_status.entry(s.status).or_default() += 1;
        }
        let statuses: Vec<String> = by_status
            .iter()
            .map(|(status, n)| match status {
                0 => format!("socket error x{n}"),
                s => format!("{s} x{n}"),
            })
            .collect();
        println!("  by status:      {}", statuses.join(", "));
        let first = failed.iter().map(|s| s.start_ms).min().unwrap_or(0);
        let last = failed.iter().map(|s| s.start_ms).max().unwrap_or(0);
        let slowest = failed.iter().map(|s| s.latency_us).max().unwrap_or(0);
        println!(
            "  started between {:.3}s and {:.3}s; slowest answer {:.3}s",
            f64::from(first) / 1000.0,
            f64::from(last) / 1000.0,
            f64::from(slowest) / 1e6
        );
    }
    let mut latencies: Vec<u32> = samples.iter().map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[i]) / 1000.0
    };
    println!(
        "latency:          p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );

    let mut bounds = vec![0.0];
    bounds.extend(args.marks.iter().copied());
    bounds.push(args.duration);
    let names: Vec<String> = {
        let mut set: Vec<String> = samples
            .iter()
            .filter(|s| !s.backend.is_empty())
            .map(|s| s.backend.clone())
            .collect();
        set.sort();
        set.dedup();
        set
    };
    println!("share per phase (successful requests):");
    for w in bounds.windows(2) {
        let (from, to) = (w[0], w[1]);
        let in_phase: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                let t = f64::from(s.start_ms) / 1000.0;
                t >= from && t < to && (200..300).contains(&s.status)
            })
            .collect();
        let total = in_phase.len().max(1) as f64;
        let shares: Vec<String> = names
            .iter()
            .map(|name| {
                let n = in_phase.iter().filter(|s| &s.backend == name).count();
                format!("{name} {:5.1}%", n as f64 * 100.0 / total)
            })
            .collect();
        println!(
            "  {:>5.1}s-{:<5.1}s {:>7} req  {}",
            from,
            to,
            in_phase.len(),
            shares.join("  ")
        );
    }
    if let (Some(name), Some(&after)) = (&args.watch, args.marks.last()) {
        let first = samples
            .iter()
            .filter(|s| &s.backend == name && f64::from(s.start_ms) / 1000.0 >= after)
            .map(|s| s.start_ms)
            .min();
        match first {
            Some(ms) => println!(
                "first {name} response after {after:.1}s: at {:.3}s",
                f64::from(ms) / 1000.0
            ),
            None => println!("first {name} response after {after:.1}s: never"),
        }
    }
}
