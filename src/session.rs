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

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::Registry;

use crate::buffer::{Buf, BufPool};
use crate::config::Timeouts;
use crate::events::{Event, EventBus, RequestEvent};
use crate::http::{
    self, request, response, Answer, BodyKind, BodyScanner, HeadLimits, Request, RequestError,
};
use crate::stats::Totals;
use crate::upstream::{BackendState, Backends, Pool};

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
    pub events: &'a EventBus,
    pub totals: &'a Totals,
    pub pool: &'a mut Pool,
    pub bufs: &'a mut BufPool,
    pub settings: &'a Settings,
}

/// The parts of the configuration sessions use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub head_limits: HeadLimits,
    pub access_log: bool,
    /// The reactor polls without sleeping (`busy_poll`).
    pub busy_poll: bool,
    /// How many other backends a failed request may still go to.
    pub retries: u32,
    /// Peers whose connections open with a PROXY protocol header.
    pub proxy_from: Vec<ipnet::IpNet>,
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

/// Readiness of one socket, remembered between edge-triggered events.
#[derive(Debug, Clone, Copy, Default)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer closed or the socket failed: read on until the read says so, since no new
    /// edge will come for what is already queued.
    read_closed: bool,
}

impl Readiness {
    fn record(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.readable |= readable;
        self.writable |= writable;
        self.read_closed |= read_closed;
    }

    /// After a read that did not fill the buffer: the queue is empty, and new bytes will come
    /// with a new edge.
    fn drained(&mut self) {
        if !self.read_closed {
            self.readable = false;
        }
    }
}

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
    stream: TcpStream,
    /// Its id in the pool's table (and its poll token).
    id: usize,
    index: usize,
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
    started: Instant,
    /// Backends whose connect failed for this request; never picked again for it.
    tried: Vec<usize>,
    backend: Option<usize>,
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
    client: TcpStream,
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
    /// The balancer is stopping: the request under way (or arriving) is the last.
    draining: bool,
    /// A PROXY protocol header must come before the first request (the peer is a trusted
    /// L4 proxy); `peer` becomes the client it names.
    awaiting_proxy_header: bool,
    /// The timer deadline the reactor has queued for this session, if any.
    pub armed: Option<Instant>,
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
    /// Sent bytes that are not an HTTP response.
    Garbage,
    Timeout,
}

impl Session {
    /// Marks the connection as coming from a trusted L4 proxy that sends a PROXY header first.
    pub fn expect_proxy_header(&mut self) {
        self.awaiting_proxy_header = true;
    }

    pub fn new(id: u64, slot: usize, client: TcpStream, peer: SocketAddr, now: Instant) -> Session {
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
            draining: false,
            awaiting_proxy_header: false,
            armed: None,
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
        let idle = self.exchange.is_none()
            && self.req_in.is_empty()
            && matches!(self.req_phase, RequestPhase::Head | RequestPhase::Closing);
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

    // ---- client side ---------------------------------------------------------------------

    fn read_client(&mut self, ctx: &mut Ctx) -> Step {
        if !self.client_ready.readable || self.client_eof {
            return Ok(false);
        }
        if self.req_phase == RequestPhase::Closing {
            return self.discard_client_input(ctx);
        }
        let capacity = ctx.bufs.buffer_size();
        if self.req_in.is_full(capacity) {
            if self.req_written == 0 {
                return Ok(false);
            }
            // The buffer is needed for what comes next: the bytes kept for a replay must go.
            self.drop_replay_copy();
            if self.req_in.is_full(capacity) {
                return Ok(false);
            }
        }
        match self.req_in.read_from(&mut self.client, ctx.bufs) {
            Ok((0, _)) => {
                self.client_eof = true;
                self.on_client_eof(ctx)
            }
            Ok((_, short)) => {
                if short {
                    self.client_ready.drained();
                }
                self.last_client_read = ctx.now;
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                self.client_ready.readable = false;
                Ok(false)
            }
            Err(e) if interrupted(&e) => Ok(true),
            Err(e) => {
                debug!("client {}: read error: {e}", self.peer);
                Err(Closed)
            }
        }
    }

    fn on_client_eof(&mut self, ctx: &mut Ctx) -> Step {
        match self.req_phase {
            // Whole requests, or the rest of one, may still be in the buffer: a client may send
            // everything and half-close at once. The parser and the body scanner use them
            // first, and end the session when they need bytes that will never come.
            RequestPhase::Head
            | RequestPhase::Body
            | RequestPhase::Complete
            | RequestPhase::Abandoned => Ok(true),
            RequestPhase::Tunnel => {
                self.shut_backend_write_when_flushed(ctx);
                Ok(true)
            }
            RequestPhase::Closing => Err(Closed),
        }
    }

    /// The client has half-closed and no byte of another request follows the current one.
    fn last_request_before_eof(&self) -> bool {
        self.client_eof && self.req_in.len() <= self.req_released
    }

    fn discard_client_input(&mut self, ctx: &mut Ctx) -> Step {
        loop {
            self.req_in.clear();
            match self.req_in.read_from(&mut self.client, ctx.bufs) {
                Ok((0, _)) => return Err(Closed),
                Ok(_) => continue,
                Err(e) if would_block(&e) => {
                    self.client_ready.readable = false;
                    self.req_in.clear();
                    return Ok(false);
                }
                Err(e) if interrupted(&e) => continue,
                Err(_) => return Err(Closed),
            }
        }
    }

    fn write_client(&mut self, ctx: &mut Ctx) -> Step {
        let mut progress = false;
        while self.client_ready.writable {
            let room = self.to_client.capacity() - self.to_client.len();
            if self.to_client_pos < self.to_client.len() && self.resp_released <= room {
                // A body that fits behind its head in the head's vector (no allocation) goes
                // out with it in one `send`, which costs less than `writev` of two slices.
                self.to_client
                    .extend_from_slice(&self.resp_in.data()[..self.resp_released]);
                self.resp_in.consume(self.resp_released);
                self.resp_released = 0;
            }
            let head = &self.to_client[self.to_client_pos..];
            let body = &self.resp_in.data()[..self.resp_released];
            if head.is_empty() && body.is_empty() {
                break;
            }
            let result = if head.is_empty() {
                self.client.write(body)
            } else if body.is_empty() {
                self.client.write(head)
            } else {
                self.client
                    .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            };
            match result {
                Ok(0) => return Err(Closed),
                Ok(n) => {
                    progress = true;
                    self.last_client_write = ctx.now;
                    if n < head.len() + body.len() {
                        // The send buffer is full: an edge will say when it has room again.
                        self.client_ready.writable = false;
                    }
                    let from_head = n.min(head.len());
                    self.to_client_pos += from_head;
                    let from_body = n - from_head;
                    self.resp_in.consume(from_body);
                    self.resp_released -= from_body;
                    if self.to_client_pos == self.to_client.len() {
                        self.to_client.clear();
                        self.to_client_pos = 0;
                    }
                    if let Some(ex) = &mut self.exchange {
                        ex.bytes_to_client += n as u64;
                    }
                }
                Err(e) if would_block(&e) => self.client_ready.writable = false,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    debug!("client {}: write error: {e}", self.peer);
                    return Err(Closed);
                }
            }
        }
        let backend_done = self.backend.as_ref().is_some_and(|b| b.eof);
        if self.req_phase == RequestPhase::Closing
            || (self.req_phase == RequestPhase::Tunnel && backend_done)
        {
            self.shut_client_write_when_flushed();
        }
        Ok(progress)
    }

