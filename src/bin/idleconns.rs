//! `idleconns`: opens N keep-alive connections, sends one GET on each and reads its answer, then
//! holds them all idle for a while. Made for the memory figure of `scripts/bench.sh`: the proxy's
//! RSS with N idle keep-alive client connections, less its RSS before, over N.
//!
//! Prints `ready: <open> open, <failed> failed` once every connection has had its answer (the
//! moment to measure), holds for `--hold` seconds, then prints how many are still open (a
//! connection the proxy closed meanwhile would make the measurement wrong) and exits.
//!
//! The connections are opened by a few threads, each one after the other, so at most `--threads`
//! requests are in flight: the proxy needs only a handful of backend connections.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Open N keep-alive connections, one request each, and hold them idle")]
struct Args {
    /// Where to connect.
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Threads opening them.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Per-connection timeout (connect, request, response) in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

fn main() {
    let args = Args::parse();
    let timeout = Duration::from_secs_f64(args.timeout);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: idleconns\r\n\r\n",
        args.path, args.target
    )
    .into_bytes();
    let threads = args.threads.clamp(1, args.connections.max(1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            // Spread the remainder over the first threads.
            let n = args.connections / threads + usize::from(t < args.connections % threads);
            let request = request.clone();
            let target = args.target;
            thread::Builder::new()
                .name(format!("open-{t}"))
                .spawn(move || open_many(target, &request, n, timeout))
                .expect("spawn thread")
        })
        .collect();
    let mut open = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_error = None;
    for w in workers {
        let (mut streams, errors, error) = w.join().expect("opening thread panicked");
        open.append(&mut streams);
        failed += errors;
        first_error = first_error.or(error);
    }
    println!("ready: {} open, {} failed", open.len(), failed);
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
    io::stdout().flush().ok();

    thread::sleep(Duration::from_secs_f64(args.hold));

    let still_open = open.iter().filter(|s| is_open(s)).count();
    println!("after {:.1}s: {} still open", args.hold, still_open);
}

/// Opens `n` connections one after the other, one request each; returns those whose answer was
/// a complete 2xx, the number that failed, and the first error.
fn open_many(
    target: SocketAddr,
    request: &[u8],
    n: usize,
    timeout: Duration,
) -> (Vec<TcpStream>, usize, Option<String>) {
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    for _ in 0..n {
        match open_one(target, request, timeout) {
            Ok(s) => streams.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (streams, failed, first_error)
}

fn open_one(target: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(request)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = resp.code.unwrap_or(0);
                let mut length = 0usize;
                let mut close = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                while buf.len() < head_len + length {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if !(200..300).contains(&status) {
                    return Err(io::Error::other(format!("status {status}")));
                }
                if close {
                    return Err(io::Error::other("the answer closes the connection"));
                }
                return Ok(stream);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Whether the peer has not closed the connection: a non-blocking peek finds nothing to read.
fn is_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true, // unexpected bytes, but still open
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}
