//! One client connection's life: its requests, the backend connection each one travels on, and
//! the bytes streaming both ways between them.
//!
//! A session is driven by readiness: the reactor records which of its two sockets became
//! readable or writable and calls [`Session::drive`], which makes every step it can (read, parse,
//! forward, write) until none is left. Buffers are bounded, so a slow reader on one side stops
//! the proxy reading from the other side instead of making it buffer.
//!
//! Per direction, the bytes of the message being forwarded sit at the front of the input buffer
//! and are written out from there; only heads are rewritten, into a separate small buffer that
//! is written first. Request bytes already written to the backend stay in the buffer until the
//! backend answers, so a request that met a stale pooled connection can be replayed.
//!
//! The session owns the connection's state machine; the bytes travel through a
//! [`Transport`] on each side, which hides whether they are plain or TLS:
//!
//! - `client` and `backend`: each side's socket work (reads, writes, half-closes, the
//!   backend connection's life from connect or pool to release);
//! - `h1`: the HTTP/1 exchange, head and body of the request and of its response;
//! - `recovery`: what a backend failure turns into (replay, redispatch, an error answer);
//! - `timers` and `accounting`: the deadlines, and the record of each exchange.

pub(crate) mod accounting;
mod backend;
mod client;
mod conn;
mod h1;
mod h2;
mod recovery;
mod timers;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Registry;

use crate::access::AccessLog;
use crate::buffer::{Buf, BufPool};
use crate::config::Timeouts;
use crate::events::EventBus;
use crate::http::{BodyKind, BodyScanner, HeadLimits, Request};
use crate::route::Table;
use crate::stats::Totals;
use crate::transport::{Readiness, Transport};
use crate::upstream::{BackendId, Backends, Pool, PoolPolicy};

pub use conn::Connection;
pub use h2::H2Session;

/// How many read/write rounds one `drive` call may make before giving other sessions a turn.
const MAX_ROUNDS: usize = 64;
/// How long a closing connection is read and discarded after our last byte, so that the
/// client sees the response rather than a reset caused by its own unread bytes.
const LINGER: Duration = Duration::from_secs(2);

/// What the reactor lends a session while it runs.
pub struct Ctx<'a> {
    pub now: Instant,
    pub registry: &'a Registry,
    pub backends: &'a Backends,
    pub router: &'a Table,
    pub events: &'a EventBus,
    pub totals: &'a Totals,
    pub pool: &'a mut Pool,
    pub bufs: &'a mut BufPool,
    pub settings: &'a Settings,
    pub access: &'a mut AccessLog,
}

/// The parts of the configuration sessions use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub head_limits: HeadLimits,
    /// `request_id`: requests without an `X-Request-Id` get one.
    pub request_id: bool,
    /// The reactor polls without sleeping (`busy_poll`).
    pub busy_poll: bool,
    /// How long a busy reactor polls on before it sleeps (`idle_spin`).
    pub idle_spin: std::time::Duration,
    /// How many other backends a failed request may still go to.
    pub retries: u32,
    /// Peers whose connections open with a PROXY protocol header.
    pub proxy_from: Vec<ipnet::IpNet>,
    /// `tls.handshake_timeout`.
    pub handshake_timeout: Duration,
    /// `tls.redirect_http`: plain requests are answered 308 to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// `[http2]`.
    pub http2: crate::config::Http2Config,
}

/// What the reactor should do with a session after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for readiness or a timer.
    Idle,
    /// Could go on, but yielded so other sessions get a turn: drive it again soon.
    Yield,
    /// Finished: drop it.
    Close,
}

/// The session is over; carried by `?` out of any step.
struct Closed;

type Step = Result<bool, Closed>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestPhase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Forwarding the request body.
    Body,
    /// The whole request has been read from the client.
    Complete,
    /// The response ended before the request body did: the rest is not forwarded and the
    /// client connection closes after the response.
    Abandoned,
    /// After a 101: raw bytes both ways.
    Tunnel,
    /// Our last byte is out: discarding input until the client closes or the linger ends.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponsePhase {
    /// No exchange in progress.
    Idle,
    Head,
    Body,
    /// The whole response has been read (or answered by us).
    Complete,
    Tunnel,
}

/// The connection to the backend serving the current exchange.
struct BackendConn {
    stream: Transport,
    /// Its id in the pool's table (and its poll token).
    id: usize,
    index: BackendId,
    ready: Readiness,
    connected: bool,
    /// Taken from the pool rather than opened for this request.
    reused: bool,
    /// When the connect began, or the last byte went to it or came from it.
    last_activity: Instant,
    eof: bool,
    write_shut: bool,
}