    fn client_output_flushed(&self) -> bool {
        self.to_client_pos == self.to_client.len() && self.resp_released == 0
    }

    fn shut_client_write_when_flushed(&mut self) {
        if !self.client_write_shut && self.client_output_flushed() {
            self.client_write_shut = true;
            let _ = self.client.shutdown(Shutdown::Write);
        }
    }

    // ---- requests --------------------------------------------------------------------------

    fn advance_request(&mut self, ctx: &mut Ctx) -> Step {
        match self.req_phase {
            RequestPhase::Head => {
                let progress = self.parse_request_head(ctx)?;
                if progress && matches!(self.req_phase, RequestPhase::Body | RequestPhase::Tunnel) {
                    // Body bytes that came with the head go out with it, in one write.
                    self.advance_request(ctx)?;
                }
                Ok(progress)
            }
            RequestPhase::Body => {
                let pending = &self.req_in.data()[self.req_released..];
                if pending.is_empty() {
                    // After the client's half-close the body will not be completed: it gave up
                    // mid-request.
                    return if self.client_eof {
                        Err(Closed)
                    } else {
                        Ok(false)
                    };
                }
                match self.req_scanner.scan(pending) {
                    Ok(scanned) => {
                        self.req_released += scanned.used;
                        if scanned.done {
                            self.req_phase = RequestPhase::Complete;
                        }
                        Ok(scanned.used > 0 || scanned.done)
                    }
                    Err(e) => {
                        debug!("client {}: bad request body: {e}", self.peer);
                        self.refuse_request(ctx, Answer::BadRequest, "bad-chunked-body")
                    }
                }
            }
            RequestPhase::Tunnel => {
                let len = self.req_in.len();
                let progress = self.req_released != len;
                self.req_released = len;
                Ok(progress)
            }
            RequestPhase::Complete | RequestPhase::Abandoned | RequestPhase::Closing => Ok(false),
        }
    }

    fn parse_request_head(&mut self, ctx: &mut Ctx) -> Step {
        // One exchange at a time: a pipelined request waits until the previous response is out.
        if self.exchange.is_some() || self.close_after {
            return Ok(false);
        }
        if self.req_in.is_empty() {
            // After the client's half-close, no request is coming.
            return if self.client_eof {
                Err(Closed)
            } else {
                Ok(false)
            };
        }
        if self.awaiting_proxy_header {
            return self.parse_proxy_header(ctx);
        }
        // RFC 9112 §2.2: empty lines before a request line are ignored (some clients send a CRLF
        // after a body). They must go before the head is looked for: alone in the buffer they
        // look like a complete head to `find_head_end` and like nothing yet to httparse. Nor do
        // they start a head, so they do not restart the header clock.
        let blank = http::leading_empty_lines(self.req_in.data());
        if blank > 0 {
            self.req_in.consume(blank);
            self.head_searched = 0;
            return Ok(true);
        }
        if self.head_searched == 0 && self.served_any {
            self.head_started = ctx.now;
        }
        let limits = &ctx.settings.head_limits;
        let data = self.req_in.data();
        let Some(_) = http::find_head_end(data, &mut self.head_searched) else {
            if self.client_eof {
                // The client half-closed mid-head: the rest will never come.
                return Err(Closed);
            }
            return match request::check_partial(data, limits) {
                Ok(()) => Ok(false),
                Err(e) => self.refuse_head(ctx, e),
            };
        };
        ctx.bufs.lend_head(&mut self.to_backend);
        ctx.bufs.lend_head(&mut self.to_client);
        let parsed = request::parse(
            data,
            limits,
            self.peer.ip(),
            ctx.settings.access_log || ctx.events.wants_requests(),
            &mut self.to_backend,
        );
        let request = match parsed {
            Ok(Some(request)) => request,
            // httparse wants more than what looked like a head's end: wait for it (the header
            // timeout still runs).
            Ok(None) if self.client_eof => return Err(Closed),
            Ok(None) => return Ok(false),
            Err(e) => return self.refuse_head(ctx, e),
        };
        self.req_in.consume(request.head_len);
        self.head_searched = 0;
        self.to_backend_pos = 0;
        self.req_released = 0;
        self.req_written = 0;
        self.replayable = true;
        self.req_scanner = BodyScanner::new(request.body);
        self.req_phase = if self.req_scanner.is_done() {
            RequestPhase::Complete
        } else {
            RequestPhase::Body
        };
        self.resp_phase = ResponsePhase::Head;
        self.resp_head_searched = 0;
        if !request.keep_alive || self.draining {
            self.close_after = true;
        }
        self.exchange = Some(Box::new(Exchange {
            request,
            started: ctx.now,
            tried: Vec::new(),
            backend: None,
            status: 0,
            bytes_to_client: 0,
            response_started: false,
            answer_sent: false,
            replayed: false,
            tries: 0,
            close_delimited: false,
            backend_keep_alive: false,
            error_cause: None,
        }));
        if !self.connect_backend(ctx) {
            let cause = if ctx.backends.is_empty() {
                "no-backend"
            } else {
                "all-backends-unreachable"
            };
            return self.answer_error(ctx, Answer::ServiceUnavailable, cause);
        }
        Ok(true)
    }

