//! Backends for the error-path, streaming and config tests: one that records every byte, one
//! that never accepts, and checks on closed connections and on the demo backend's byte pattern.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::*;

/// A backend that records every byte it receives, per connection, and answers each complete
/// request head that has no body with `200 ok` (so it can also serve as the live backend of a
/// test). Requests with a body are recorded but never answered.
pub struct Recorder {
    pub backend: ScriptedBackend,
    conns: std::sync::Arc<std::sync::Mutex<Vec<RecordedConn>>>,
}

/// What arrived on one backend connection.
#[derive(Debug, Clone, Default)]
pub struct RecordedConn {
    pub bytes: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
}

impl Recorder {
    pub fn start() -> Recorder {
        use std::sync::{Arc, Mutex};
        let conns: Arc<Mutex<Vec<RecordedConn>>> = Arc::default();
        let shared = Arc::clone(&conns);
        let backend = ScriptedBackend::start(move |mut stream, n| {
            {
                let mut all = shared.lock().expect("recorder lock");
                if all.len() <= n {
                    all.resize(n + 1, RecordedConn::default());
                }
            }
            let mut pending: Vec<u8> = Vec::new();
            // Cleared at the first request with a body: where it ends is not this helper's call.
            let mut answering = true;
            let mut chunk = [0u8; 16384];
            loop {
                let got = match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => 0,
                    Ok(got) => got,
                };
                let mut all = shared.lock().expect("recorder lock");
                if got == 0 {
                    all[n].closed = true;
                    return;
                }
                all[n].bytes.extend_from_slice(&chunk[..got]);
                drop(all);
                pending.extend_from_slice(&chunk[..got]);
                // Answer every complete bodiless head; stop answering at the first with a body.
                while answering {
                    let mut slots = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut slots);
                    let Ok(httparse::Status::Complete(len)) = req.parse(&pending) else {
                        break;
                    };
                    let has_body = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                    });
                    if has_body {
                        answering = false;
                        break;
                    }
                    pending.drain(..len);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Recorder-Connection: {n}\r\n\r\nok"
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        Recorder { backend, conns }
    }

    pub fn config(&self, name: &str) -> BackendConfig {
        self.backend.config(name)
    }

    /// A copy of what every connection received so far, in accept order.
    pub fn connections(&self) -> Vec<RecordedConn> {
        self.conns.lock().expect("recorder lock").clone()
    }

    /// Everything received on all connections, concatenated.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect()
    }

    /// Waits until every connection but the last has been closed by the proxy, so what they
    /// received is final. Call it after a sentinel request answered on the last connection:
    /// the accept queue is FIFO, so every earlier connection has been accepted by then.
    pub fn wait_closed_before_last(&self) {
        wait_until("the proxy to close its earlier backend connections", || {
            let accepted = self.backend.connection_count();
            let conns = self.connections();
            conns.len() == accepted
                && conns
                    .iter()
                    .take(accepted.saturating_sub(1))
                    .all(|c| c.closed)
        });
    }

    /// Waits until every accepted connection has been closed by the proxy, so what they
    /// received is final.
    pub fn wait_all_closed(&self) {
        wait_until("the proxy to close its backend connections", || {
            let accepted = self.backend.connection_count();
            let conns = self.connections();
            conns.len() == accepted && conns.iter().all(|c| c.closed)
        });
    }
}

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs, so
/// a connect to it neither succeeds nor fails until the connecting side gives up. The loopback
/// stand-in for an address that black-holes packets.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind blackhole");
        // SAFETY: re-listening on a listening socket only changes its backlog.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(rc, 0, "listen(0)");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        // Connect until one does not complete: from then on the queue is full.
        loop {
            assert!(fillers.len() < 16, "backlog 0 never filled up");
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// Reads from a client socket until the proxy closes it, failing if a byte arrives.
pub fn expect_closed_silently(stream: &mut TcpStream) {
    let rest = read_to_close(stream);
    assert!(
        rest.is_empty(),
        "expected the connection to close with nothing more; got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Whether the peer has closed: a read returns end of stream (or a reset) before `PATIENCE`.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Makes `close` send a reset instead of a FIN.
pub fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// The wrapping sum of the first `n` bytes of [`pattern`], as `/sink` reports it.
pub fn pattern_sum(n: u64) -> u64 {
    // One period (0..=250) sums to 250 * 251 / 2.
    let full = n / 251;
    let rest = n % 251;
    full.wrapping_mul(31375)
        .wrapping_add(rest * rest.saturating_sub(1) / 2)
}

/// One period of the pattern plus `len` more bytes: any `len`-byte window of the infinite
/// pattern is a slice of it, so streams are checked with `memcmp` rather than a byte loop (the
/// tests run unoptimised).
pub fn pattern_window(len: usize) -> Vec<u8> {
    pattern(len + 251)
}

/// Checks a stream of bytes against the pattern, slice by slice.
pub struct PatternCheck {
    window: Vec<u8>,
    pub offset: u64,
}

impl PatternCheck {
    pub fn new(max_slice: usize) -> PatternCheck {
        PatternCheck {
            window: pattern_window(max_slice),
            offset: 0,
        }
    }

    /// Checks the next bytes of the stream; panics at the first mismatch.
    pub fn feed(&mut self, data: &[u8]) {
        let max = self.window.len() - 251;
        for part in data.chunks(max) {
            let start = (self.offset % 251) as usize;
            if part != &self.window[start..start + part.len()] {
                let at = part
                    .iter()
                    .zip(&self.window[start..])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                panic!(
                    "stream differs from the pattern at byte {}",
                    self.offset + at as u64
                );
            }
            self.offset += part.len() as u64;
        }
    }
}