/// One request and its response.
struct Exchange {
    request: Request,
    /// When its head was complete.
    started: Instant,
    /// How long its head took to arrive (from the connection's start for the first request).
    head_time: Duration,
    /// How long the backend connection took to open (zero for a pooled one).
    connect_time: Option<Duration>,
    /// When the first byte of the backend's response came.
    first_byte_at: Option<Instant>,
    /// Request bytes read from the client: head, body, or tunnel.
    bytes_from_client: u64,
    /// How it ended, when not as it should and not answered by the balancer (`error_cause`):
    /// `client-closed`, `client-write-timeout`, `shutdown`...
    termination: Option<&'static str>,
    /// The pool it was routed to and that pool's policy; `None` when the balancer answers it
    /// (a redirect, no route).
    pool: Option<usize>,
    policy: Option<Arc<PoolPolicy>>,
    /// Backends whose connect failed for this request; never picked again for it.
    tried: Vec<BackendId>,
    backend: Option<BackendId>,
    status: u16,
    bytes_to_client: u64,
    /// Some byte of a response (interim or final) came from the backend.
    response_started: bool,
    /// Some byte of the final answer was handed to the client socket.
    answer_sent: bool,
    /// The stale-connection replay has been used.
    replayed: bool,
    /// Backends tried so far, the current one included.
    tries: u32,
    /// The backend's response body ends at its close.
    close_delimited: bool,
    backend_keep_alive: bool,
    /// Set when the proxy answered itself.
    error_cause: Option<&'static str>,
}

pub struct Session {
    pub id: u64,
    slot: usize,
    client: Transport,
    peer: SocketAddr,
    client_ready: Readiness,
    client_eof: bool,
    client_write_shut: bool,
    last_client_read: Instant,
    last_client_write: Instant,
    /// When the head now arriving began: the deadline of `timeouts.client_header` runs from it.
    head_started: Instant,
    /// Whether a request has completed on this connection (the next wait is keep-alive idle).
    served_any: bool,
    linger_until: Option<Instant>,

    req_in: Buf,
    req_phase: RequestPhase,
    req_scanner: BodyScanner,
    head_searched: usize,
    /// How far the head still arriving has been checked for bytes that make it invalid.
    head_checked: crate::http::request::PartialHead,
    /// Bytes at the front of `req_in` that belong to the message being forwarded.
    req_released: usize,
    /// Of those, how many were already written to the backend (kept for a replay).
    req_written: usize,
    /// Every byte of the request sent so far is still held, so it can go to another connection.
    replayable: bool,
    to_backend: Vec<u8>,
    to_backend_pos: usize,

    resp_in: Buf,
    resp_phase: ResponsePhase,
    resp_scanner: BodyScanner,
    resp_head_searched: usize,
    resp_released: usize,
    to_client: Vec<u8>,
    to_client_pos: usize,

    /// Boxed: an idle connection (most of them, under keep-alive) then pays a pointer for it.
    exchange: Option<Box<Exchange>>,
    backend: Option<BackendConn>,
    /// Close the client connection once the current response is out.
    close_after: bool,
    /// The client's ACKs are no longer held for the response (see [`Session::ack_promptly`]).
    acks_promptly: bool,
    /// The balancer is stopping: the request under way (or arriving) is the last.
    draining: bool,
    /// A PROXY protocol header must come before the first request (the peer is a trusted
    /// L4 proxy); `peer` becomes the client it names.
    awaiting_proxy_header: bool,
    /// The timer deadline the reactor has queued for this session, if any.
    pub armed: Option<Instant>,
    /// The HTTP/2 stream this exchange carries (0: the session is a client connection).
    h2_stream: u32,
    /// The client chose HTTP/2 (ALPN `h2`, or the h2c preface): the connection must become an
    /// HTTP/2 one before anything is parsed.
    wants_h2: bool,
}

/// What an HTTP/1 session hands over when its connection turns out to be HTTP/2.
pub struct Handover {
    pub id: u64,
    pub slot: usize,
    pub client: Transport,
    pub peer: SocketAddr,
    pub ready: Readiness,
    /// Bytes already read: the start of the client's preface.
    pub input: Vec<u8>,
    pub started: Instant,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Why a backend connection failed; decides between retry, 502 and 504.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendFailure {
    Connect,
    ConnectTimeout,
    /// Reset, or closed before the response was complete.
    Broken,
    /// An HTTP/2 backend did not take the stream (REFUSED_STREAM, or past its GOAWAY): it did
    /// nothing with the request.
    Refused,
    /// Sent bytes that are not an HTTP response.
    Garbage,
    Timeout,
}

impl Session {
    /// Marks the connection as coming from a trusted L4 proxy that sends a PROXY header first.
    pub fn expect_proxy_header(&mut self) {
        self.awaiting_proxy_header = true;
    }

    pub fn new(id: u64, slot: usize, client: Transport, peer: SocketAddr, now: Instant) -> Session {
        Session {
            id,
            slot,
            client,
            peer,
            // A new socket can be written to; an edge for it may never come.
            client_ready: Readiness {
                readable: true,
                writable: true,
                read_closed: false,
            },
            client_eof: false,
            client_write_shut: false,
            last_client_read: now,
            last_client_write: now,
            head_started: now,
            served_any: false,
            linger_until: None,
            req_in: Buf::default(),
            req_phase: RequestPhase::Head,
            req_scanner: BodyScanner::new(BodyKind::None),
            head_searched: 0,
            head_checked: Default::default(),
            req_released: 0,
            req_written: 0,
            replayable: false,
            to_backend: Vec::new(),
            to_backend_pos: 0,
            resp_in: Buf::default(),
            resp_phase: ResponsePhase::Idle,
            resp_scanner: BodyScanner::new(BodyKind::None),
            resp_head_searched: 0,
            resp_released: 0,
            to_client: Vec::new(),
            to_client_pos: 0,
            exchange: None,
            backend: None,
            close_after: false,
            acks_promptly: false,
            draining: false,
            awaiting_proxy_header: false,
            armed: None,
            h2_stream: 0,
            wants_h2: false,
        }
    }