    fn parse_proxy_header(&mut self, ctx: &mut Ctx) -> Step {
        match http::proxy_protocol::parse(self.req_in.data()) {
            Ok(None) if self.client_eof => Err(Closed),
            Ok(None) => Ok(false),
            Ok(Some(header)) => {
                self.req_in.consume(header.len);
                self.awaiting_proxy_header = false;
                if let Some(source) = header.source {
                    self.peer = source;
                }
                Ok(true)
            }
            Err(e) => {
                debug!("client {}: {}", self.peer, e.0);
                self.refuse_request(ctx, Answer::BadRequest, "bad-proxy-header")
            }
        }
    }

    fn refuse_head(&mut self, ctx: &mut Ctx, error: RequestError) -> Step {
        debug!("client {}: {error}", self.peer);
        let answer = match error {
            RequestError::Malformed(_) => Answer::BadRequest,
            RequestError::HeadTooLarge => Answer::HeaderFieldsTooLarge,
            RequestError::TargetTooLong => Answer::UriTooLong,
            RequestError::NotImplemented(_) => Answer::NotImplemented,
            RequestError::MethodNotAllowed => Answer::MethodNotAllowed,
            RequestError::VersionNotSupported => Answer::HttpVersionNotSupported,
        };
        let cause = match error {
            RequestError::Malformed(_) => "bad-request",
            RequestError::HeadTooLarge => "head-too-large",
            RequestError::TargetTooLong => "target-too-long",
            RequestError::NotImplemented(_) => "unsupported-transfer-coding",
            RequestError::MethodNotAllowed => "method-not-allowed",
            RequestError::VersionNotSupported => "version-not-supported",
        };
        self.refuse_request(ctx, answer, cause)
    }

    /// Answers a request the proxy will not forward, and closes: after a bad head, nothing that
    /// follows on this connection can be trusted to start where we think it does.
    fn refuse_request(&mut self, ctx: &mut Ctx, answer: Answer, cause: &'static str) -> Step {
        if self.exchange.as_ref().is_some_and(|ex| ex.answer_sent) {
            return Err(Closed);
        }
        match &mut self.exchange {
            Some(ex) => {
                ex.status = answer.status();
                ex.error_cause = Some(cause);
                self.log_exchange(ctx, "");
            }
            None => self.record_refusal(ctx, answer.status(), cause),
        }
        self.drop_backend(ctx, false);
        self.exchange = None;
        self.to_client.clear();
        self.to_client_pos = 0;
        self.resp_in.clear();
        self.resp_released = 0;
        answer.write(&mut self.to_client, cause, Some("close"), false);
        self.resp_phase = ResponsePhase::Complete;
        self.begin_closing(ctx);
        Ok(true)
    }

    // ---- the backend connection ---------------------------------------------------------

    /// Gets a connection for the current exchange, on a backend this request has not failed
    /// on, within the retry budget: an idle pooled one, or a new connect. Returns false when
    /// none is left to try.
    fn connect_backend(&mut self, ctx: &mut Ctx) -> bool {
        loop {
            let Some(ex) = &mut self.exchange else {
                return false;
            };
            if ex.tries > ctx.settings.retries {
                return false;
            }
            // Never the backend that just failed, unless it is the only one.
            let pick = ctx.backends.pick(&ex.tried).or_else(|| {
                if ctx.backends.live_count() == 1 {
                    ctx.backends.pick(&[])
                } else {
                    None
                }
            });
            let Some(index) = pick else {
                return false;
            };
            let Some(backend) = ctx.backends.get(index) else {
                return false;
            };
            ex.tries += 1;
            ex.backend = Some(index);
            if let Some((stream, id)) = ctx.pool.take(index, self.slot) {
                self.attach(ctx, stream, id, index, true);
                return true;
            }
            match self.open_connection(ctx, index) {
                Ok(()) => return true,
                Err(e) => {
                    warn!(
                        "connect to {} ({}) failed: {e}",
                        backend.name, backend.address
                    );
                    backend.errors.fetch_add(1, Ordering::Relaxed);
                    ctx.backends.mark_down(index, "connect failed");
                }
            }
            if let Some(ex) = &mut self.exchange {
                ex.tried.push(index);
            }
        }
    }

    /// Starts a new connection to backend `index` for the current exchange.
    fn open_connection(&mut self, ctx: &mut Ctx, index: usize) -> io::Result<()> {
        let address = ctx
            .backends
            .get(index)
            .map(|b| b.address)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut stream = TcpStream::connect(address)?;
        let id = ctx.pool.open(&mut stream, index, self.slot, ctx.registry)?;
        if let Some(backend) = ctx.backends.get(index) {
            backend.connections.fetch_add(1, Ordering::Relaxed);
        }
        self.attach(ctx, stream, id, index, false);
        Ok(())
    }

