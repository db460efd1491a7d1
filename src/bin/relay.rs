//! `relay`: the least work any proxy can do, as a floor for `scripts/bench.sh`. A plain TCP relay
//! on one mio reactor: each client connection gets its own backend connection (round-robin over
//! `--backend`), and bytes are copied both ways without being looked at. Per keep-alive request
//! it makes the same four system calls as an HTTP proxy (read the request, write it on, read the
//! response, write it back) and almost no user-space work, so its CPU time per request is what
//! those calls cost in the kernel. No proxy that reads and writes each request through the
//! socket API can use less.
//!
//! Not a product: no HTTP, no timeouts, no health checks, no limits. A benchmark tool only.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

#[derive(Parser, Debug)]
#[command(about = "A plain TCP relay: the floor of proxy CPU per request, for benchmarks")]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// A backend address (repeat for several; connections go round-robin).
    #[arg(long, required = true)]
    backend: Vec<SocketAddr>,
}

const LISTENER: Token = Token(usize::MAX);
const BUFFER: usize = 16 * 1024;

/// One direction of a pair: bytes read from one socket and not yet written to the other.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source may have bytes: set by an edge, cleared by a short read.
    readable: bool,
    /// The destination may take bytes: set by an edge, cleared by a short write.
    writable: bool,
}

struct Pair {
    client: TcpStream,
    backend: TcpStream,
    to_backend: Pipe,
    to_client: Pipe,
}

enum Flow {
    Open,
    Closed,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            readable: true,
            writable: true,
        }
    }

    /// Moves what it can from `from` to `to`, stopping at the first sign that more would block.
    fn pump(&mut self, from: &mut TcpStream, to: &mut TcpStream) -> io::Result<Flow> {
        loop {
            if self.start == self.end && self.readable {
                self.start = 0;
                self.end = 0;
                match from.read(&mut self.buf) {
                    Ok(0) => return Ok(Flow::Closed),
                    Ok(n) => {
                        self.end = n;
                        // A short read emptied the socket: the next edge says when there is more.
                        self.readable = n == self.buf.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if self.start == self.end || !self.writable {
                return Ok(Flow::Open);
            }
            match to.write(&self.buf[self.start..self.end]) {
                Ok(n) => {
                    self.start += n;
                    if self.start < self.end {
                        self.writable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: Slab<Pair> = Slab::new();
    let mut next_backend = 0;
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    let mut client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("relay: accept: {e}");
                            break;
                        }
                    };
                    let target = args.backend[next_backend % args.backend.len()];
                    next_backend += 1;
                    let mut backend = match TcpStream::connect(target) {
                        Ok(backend) => backend,
                        Err(e) => {
                            eprintln!("relay: connect {target}: {e}");
                            continue;
                        }
                    };
                    let _ = client.set_nodelay(true);
                    let _ = backend.set_nodelay(true);
                    let entry = pairs.vacant_entry();
                    let slot = entry.key();
                    let both = Interest::READABLE | Interest::WRITABLE;
                    poll.registry()
                        .register(&mut client, Token(slot * 2), both)?;
                    poll.registry()
                        .register(&mut backend, Token(slot * 2 + 1), both)?;
                    let mut to_backend = Pipe::new();
                    // Nothing can be written before the connection is up: its edge says when.
                    to_backend.writable = false;
                    entry.insert(Pair {
                        client,
                        backend,
                        to_backend,
                        to_client: Pipe::new(),
                    });
                }
                continue;
            }
            let slot = event.token().0 / 2;
            let from_client = event.token().0 % 2 == 0;
            let Some(pair) = pairs.get_mut(slot) else {
                continue;
            };
            let (read_side, write_side) = if from_client {
                (&mut pair.to_backend, &mut pair.to_client)
            } else {
                (&mut pair.to_client, &mut pair.to_backend)
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                read_side.readable = true;
            }
            if event.is_writable() || event.is_error() {
                write_side.writable = true;
            }
            let flows = (
                pair.to_backend.pump(&mut pair.client, &mut pair.backend),
                pair.to_client.pump(&mut pair.backend, &mut pair.client),
            );
            if !matches!(flows, (Ok(Flow::Open), Ok(Flow::Open))) {
                let mut pair = pairs.remove(slot);
                let _ = poll.registry().deregister(&mut pair.client);
                let _ = poll.registry().deregister(&mut pair.backend);
            }
        }
    }
}