    /// The HTTP/1 exchange under HTTP/2 stream `stream`: its client side is `pipe`.
    pub fn for_stream(
        id: u64,
        slot: usize,
        stream: u32,
        pipe: crate::transport::pipe::Pipe,
        peer: SocketAddr,
        now: Instant,
    ) -> Session {
        let mut s = Session::new(id, slot, Transport::Stream(Box::new(pipe)), peer, now);
        s.h2_stream = stream;
        s
    }

    /// The stream's queues, for a session made by [`Session::for_stream`].
    pub fn pipe_mut(&mut self) -> Option<&mut crate::transport::pipe::Pipe> {
        self.client.pipe_mut()
    }

    /// The backend connection's id in the pool's table, while there is one.
    pub fn backend_id(&self) -> Option<usize> {
        self.backend.as_ref().map(|b| b.id)
    }

    /// No exchange is under way (none began, or the last one was accounted for).
    pub fn is_between_exchanges(&self) -> bool {
        self.exchange.is_none()
    }

    /// See [`Session::hand_over`].
    pub fn wants_h2(&self) -> bool {
        self.wants_h2
    }

    /// Gives up the client connection to an HTTP/2 session, with the bytes read so far.
    pub fn hand_over(mut self, ctx: &mut Ctx) -> Handover {
        let input = self.req_in.data().to_vec();
        self.req_in.clear();
        self.req_in.release_if_empty(ctx.bufs);
        self.resp_in.release_if_empty(ctx.bufs);
        ctx.bufs.return_head(&mut self.to_backend);
        ctx.bufs.return_head(&mut self.to_client);
        Handover {
            id: self.id,
            slot: self.slot,
            client: self.client,
            peer: self.peer,
            ready: self.client_ready,
            input,
            started: self.head_started,
        }
    }

    /// Records an event on the client socket.
    pub fn client_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.client_ready.record(readable, writable, read_closed);
    }

    /// Records an event on the backend socket.
    pub fn backend_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if let Some(b) = &mut self.backend {
            b.ready.record(readable, writable, read_closed);
        }
    }

    /// The balancer is stopping: an idle connection closes now; one with a request under way
    /// finishes that request and says `Connection: close` with its response.
    pub fn begin_drain(&mut self, ctx: &mut Ctx) -> Outcome {
        self.draining = true;
        // A connection that has not sent its first request yet may well be sending it now (an
        // L4 tier in front connected before it saw us drain): it gets that request answered,
        // with `Connection: close`, within the header timeout. One that has been served is
        // waiting on keep-alive and can go.
        let idle = self.exchange.is_none()
            && self.req_in.is_empty()
            && (self.req_phase == RequestPhase::Closing
                || (self.req_phase == RequestPhase::Head && self.served_any));
        if idle {
            self.close(ctx);
            return Outcome::Close;
        }
        if self.exchange.is_some() {
            self.close_after = true;
        }
        self.drive(ctx)
    }

    /// Makes every step it can until nothing more can happen without new readiness.
    pub fn drive(&mut self, ctx: &mut Ctx) -> Outcome {
        for _ in 0..MAX_ROUNDS {
            match self.round(ctx) {
                Err(Closed) => {
                    self.close(ctx);
                    return Outcome::Close;
                }
                Ok(true) => continue,
                Ok(false) => {
                    // Waiting for more: a few request bytes held meanwhile (a head trickling
                    // in, an upload's next bytes or a body waiting for its backend connection)
                    // should not pin a whole buffer, or a thousand slow clients pin a thousand.
                    self.req_in.park(ctx.bufs);
                    self.req_in.release_if_empty(ctx.bufs);
                    self.resp_in.release_if_empty(ctx.bufs);
                    if self.exchange.is_none() {
                        // Idle between requests: ten thousand such connections should cost
                        // their session structs and nothing more.
                        ctx.bufs.return_head(&mut self.to_backend);
                        ctx.bufs.return_head(&mut self.to_client);
                    }
                    return Outcome::Idle;
                }
            }
        }
        Outcome::Yield
    }

    fn round(&mut self, ctx: &mut Ctx) -> Step {
        let mut progress = false;
        progress |= self.read_client(ctx)?;
        progress |= self.advance_request(ctx)?;
        progress |= self.write_backend(ctx)?;
        progress |= self.read_backend(ctx)?;
        progress |= self.advance_response(ctx)?;
        progress |= self.write_client(ctx)?;
        progress |= self.finish(ctx)?;
        Ok(progress)
    }
}