    /// Makes `stream` the current exchange's backend connection.
    fn attach(&mut self, ctx: &mut Ctx, stream: TcpStream, id: usize, index: usize, reused: bool) {
        if let Some(backend) = ctx.backends.get(index) {
            backend.requests.fetch_add(1, Ordering::Relaxed);
            backend.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        self.backend = Some(BackendConn {
            stream,
            id,
            index,
            // A pooled connection is writable now; a new one says so when its connect ends. Nothing
            // is there to read: a close while it sat in the pool dropped it there, and one from
            // now on comes with an edge of its own.
            ready: Readiness {
                readable: false,
                writable: reused,
                read_closed: false,
            },
            connected: reused,
            reused,
            last_activity: ctx.now,
            eof: false,
            write_shut: false,
        });
    }

    /// Takes the backend connection away from the session; the caller parks or releases it.
    fn detach(&mut self, ctx: &mut Ctx) -> Option<BackendConn> {
        let b = self.backend.take()?;
        if let Some(backend) = ctx.backends.get(b.index) {
            backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        Some(b)
    }

    /// Finishes a non-blocking connect once the socket reports readiness.
    fn check_connected(&mut self, ctx: &mut Ctx) -> Step {
        let Some(b) = &mut self.backend else {
            return Ok(false);
        };
        if b.connected {
            return Ok(true);
        }
        if !b.ready.writable && !b.ready.readable {
            return Ok(false);
        }
        match b.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                debug!("connect to backend {} failed: {e}", b.index);
                return self.backend_failed(ctx, BackendFailure::Connect);
            }
        }
        match b.stream.peer_addr() {
            Ok(_) => {
                b.connected = true;
                let _ = b.stream.set_nodelay(true);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                // A spurious wake-up: the connect is still in progress.
                b.ready = Readiness::default();
                Ok(false)
            }
            Err(_) => self.backend_failed(ctx, BackendFailure::Connect),
        }
    }

    fn write_backend(&mut self, ctx: &mut Ctx) -> Step {
        if !self.check_connected(ctx)? {
            return Ok(false);
        }
        let mut progress = false;
        loop {
            let Some(b) = &mut self.backend else {
                return Ok(progress);
            };
            if !b.ready.writable || b.write_shut {
                return Ok(progress);
            }
            let head = &self.to_backend[self.to_backend_pos..];
            let body = &self.req_in.data()[self.req_written..self.req_released];
            if head.is_empty() && body.is_empty() {
                break;
            }
            let result = if head.is_empty() {
                b.stream.write(body)
            } else if body.is_empty() {
                b.stream.write(head)
            } else {
                b.stream
                    .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            };
            match result {
                Ok(n) => {
                    progress = true;
                    b.last_activity = ctx.now;
                    if n < head.len() + body.len() {
                        // The send buffer is full: an edge will say when it has room again.
                        b.ready.writable = false;
                    }
                    let from_head = n.min(head.len());
                    self.to_backend_pos += from_head;
                    self.req_written += n - from_head;
                    // Once a byte is out, only an idempotent request may be sent again: for any
                    // other the copy is dead weight (a slow upload would hold a buffer for it).
                    let idempotent = self
                        .exchange
                        .as_ref()
                        .is_some_and(|ex| ex.request.method.is_idempotent());
                    if !self.replayable || !idempotent {
                        self.drop_replay_copy();
                    }
                }
                Err(e) if would_block(&e) => b.ready.writable = false,
                Err(e) if interrupted(&e) => {}
                Err(e) if self.req_phase != RequestPhase::Tunnel => {
                    // The backend stopped reading: it answered early (a 413 to an upload, say)
                    // and closed, or it is gone. An answer may be waiting in the socket ahead of
                    // the reset, so stop writing and let a read tell which: a response goes on
                    // as usual (the rest of the request is then abandoned), an end without one
                    // is the failure.
                    debug!("backend stopped reading the request: {e}");
                    b.write_shut = true;
                    b.ready.readable = true;
                    return Ok(true);
                }
                Err(e) => {
                    debug!("backend write error: {e}");
                    return self.backend_failed(ctx, BackendFailure::Broken);
                }
            }
        }
        if self.req_phase == RequestPhase::Tunnel && self.client_eof {
            self.shut_backend_write_when_flushed(ctx);
        }
        Ok(progress)
    }

    fn request_fully_sent(&self) -> bool {
        matches!(self.req_phase, RequestPhase::Complete)
            && self.to_backend_pos == self.to_backend.len()
            && self.req_written == self.req_released
    }

    fn shut_backend_write_when_flushed(&mut self, _ctx: &mut Ctx) {
        let flushed =
            self.to_backend_pos == self.to_backend.len() && self.req_written == self.req_released;
        if let Some(b) = &mut self.backend {
            if flushed && !b.write_shut && b.connected {
                b.write_shut = true;
                let _ = b.stream.shutdown(Shutdown::Write);
            }
        }
    }

    /// Forgets the copy of request bytes already written: once one is gone, the request can
    /// no longer be sent again.
    fn drop_replay_copy(&mut self) {
        if self.req_written > 0 {
            self.replayable = false;
        }
        self.req_in.consume(self.req_written);
        self.req_released -= self.req_written;
        self.req_written = 0;
    }

    fn read_backend(&mut self, ctx: &mut Ctx) -> Step {
        if !matches!(
            self.resp_phase,
            ResponsePhase::Head | ResponsePhase::Body | ResponsePhase::Tunnel
        ) {
            return Ok(false);
        }
        if !self.check_connected(ctx)? {
            return Ok(false);
        }
        let capacity = ctx.bufs.buffer_size();
        let Some(b) = &mut self.backend else {
            return Ok(false);
        };
        if !b.ready.readable || b.eof || self.resp_in.is_full(capacity) {
            return Ok(false);
        }
        match self.resp_in.read_from(&mut b.stream, ctx.bufs) {
            Ok((0, _)) => {
                b.eof = true;
                self.on_backend_eof(ctx)
            }
            Ok((_, short)) => {
                if short {
                    b.ready.drained();
                }
                b.last_activity = ctx.now;
                if let Some(ex) = &mut self.exchange {
                    if !ex.response_started {
                        ex.response_started = true;
                    }
                }
                if self.replayable {
                    self.drop_replay_copy();
                }
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                b.ready.readable = false;
                Ok(false)
            }
            Err(e) if interrupted(&e) => Ok(true),
            Err(e) => {
                debug!("backend read error: {e}");
                self.backend_failed(ctx, BackendFailure::Broken)
            }
        }
    }

