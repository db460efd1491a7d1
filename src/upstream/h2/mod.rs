//! HTTP/2 to backends (`[[pool]] protocol = "h2"`): one multiplexed connection per backend (per
//! reactor), carrying a stream for every exchange in flight to it, so that gRPC (streaming calls,
//! `grpc-status` trailers) passes through.
//!
//! Each exchange stays the proxy's ordinary HTTP/1 exchange, as for an HTTP/2 client's stream:
//! its backend transport is a [`SharedPipe`], and this connection frames the request bytes it
//! writes (`h2::framer`) and unframes the answer back into HTTP/1.1 bytes (`h2::assemble`).
//! So routing, retries, timeouts, the error answers and the access log are the same for every
//! pool. The connection is driven by the reactor: its socket's events, and a poke whenever an
//! exchange wrote to its pipe or read from it; it then tells the reactor which exchanges to wake.
//!
//! - `frames`: what the backend's frames do to the connection and its streams;
//! - `stream`: one exchange's stream, its windows and its translation state.

mod frames;
mod stream;

use std::io;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::buffer::Source;
use crate::h2::frame::{self, Setting};
use crate::h2::hpack::{HeaderDecoder, HeaderEncoder};
use crate::h2::{ErrorCode, H2Error, PREFACE};
use crate::transport::pipe::SharedPipe;
use crate::transport::{Readiness, Transport};
use crate::upstream::BackendId;
use stream::{MuxStream, STREAM_WINDOW};

/// The connection window we open at once: memory is bounded per stream by its own window.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Our SETTINGS_MAX_FRAME_SIZE: the RFC's smallest.
const MAX_FRAME: u32 = frame::MIN_MAX_FRAME_SIZE;
/// The largest header list we take from a backend.
const MAX_HEADER_LIST: usize = 256 * 1024;
/// Frames wait in memory up to this before request bytes stop being framed.
const MAX_BACKLOG: usize = 256 * 1024;
/// How much is read from the socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// How many reads one drive makes before letting others run.
const MAX_READS: usize = 16;

/// An exchange to wake: its lease in the pool, and why.
#[derive(Debug, Clone, Copy)]
pub struct Wake {
    pub conn: usize,
    pub readable: bool,
    pub writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The TCP connect (and TLS handshake) under way.
    Connecting,
    Open,
    /// The backend said GOAWAY: no new streams; those it took finish.
    GoingAway,
    /// Closed or failed: every stream has been failed or is complete.
    Dead,
}

pub struct Mux {
    pub backend: BackendId,
    transport: Transport,
    tls: bool,
    pub ready: Readiness,
    state: State,
    opened_at: Instant,
    /// When the last stream went (or the connection opened), for the idle timeout.
    idle_since: Instant,
    input: Vec<u8>,
    output: Vec<u8>,
    output_pos: usize,
    encoder: HeaderEncoder,
    decoder: HeaderDecoder,
    peer_max_frame: u32,
    peer_initial_window: u32,
    peer_max_streams: u32,
    /// The backend's first SETTINGS came: until then its concurrency is unknown, and one
    /// stream opens (a server may reset the whole connection for streams past its limit).
    settings_received: bool,
    send_window: i64,
    /// DATA received since we last gave the connection window back.
    received: u32,
    next_id: u32,
    streams: Vec<MuxStream>,
    /// A header block waiting for its CONTINUATION frames: stream, bytes, END_STREAM.
    block: Option<(u32, Vec<u8>, bool)>,
    connect_timeout: Duration,
    /// Queued for a drive (the pool's bookkeeping).
    pub queued: bool,
    /// This drive left work for another turn.
    again: bool,
}

impl Mux {
    /// A connection being opened (the connect has been started).
    pub fn new(
        backend: BackendId,
        transport: Transport,
        now: Instant,
        connect_timeout: Duration,
    ) -> Mux {
        let tls = transport.is_tls();
        Mux {
            backend,
            transport,
            tls,
            ready: Readiness::default(),
            state: State::Connecting,
            opened_at: now,
            idle_since: now,
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            encoder: HeaderEncoder::default(),
            decoder: HeaderDecoder::default(),
            peer_max_frame: frame::MIN_MAX_FRAME_SIZE,
            peer_initial_window: 65_535,
            peer_max_streams: u32::MAX,
            settings_received: false,
            send_window: 65_535,
            received: 0,
            next_id: 1,
            streams: Vec::new(),
            block: None,
            queued: false,
            again: false,
            connect_timeout,
        }
    }

    pub fn socket_mut(&mut self) -> io::Result<&mut mio::net::TcpStream> {
        self.transport.socket_mut()
    }