    fn on_backend_eof(&mut self, ctx: &mut Ctx) -> Step {
        loop {
            match self.resp_phase {
                ResponsePhase::Tunnel => {
                    self.shut_client_write_when_flushed();
                    return Ok(true);
                }
                ResponsePhase::Body if self.resp_scanner.is_close_delimited() => {
                    let len = self.resp_in.len();
                    self.resp_released = len;
                    self.response_complete(ctx);
                    return Ok(true);
                }
                // The close often arrives with the last bytes, which are read but not yet parsed
                // or scanned: they may finish the head and the body. Only a response still
                // unfinished once they are all used was cut short.
                ResponsePhase::Head | ResponsePhase::Body => {
                    if !self.advance_response(ctx)? {
                        return self.backend_failed(ctx, BackendFailure::Broken);
                    }
                }
                // The response is complete: the backend just closed a connection it was done with.
                ResponsePhase::Idle | ResponsePhase::Complete => return Ok(true),
            }
        }
    }

    /// Handles a failed backend connection: a replay, another backend, an error answer, or the
    /// end of the session, whichever is still possible and safe.
    fn backend_failed(&mut self, ctx: &mut Ctx, failure: BackendFailure) -> Step {
        let Some(b) = self.detach(ctx) else {
            return Ok(true);
        };
        ctx.pool.release(b.id);
        let Some(backend) = ctx.backends.get(b.index) else {
            return Ok(true);
        };
        let Some(ex) = &mut self.exchange else {
            return Ok(true);
        };
        let name = backend.name.as_str();
        let nothing_written = self.to_backend_pos == 0 && self.req_written == 0;
        // Nothing of a response reached the client, and every request byte sent is still held.
        let untouched = !ex.answer_sent && self.replayable;

        // The backend may have acted on a request and died before answering, so only a request
        // that may be applied twice is sent again once any byte of it went out (RFC 9112 §9.3.1:
        // "A proxy MUST NOT automatically retry non-idempotent requests").
        let resendable = untouched && (nothing_written || ex.request.method.is_idempotent());
        if b.reused
            && failure == BackendFailure::Broken
            && !ex.response_started
            && resendable
            && !ex.replayed
        {
            // A pooled connection the backend had closed before our request reached it: not the
            // backend's fault, so it is sent again on a fresh connection to the same backend.
            debug!("backend {name}: pooled connection was stale; sending again");
            ex.replayed = true;
            backend.retries.fetch_add(1, Ordering::Relaxed);
            self.restart_request();
            if self.open_connection(ctx, b.index).is_ok() {
                return Ok(true);
            }
            return self.answer_error(ctx, Answer::BadGateway, "connect-failed");
        }

        backend.errors.fetch_add(1, Ordering::Relaxed);
        match failure {
            BackendFailure::Connect => ctx.backends.mark_down(b.index, "connect failed"),
            BackendFailure::ConnectTimeout => ctx.backends.mark_down(b.index, "connect timeout"),
            BackendFailure::Timeout => ctx.backends.mark_down(b.index, "response timeout"),
            BackendFailure::Broken if !b.reused && !ex.response_started => ctx
                .backends
                .mark_down(b.index, "connection closed before a response"),
            BackendFailure::Broken | BackendFailure::Garbage => {}
        }
        let may_retry = match failure {
            BackendFailure::Connect | BackendFailure::ConnectTimeout => true,
            BackendFailure::Timeout => false,
            BackendFailure::Broken | BackendFailure::Garbage => resendable,
        };
        let (answer, cause) = match failure {
            BackendFailure::Connect | BackendFailure::ConnectTimeout => {
                (Answer::ServiceUnavailable, "all-backends-unreachable")
            }
            BackendFailure::Timeout => (Answer::GatewayTimeout, "backend-timeout"),
            BackendFailure::Garbage => (Answer::BadGateway, "bad-response"),
            BackendFailure::Broken => (Answer::BadGateway, "backend-closed"),
        };
        if may_retry {
            ex.tried.push(b.index);
            self.restart_request();
            if self.connect_backend(ctx) {
                debug!("backend {name}: {cause}; request sent to another backend");
                backend.redispatches.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
        }
        warn!("backend {name}: {cause} for client {}", self.peer);
        self.answer_error(ctx, answer, cause)
    }

    /// Rewinds the current request so it can be sent from its first byte on a new connection.
    fn restart_request(&mut self) {
        self.to_backend_pos = 0;
        self.req_written = 0;
        self.resp_in.clear();
        self.resp_released = 0;
        self.resp_head_searched = 0;
        self.resp_phase = ResponsePhase::Head;
        if let Some(ex) = &mut self.exchange {
            ex.response_started = false;
        }
    }

    /// Answers the current exchange with an error of our own if nothing of a response has gone
    /// to the client yet; otherwise all the client can be told is that the connection ends.
    fn answer_error(&mut self, ctx: &mut Ctx, answer: Answer, cause: &'static str) -> Step {
        self.drop_backend(ctx, false);
        let last_before_eof = self.last_request_before_eof();
        let Some(ex) = &mut self.exchange else {
            return Err(Closed);
        };
        if ex.answer_sent {
            return self.end_response_early(ctx, cause);
        }
        ex.status = answer.status();
        ex.error_cause = Some(cause);
        if self.req_phase == RequestPhase::Body {
            // The rest of the request body is not read: the connection cannot carry another.
            self.req_phase = RequestPhase::Abandoned;
            self.close_after = true;
        }
        if last_before_eof {
            self.close_after = true;
        }
        let head_only = ex.request.method == request::Method::Head;
        // As on a backend's answer (parse_response_head): a 1.0 client keeps the connection
        // only when told so.
        let connection = if self.close_after {
            Some("close")
        } else if ex.request.version_minor == 0 {
            Some("keep-alive")
        } else {
            None
        };
        self.to_client.clear();
        self.to_client_pos = 0;
        self.resp_in.clear();
        self.resp_released = 0;
        answer.write(&mut self.to_client, cause, connection, head_only);
        self.resp_phase = ResponsePhase::Complete;
        Ok(true)
    }

    /// The backend failed after its response head went to the client. What was read of the
    /// response still goes out (it may even be all of it); if it is not all, the connection then
    /// closes, which is how the client learns the message was cut short. Closing at once would
    /// throw away bytes already read, and reset the client's connection under them.
    fn end_response_early(&mut self, ctx: &mut Ctx, cause: &'static str) -> Step {
        if self.resp_phase != ResponsePhase::Body {
            return Err(Closed);
        }
        let pending = &self.resp_in.data()[self.resp_released..];
        match self.resp_scanner.scan(pending) {
            Ok(scanned) => {
                self.resp_released += scanned.used;
                if scanned.done {
                    self.response_complete(ctx);
                    return Ok(true);
                }
            }
            Err(_) => return Err(Closed),
        }
        if let Some(ex) = &mut self.exchange {
            ex.error_cause = Some(cause);
        }
        self.resp_in.truncate(self.resp_released);
        self.resp_phase = ResponsePhase::Complete;
        self.close_after = true;
        if self.req_phase == RequestPhase::Body {
            self.req_phase = RequestPhase::Abandoned;
        }
        Ok(true)
    }

    /// Lets go of the backend connection, into the pool when it can carry another request.
    fn drop_backend(&mut self, ctx: &mut Ctx, reusable: bool) {
        if let Some(b) = self.detach(ctx) {
            // A backend removed while this exchange was on it is never picked again: parking
            // the connection would only hold it open, idle, until `backend_idle` (removal
            // closes the pooled ones, but not those still in use then).
            let removed = ctx
                .backends
                .get(b.index)
                .is_none_or(|backend| backend.state() == BackendState::Removed);
            if reusable && !removed && b.connected && !b.eof && !b.write_shut {
                ctx.pool.put(b.id, b.stream, ctx.now);
            } else {
                ctx.pool.release(b.id);
            }
        }
    }

    // ---- responses -------------------------------------------------------------------------

    fn advance_response(&mut self, ctx: &mut Ctx) -> Step {
        match self.resp_phase {
            ResponsePhase::Head => {
                let progress = self.parse_response_head(ctx)?;
                if matches!(self.resp_phase, ResponsePhase::Body | ResponsePhase::Tunnel) {
                    // Body bytes that came with the head go out with it, in one write.
                    self.advance_response(ctx)?;
                }
                Ok(progress)
            }
            ResponsePhase::Body => {
                let pending = &self.resp_in.data()[self.resp_released..];
                if pending.is_empty() {
                    return Ok(false);
                }
                match self.resp_scanner.scan(pending) {
                    Ok(scanned) => {
                        self.resp_released += scanned.used;
                        if scanned.done {
                            self.response_complete(ctx);
                        }
                        Ok(scanned.used > 0 || scanned.done)
                    }
                    Err(e) => {
                        warn!("backend sent a bad response body: {e}");
                        // Part of the response is out already: only closing tells the client.
                        Err(Closed)
                    }
                }
            }
            ResponsePhase::Tunnel => {
                let len = self.resp_in.len();
                let progress = self.resp_released != len;
                self.resp_released = len;
                Ok(progress)
            }
            ResponsePhase::Idle | ResponsePhase::Complete => Ok(false),
        }
    }

    fn parse_response_head(&mut self, ctx: &mut Ctx) -> Step {
        let capacity = ctx.bufs.buffer_size();
        let last_before_eof = self.last_request_before_eof();
        let data = self.resp_in.data();
        if data.is_empty() {
            return Ok(false);
        }
        if http::find_head_end(data, &mut self.resp_head_searched).is_none() {
            if self.resp_in.is_full(capacity) {
                return self.backend_failed(ctx, BackendFailure::Garbage);
            }
            return Ok(false);
        }
        let Some(ex) = &mut self.exchange else {
            return Err(Closed);
        };
        // Interim heads may still be waiting in `to_client`: the new head goes after them.
        let start = self.to_client.len();
        let parsed = response::parse(
            data,
            ex.request.method == request::Method::Head,
            ex.request.upgrade,
            &mut self.to_client,
        );
        let resp = match parsed {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                self.to_client.truncate(start);
                return Ok(false);
            }
            Err(e) => {
                self.to_client.truncate(start);
                warn!("{e}");
                return self.backend_failed(ctx, BackendFailure::Garbage);
            }
        };
        self.resp_in.consume(resp.head_len);
        self.resp_head_searched = 0;
        if resp.is_interim() {
            // 100 Continue and friends go to a 1.1 client as they are; the final answer follows.
            if ex.request.version_minor == 1 {
                self.to_client.extend_from_slice(b"\r\n");
            } else {
                self.to_client.truncate(start);
            }
            return Ok(true);
        }
        ex.status = resp.status;
        ex.backend_keep_alive = resp.backend_keep_alive;
        ex.close_delimited = resp.body == BodyKind::Close;
        ex.answer_sent = true;
        let upgrading = resp.status == 101;
        // A final answer that comes before the whole request body means the backend did not
        // wait for it (an early 413, or a refused 100-continue whose client will never send the
        // body): the exchange ends with the body unread, and the connection with it. The client
        // must learn that from this head (RFC 9110 §10.1.1), not from a closed connection.
        let body_unread = self.req_phase == RequestPhase::Body;
        // A client that half-closed after this request hears that the connection ends with it.
        if ex.close_delimited || !ex.request.keep_alive || body_unread || last_before_eof {
            self.close_after = true;
        }
        self.to_client.extend_from_slice(if upgrading {
            b"Connection: Upgrade\r\n\r\n"
        } else if self.close_after {
            b"Connection: close\r\n\r\n"
        } else if ex.request.version_minor == 0 {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"\r\n"
        });
        if upgrading {
            self.resp_phase = ResponsePhase::Tunnel;
            self.req_phase = RequestPhase::Tunnel;
            self.drop_replay_copy();
            return Ok(true);
        }
        self.resp_scanner = BodyScanner::new(resp.body);
        if self.resp_scanner.is_done() {
            self.response_complete(ctx);
        } else {
            self.resp_phase = ResponsePhase::Body;
        }
        Ok(true)
    }

    /// The whole response has been read from the backend.
    fn response_complete(&mut self, ctx: &mut Ctx) {
        self.resp_phase = ResponsePhase::Complete;
        // Bytes past the end of the response were never asked for.
        let surplus = self.resp_in.len() > self.resp_released;
        self.resp_in.truncate(self.resp_released);
        let Some(ex) = &self.exchange else {
            return;
        };
        if self.req_phase == RequestPhase::Body {
            self.req_phase = RequestPhase::Abandoned;
            self.close_after = true;
        }
        let reusable =
            ex.backend_keep_alive && !ex.close_delimited && !surplus && self.request_fully_sent();
        if self.req_written > 0 {
            self.drop_replay_copy();
        }
        self.drop_backend(ctx, reusable);
    }

    // ---- the end of an exchange and of the session ------------------------------------------

    fn finish(&mut self, ctx: &mut Ctx) -> Step {
        if self.req_phase == RequestPhase::Tunnel {
            let backend_eof = self.backend.as_ref().is_none_or(|b| b.eof);
            let both_flushed =
                self.client_output_flushed() && self.req_written == self.req_released;
            if self.client_eof && backend_eof && both_flushed {
                return Err(Closed);
            }
            return Ok(false);
        }
        if self.exchange.is_none() || self.resp_phase != ResponsePhase::Complete {
            return Ok(false);
        }
        if !matches!(
            self.req_phase,
            RequestPhase::Complete | RequestPhase::Abandoned
        ) {
            return Ok(false);
        }
        if !self.client_output_flushed() {
            return Ok(false);
        }
        if self.req_phase == RequestPhase::Complete && self.req_released > 0 {
            // Request bytes still unwritten when the response ended: they are not ours to send.
            self.req_in.consume(self.req_released);
            self.req_released = 0;
            self.req_written = 0;
        }
        self.log_exchange(ctx, "");
        self.exchange = None;
        self.resp_phase = ResponsePhase::Idle;
        self.served_any = true;
        self.head_started = ctx.now;
        if self.close_after
            && self.req_phase == RequestPhase::Complete
            && self.req_in.is_empty()
            && !self.client_ready.readable
        {
            // The client sent its whole request and nothing since, so closing cannot turn
            // into a reset that destroys the response before it is read: close now, as nginx
            // does, rather than read on for the client's FIN.
            return Err(Closed);
        }
        if self.close_after || (self.client_eof && self.req_in.is_empty()) {
            self.begin_closing(ctx);
            if self.client_eof {
                return Err(Closed);
            }
            return Ok(true);
        }
        self.req_phase = RequestPhase::Head;
        self.to_backend.clear();
        self.to_backend_pos = 0;
        Ok(true)
    }