    /// Whether a new exchange may use this connection.
    pub fn takes_streams(&self) -> bool {
        matches!(self.state, State::Connecting | State::Open) && self.next_id < (1 << 30)
    }

    pub fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// A new exchange's stream: it opens once its request head is written.
    pub fn add_stream(&mut self, conn: usize, pipe: SharedPipe) {
        if self.state == State::Open {
            pipe.lock().set_open();
        }
        self.streams.push(MuxStream::new(conn, pipe, self.tls));
    }

    /// The exchange let go: the stream is reset unless it finished, then forgotten.
    pub fn release_stream(&mut self, conn: usize) {
        if let Some(s) = self.streams.iter_mut().find(|s| s.conn == conn) {
            s.released = true;
        }
    }

    /// Closes a connection that has had no stream for `idle`, or has been connecting longer
    /// than its pool's connect timeout; true when it is done and can be dropped.
    pub fn expire(&mut self, now: Instant, idle: Duration) -> bool {
        if self.state == State::Connecting
            && now.duration_since(self.opened_at) >= self.connect_timeout
        {
            warn!("h2 backend {}: connect timed out", self.backend);
            self.fail_all(
                io::ErrorKind::ConnectionRefused,
                io::ErrorKind::ConnectionRefused,
            );
            return self.streams.is_empty();
        }
        if self.streams.is_empty() && now.duration_since(self.idle_since) >= idle {
            if self.state == State::Open {
                frame::write_goaway(&mut self.output, 0, ErrorCode::NoError, b"");
                let _ = self.flush();
            }
            self.state = State::Dead;
            return true;
        }
        self.is_dead() && self.streams.is_empty()
    }

    /// Makes every step it can; the exchanges to wake go to `wakes`. True when work is left
    /// for another turn.
    pub fn drive(&mut self, now: Instant, wakes: &mut Vec<Wake>) -> bool {
        self.again = false;
        if self.state == State::Connecting {
            self.connect();
        }
        if matches!(self.state, State::Open | State::GoingAway) {
            if let Err(e) = self.read() {
                self.connection_error(e);
            }
        }
        if matches!(self.state, State::Open | State::GoingAway) {
            self.frame_streams();
            self.credit_streams();
        }
        self.forget_released();
        if self.state != State::Dead {
            if let Err(e) = self.flush() {
                debug!("h2 backend {}: write failed: {e}", self.backend);
                self.fail_all(
                    io::ErrorKind::ConnectionAborted,
                    io::ErrorKind::ConnectionReset,
                );
            }
        }
        for s in &mut self.streams {
            if s.wake_readable || s.wake_writable {
                wakes.push(Wake {
                    conn: s.conn,
                    readable: s.wake_readable,
                    writable: s.wake_writable,
                });
                s.wake_readable = false;
                s.wake_writable = false;
            }
        }
        if self.streams.is_empty() {
            self.idle_since = now;
        }
        self.again
    }

    /// Finishes the connect and the TLS handshake, then opens the connection: the preface, our
    /// settings and the connection window, after which the exchanges may write.
    fn connect(&mut self) {
        if !self.ready.writable && !self.ready.readable {
            return;
        }
        match self.transport.socket().and_then(|s| s.take_error()) {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.connect_failed(&e),
        }
        match self.transport.socket().and_then(|s| s.peer_addr()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                self.ready = Readiness::default();
                return;
            }
            Err(e) => return self.connect_failed(&e),
        }
        let _ = self.transport.socket().and_then(|s| s.set_nodelay(true));
        if self.transport.is_handshaking() {
            if let Err(e) = self.transport.flush() {
                if e.kind() != io::ErrorKind::WouldBlock {
                    return self.connect_failed(&e);
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            match self.transport.read_some(&mut chunk) {
                Ok((0, _)) => {
                    return self.connect_failed(&io::Error::other("closed in the TLS handshake"))
                }
                // What the backend sent with the end of its handshake (its SETTINGS, say).
                Ok((n, _)) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.again = true,
                Err(e) => return self.connect_failed(&e),
            }
            self.ready.readable = false;
            if self.transport.is_handshaking() {
                return;
            }
            if self.transport.alpn() != Some(b"h2") {
                debug!(
                    "h2 backend {}: ALPN did not agree on h2; speaking it anyway",
                    self.backend
                );
            }
            self.ready.readable = true;
        }
        self.state = State::Open;
        self.output.extend_from_slice(PREFACE);
        frame::write_settings(
            &mut self.output,
            &[
                Setting {
                    id: frame::SETTINGS_ENABLE_PUSH,
                    value: 0,
                },
                Setting {
                    id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                    value: STREAM_WINDOW,
                },
                Setting {
                    id: frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    value: MAX_HEADER_LIST as u32,
                },
            ],
        );
        frame::write_window_update(&mut self.output, 0, CONNECTION_WINDOW - 65_535);
        for s in &mut self.streams {
            s.pipe.lock().set_open();
            s.wake_writable = true;
        }
    }

    fn connect_failed(&mut self, e: &io::Error) {
        warn!("h2 backend {}: connect failed: {e}", self.backend);
        self.fail_all(
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionRefused,
        );
    }

    fn read(&mut self) -> Result<(), H2Error> {
        let mut chunk = [0u8; READ_CHUNK];
        for _ in 0..MAX_READS {
            if !self.ready.readable {
                break;
            }
            match self.transport.read_some(&mut chunk) {
                Ok((0, _)) => {
                    debug!("h2 backend {}: closed", self.backend);
                    self.process()?;
                    self.fail_all(
                        io::ErrorKind::ConnectionAborted,
                        io::ErrorKind::ConnectionReset,
                    );
                    return Ok(());
                }
                Ok((n, short)) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if short {
                        self.ready.drained();
                    }
                    self.process()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("h2 backend {}: read failed: {e}", self.backend);
                    self.fail_all(
                        io::ErrorKind::ConnectionAborted,
                        io::ErrorKind::ConnectionReset,
                    );
                    return Ok(());
                }
            }
            if self.state == State::Dead {
                return Ok(());
            }
        }
        if self.ready.readable {
            // More is there: the reactor comes back after the others had a turn.
            self.again = true;
        }
        Ok(())
    }

    /// Opens the streams whose heads are written, in order, as far as the backend's
    /// concurrency allows, and frames request bytes as far as the windows allow.
    fn frame_streams(&mut self) {
        let max_streams = if self.settings_received {
            u64::from(self.peer_max_streams)
        } else {
            1
        };
        let mut active = self
            .streams
            .iter()
            .filter(|s| s.id != 0 && !(s.local_done && s.remote_done))
            .count();
        for i in 0..self.streams.len() {
            if self.output.len() - self.output_pos >= MAX_BACKLOG {
                self.again = true;
                break;
            }
            let s = &mut self.streams[i];
            if s.released {
                continue;
            }
            let framed = if s.id == 0 {
                if self.state != State::Open || active as u64 >= max_streams || !s.head_ready() {
                    continue;
                }
                active += 1;
                let id = self.next_id;
                self.next_id += 2;
                s.open(
                    id,
                    self.peer_initial_window,
                    self.send_window,
                    self.peer_max_frame,
                    &mut self.encoder,
                    &mut self.output,
                )
            } else {
                s.frame(
                    self.send_window,
                    self.peer_max_frame,
                    &mut self.encoder,
                    &mut self.output,
                )
            };
            self.send_window -= framed.data as i64;
        }
    }

    fn credit_streams(&mut self) {
        for s in &mut self.streams {
            let due = s.credit();
            if due > 0 {
                frame::write_window_update(&mut self.output, s.id, due);
            }
        }
    }

    /// Streams their exchanges let go: reset unless both sides finished, then dropped.
    fn forget_released(&mut self) {
        let output = &mut self.output;
        let live = matches!(self.state, State::Open | State::GoingAway);
        self.streams.retain(|s| {
            if !s.released {
                return true;
            }
            if live && s.id != 0 && !(s.local_done && s.remote_done) {
                frame::write_rst_stream(output, s.id, ErrorCode::Cancel);
            }
            false
        });
        if self.state == State::GoingAway && self.streams.is_empty() {
            let _ = self.flush();
            self.state = State::Dead;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.output_pos < self.output.len() {
            if !self.ready.writable {
                return Ok(());
            }
            match self.transport.write(&self.output[self.output_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output_pos += n;
                    if self.output_pos < self.output.len() {
                        self.ready.writable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match self.transport.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready.writable = false,
            Err(e) => return Err(e),
        }
        if self.output_pos == self.output.len() {
            self.output.clear();
            self.output_pos = 0;
        }
        Ok(())
    }

    fn connection_error(&mut self, e: H2Error) {
        warn!("h2 backend {}: {e}", self.backend);
        let last = self.next_id.saturating_sub(2);
        frame::write_goaway(&mut self.output, last, e.code(), b"");
        let _ = self.flush();
        self.fail_all(
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
        );
    }

    /// The connection is gone: streams never sent get `unsent` (they may go elsewhere), those
    /// under way `sent`, and those already answered nothing.
    fn fail_all(&mut self, unsent: io::ErrorKind, sent: io::ErrorKind) {
        self.state = State::Dead;
        for s in &mut self.streams {
            if s.response_complete() {
                continue;
            }
            s.fail(if s.id == 0 { unsent } else { sent });
        }
    }
}