    /// Our side is done: flush, then half-close and read until the client closes too.
    fn begin_closing(&mut self, ctx: &mut Ctx) {
        self.req_phase = RequestPhase::Closing;
        self.close_after = true;
        self.linger_until = Some(ctx.now + LINGER);
        self.req_in.clear();
        self.req_released = 0;
        self.req_written = 0;
        if self.client_output_flushed() {
            self.shut_client_write_when_flushed();
        }
    }

    /// Accounts for a finished (or aborted) exchange: counters, latency statistics, the
    /// dashboard's event and the access log line.
    fn log_exchange(&self, ctx: &Ctx, note: &str) {
        let Some(ex) = &self.exchange else {
            return;
        };
        let backend = ex.backend.and_then(|i| ctx.backends.get(i));
        let elapsed = ctx.now.duration_since(ex.started);
        if ex.status != 0 {
            ctx.totals.requests.fetch_add(1, Ordering::Relaxed);
            if ex.error_cause.is_some() {
                ctx.totals.answered_by_proxy.fetch_add(1, Ordering::Relaxed);
            }
            let second = ctx.totals.second(ctx.now);
            match &backend {
                Some(b) => b.record(ex.status, elapsed, second),
                None => {
                    if let Ok(mut t) = ctx.totals.unattributed.lock() {
                        t.record(ex.status, elapsed, second);
                    }
                }
            }
        }
        let backend = backend.as_ref().map(|b| b.name.as_str());
        let millis = elapsed.as_secs_f64() * 1000.0;
        let line = ex.request.request_line.as_deref().unwrap_or("-");
        if ctx.events.wants_requests() {
            let mut parts = line.split(' ');
            ctx.events.publish(Event::Request(RequestEvent {
                time: SystemTime::now(),
                client: self.peer.to_string(),
                method: parts.next().unwrap_or("-").to_string(),
                target: parts.next().unwrap_or("-").to_string(),
                status: ex.status,
                backend: backend.map(str::to_string),
                duration_ms: millis,
                bytes: ex.bytes_to_client,
            }));
        }
        if ctx.settings.access_log {
            info!(
                target: "access",
                "{} \"{line}\" {} {} {} {millis:.3}ms{}{note}",
                self.peer,
                ex.status,
                ex.bytes_to_client,
                backend.unwrap_or("-"),
                ex.error_cause.map_or(String::new(), |c| format!(" {c}")),
            );
        }
    }

    /// Accounts for a request refused before it was understood.
    fn record_refusal(&self, ctx: &Ctx, status: u16, cause: &str) {
        ctx.totals.requests.fetch_add(1, Ordering::Relaxed);
        ctx.totals.answered_by_proxy.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = ctx.totals.unattributed.lock() {
            t.record(status, Duration::ZERO, ctx.totals.second(ctx.now));
        }
        if ctx.events.wants_requests() {
            ctx.events.publish(Event::Request(RequestEvent {
                time: SystemTime::now(),
                client: self.peer.to_string(),
                method: "-".to_string(),
                target: "-".to_string(),
                status,
                backend: None,
                duration_ms: 0.0,
                bytes: 0,
            }));
        }
        if ctx.settings.access_log {
            info!(target: "access", "{} \"-\" {status} 0 - 0.000ms {cause}", self.peer);
        }
    }

    /// Releases everything the session holds.
    fn close(&mut self, ctx: &mut Ctx) {
        if self.exchange.is_some() {
            self.log_exchange(ctx, " aborted");
            self.exchange = None;
        }
        self.drop_backend(ctx, false);
        self.req_in.clear();
        self.resp_in.clear();
        self.req_in.release_if_empty(ctx.bufs);
        self.resp_in.release_if_empty(ctx.bufs);
    }

    // ---- timers ----------------------------------------------------------------------------

    /// The earliest moment something must happen if no byte moves before it.
    pub fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        self.next_timer(t).map(|(at, _)| at)
    }

    fn next_timer(&self, t: &Timeouts) -> Option<(Instant, Timer)> {
        // Request body bytes wait for a backend that takes none: the proxy has stopped reading
        // the client because of it, so the client's silence is the backend's doing.
        let backend_blocks = self.req_phase == RequestPhase::Body
            && self
                .backend
                .as_ref()
                .is_some_and(|b| b.connected && (!b.ready.writable || b.write_shut))
            && (self.to_backend_pos < self.to_backend.len()
                || self.req_written < self.req_released);
        let mut best: Option<(Instant, Timer)> = None;
        let mut consider = |at: Instant, timer: Timer| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, timer));
            }
        };
        match self.req_phase {
            RequestPhase::Closing => {
                if let Some(at) = self.linger_until {
                    consider(at, Timer::Linger);
                }
                // The response may still be flushing: a client that does not read must not keep
                // the socket past the idle timeout.
            }
            RequestPhase::Tunnel => {
                let last = self
                    .backend
                    .as_ref()
                    .map_or(self.last_client_read, |b| b.last_activity)
                    .max(self.last_client_read)
                    .max(self.last_client_write);
                consider(last + t.tunnel, Timer::TunnelIdle);
            }
            RequestPhase::Head if self.exchange.is_none() => {
                if self.req_in.is_empty() && self.served_any {
                    consider(
                        self.last_client_write.max(self.head_started) + t.client_idle,
                        Timer::KeepAliveIdle,
                    );
                } else {
                    consider(self.head_started + t.client_header, Timer::ClientHeader);
                }
            }
            // While the backend holds the upload up, the client is not the one to time out.
            RequestPhase::Body if !backend_blocks => {
                consider(self.last_client_read + t.client_idle, Timer::ClientBody)
            }
            _ => {}
        }
        // Response bytes wait for a client that takes none: the proxy has stopped reading the
        // backend because of it, so the backend's silence is the client's doing. Only the
        // client's write timeout runs then.
        let client_blocks = !self.client_output_flushed() && !self.client_ready.writable;
        if let Some(b) = &self.backend {
            if !b.connected {
                consider(b.last_activity + t.connect, Timer::Connect);
            } else if backend_blocks && !client_blocks {
                consider(b.last_activity + t.backend_response, Timer::BackendResponse);
            } else if matches!(self.resp_phase, ResponsePhase::Head | ResponsePhase::Body)
                && self.req_phase != RequestPhase::Body
                && !client_blocks
            {
                // The backend's time to answer runs from the later of its last byte and the
                // client's: neither a slow upload nor a slow reader is the backend's fault.
                let since = b
                    .last_activity
                    .max(self.last_client_read)
                    .max(self.last_client_write);
                consider(since + t.backend_response, Timer::BackendResponse);
            }
        }
        if client_blocks {
            consider(self.last_client_write + t.client_idle, Timer::ClientWrite);
        }
        best
    }

    /// Acts on whatever timer has expired, if one has.
    pub fn on_timer(&mut self, ctx: &mut Ctx) -> Outcome {
        let Some((at, timer)) = self.next_timer(&ctx.settings.timeouts) else {
            return Outcome::Idle;
        };
        if at > ctx.now {
            return Outcome::Idle;
        }
        debug!("client {}: {timer:?} timeout", self.peer);
        let step = match timer {
            Timer::Linger | Timer::KeepAliveIdle | Timer::TunnelIdle | Timer::ClientWrite => {
                Err(Closed)
            }
            Timer::ClientHeader => {
                if self.req_in.is_empty() {
                    Err(Closed)
                } else {
                    self.refuse_request(ctx, Answer::RequestTimeout, "client-header-timeout")
                }
            }
            Timer::ClientBody => {
                if self.exchange.as_ref().is_some_and(|ex| ex.answer_sent) {
                    Err(Closed)
                } else {
                    self.drop_backend(ctx, false);
                    self.refuse_request(ctx, Answer::RequestTimeout, "client-body-timeout")
                }
            }
            Timer::Connect => self.backend_failed(ctx, BackendFailure::ConnectTimeout),
            Timer::BackendResponse => self.backend_failed(ctx, BackendFailure::Timeout),
        };
        match step {
            Ok(_) => self.drive(ctx),
            Err(Closed) => {
                self.close(ctx);
                Outcome::Close
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    ClientHeader,
    KeepAliveIdle,
    ClientBody,
    ClientWrite,
    Connect,
    BackendResponse,
    TunnelIdle,
    Linger,
}
