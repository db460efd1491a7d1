//! An HTTP/2 client connection: the frames both ways, the connection's settings, windows and
//! defences, and its streams, each carried by an HTTP/1 exchange of its own.
//!
//! A stream's exchange is an ordinary [`Session`] whose client side is a [`Pipe`]: the request
//! head goes into it translated to HTTP/1.1, and the response comes out of it as HTTP/1.1 to be
//! framed. So routing, balancing, retries, backend timeouts, error answers, sticky cookies and
//! the access log work per stream exactly as they do per HTTP/1 request.
//!
//! - `frames`: what each received frame does;
//! - `streams`: opening streams, feeding their exchanges, framing their responses, windows;
//! - here: the socket, the drive loop, timers, and how the connection ends.
//!
//! Memory is bounded per connection: input is read only while the output backlog is small (a
//! client that does not read its SETTINGS or PING acknowledgements stops being read), each
//! stream holds at most its window of request body, and each exchange's response waits in a
//! bounded pipe until the windows let it go.

mod frames;
mod streams;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;

use super::{interrupted, would_block, Ctx, Handover, Outcome, Settings, LINGER, MAX_ROUNDS};
use crate::config::Http2Config;
use crate::h2::frame::{self, Setting};
use crate::h2::hpack::{HeaderDecoder, HeaderEncoder};
use crate::h2::{ErrorCode, H2Error, PREFACE};
use crate::transport::{Readiness, Transport};
use streams::Stream;

/// Room for the largest frame we accept (SETTINGS_MAX_FRAME_SIZE, 16 KB, plus its header) and
/// then some, so a frame is never stuck half in the buffer.
const INPUT_CAPACITY: usize = 32 * 1024;
/// Frames waiting for the socket past which nothing more is produced: neither responses
/// framed nor input read (whose answers, ACKs, would add to it).
const OUT_HIGH: usize = 64 * 1024;
/// The largest frame we accept: the protocol's floor, as nginx and HAProxy use.
const MAX_FRAME: u32 = frame::MIN_MAX_FRAME_SIZE;
/// The connection's receive window, opened at once: what a stream may hold is bounded by its
/// own window, so the connection's only needs to keep every stream busy.
const CONN_WINDOW: i64 = 1 << 24;
/// How long the client has to acknowledge our SETTINGS (RFC 9113 §6.5.3).
const SETTINGS_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames that cost us work without moving a request along (SETTINGS, PING, PRIORITY, empty
/// DATA, unknown types): a burst this large is allowed, refilled at `CONTROL_REFILL` a second.
const CONTROL_BURST: u32 = 1000;
const CONTROL_REFILL: u32 = 100;
/// How many frames one header block may take: 16 KB frames reach any sane header list in a
/// few; more is the CONTINUATION flood of 2024.
const MAX_CONTINUATIONS: u32 = 32;
/// Stream ids remembered after they close, to tell a late frame from a protocol error.
const RECENT_STREAMS: usize = 64;

/// A header block still waiting for its CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
    frames: u32,
}

pub struct H2Session {
    pub id: u64,
    /// Queued by the reactor to be driven once the current batch of events is in (see
    /// [`Connection::defer`](super::Connection::defer)).
    pub deferred: bool,
    slot: usize,
    client: Transport,
    peer: SocketAddr,
    ready: Readiness,
    client_eof: bool,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    out: Vec<u8>,
    out_pos: usize,
    preface_done: bool,
    settings_seen: bool,
    settings_acked: bool,
    decoder: HeaderDecoder,
    encoder: HeaderEncoder,
    /// The client's SETTINGS_MAX_FRAME_SIZE and SETTINGS_INITIAL_WINDOW_SIZE.
    peer_max_frame: u32,
    peer_initial_window: i64,
    /// What we may still send on the connection, and what the client may.
    send_window: i64,
    recv_window: i64,
    /// Bytes received since we last opened the connection's window again.
    recv_unacked: i64,
    streams: Vec<Stream>,
    /// The highest stream id the client has opened.
    last_stream: u32,
    /// Streams the client ended (RST_STREAM or both sides closed), and streams we reset:
    /// frames on the first are errors, on the second expected for a while (RFC 9113 §5.4.2).
    closed_streams: VecDeque<u32>,
    reset_streams: VecDeque<u32>,
    pending_block: Option<PendingBlock>,
    /// The last stream id our GOAWAY promised to serve, once sent.
    goaway_last: Option<u32>,
    peer_goaway: bool,
    closing: bool,
    linger_until: Option<Instant>,
    write_shut: bool,
    started: Instant,
    last_read: Instant,
    last_write: Instant,
    /// When the last stream ended (the idle timeout runs from it).
    idle_since: Instant,
    control_tokens: u32,
    control_refilled: Instant,
    /// Streams the client may still reset before they are answered (CVE-2023-44487).
    reset_tokens: u32,
    /// Where the next round of response framing starts, so streams share the connection.
    cursor: usize,
    config: Http2Config,
    pub armed: Option<Instant>,
}

/// The connection is over; carried by `?`.
struct Closed;

type Step = Result<bool, Closed>;

impl H2Session {
    /// Takes over a connection whose client chose HTTP/2, and sends our preface.
    pub fn from_handover(h: Handover, ctx: &mut Ctx) -> H2Session {
        let config = ctx.settings.http2.clone();
        let mut input = vec![0; INPUT_CAPACITY.max(h.input.len())];
        input[..h.input.len()].copy_from_slice(&h.input);
        let mut out = Vec::with_capacity(256);
        frame::write_settings(
            &mut out,
            &[
                Setting {
                    id: frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: config.max_concurrent_streams,
                },
                Setting {
                    id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                    value: config.initial_window_size,
                },
                Setting {
                    id: frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    value: u32::try_from(config.max_header_list_size).unwrap_or(u32::MAX),
                },
            ],
        );
        frame::write_window_update(&mut out, 0, (CONN_WINDOW - 65_535) as u32);
        let now = ctx.now;
        H2Session {
            id: h.id,
            slot: h.slot,
            client: h.client,
            peer: h.peer,
            ready: h.ready,
            client_eof: false,
            in_start: 0,
            in_end: h.input.len(),
            input,
            out,
            out_pos: 0,
            preface_done: false,
            settings_seen: false,
            settings_acked: false,
            decoder: HeaderDecoder::default(),
            encoder: HeaderEncoder::default(),
            peer_max_frame: frame::MIN_MAX_FRAME_SIZE,
            peer_initial_window: 65_535,
            send_window: 65_535,
            recv_window: CONN_WINDOW,
            recv_unacked: 0,
            streams: Vec::new(),
            last_stream: 0,
            closed_streams: VecDeque::new(),
            reset_streams: VecDeque::new(),
            pending_block: None,
            goaway_last: None,
            peer_goaway: false,
            closing: false,
            linger_until: None,
            write_shut: false,
            started: h.started,
            last_read: now,
            last_write: now,
            idle_since: now,
            control_tokens: CONTROL_BURST,
            control_refilled: now,
            reset_tokens: config.max_concurrent_streams.saturating_mul(2),
            cursor: 0,
            config,
            armed: None,
            deferred: false,
        }
    }

    pub fn client_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.ready.record(readable, writable, read_closed);
    }

    /// An event on backend connection `id`: it belongs to one stream's exchange.
    pub fn backend_event(&mut self, id: usize, readable: bool, writable: bool, closed: bool) {
        if let Some(s) = self
            .streams
            .iter_mut()
            .find(|s| s.exchange.backend_id() == Some(id))
        {
            s.exchange.backend_event(readable, writable, closed);
            s.dirty = true;
        }
    }

    /// The balancer is stopping: GOAWAY says which streams will still be served (all those
    /// opened so far), and the connection closes when they are.
    pub fn begin_drain(&mut self, ctx: &mut Ctx) -> Outcome {
        self.send_goaway(ErrorCode::NoError, b"");
        self.drive(ctx)
    }

    pub fn drive(&mut self, ctx: &mut Ctx) -> Outcome {
        for _ in 0..MAX_ROUNDS {
            match self.round(ctx) {
                Err(Closed) => {
                    self.close(ctx);
                    return Outcome::Close;
                }
                Ok(true) => continue,
                Ok(false) => return Outcome::Idle,
            }
        }
        Outcome::Yield
    }

    fn round(&mut self, ctx: &mut Ctx) -> Step {
        let mut progress = false;
        progress |= self.read_client(ctx)?;
        progress |= self.process_input(ctx);
        progress |= self.drive_streams(ctx);
        progress |= self.frame_responses(ctx);
        progress |= self.reap_streams(ctx);
        self.open_windows();
        progress |= self.write_client(ctx)?;
        progress |= self.check_end(ctx)?;
        Ok(progress)
    }

    fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn read_client(&mut self, ctx: &mut Ctx) -> Step {
        if !self.ready.readable || self.client_eof {
            return Ok(false);
        }
        if self.closing {
            return self.discard_input();
        }
        if self.backlog() >= OUT_HIGH {
            return Ok(false);
        }
        if self.in_start > 0 && self.in_end == self.input.len() {
            self.input.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        if self.in_end == self.input.len() {
            return Ok(false);
        }
        match crate::buffer::Source::read_some(&mut self.client, &mut self.input[self.in_end..]) {
            Ok((0, _)) => {
                self.client_eof = true;
                Ok(true)
            }
            Ok((n, short)) => {
                self.in_end += n;
                if short {
                    self.ready.drained();
                }
                self.last_read = ctx.now;
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                self.ready.readable = false;
                Ok(false)
            }
            Err(e) if interrupted(&e) => Ok(true),
            Err(e) => {
                debug!("h2 client {}: read error: {e}", self.peer);
                Err(Closed)
            }
        }
    }

    fn discard_input(&mut self) -> Step {
        let mut scratch = [0u8; 4096];
        loop {
            match crate::buffer::Source::read_some(&mut self.client, &mut scratch) {
                Ok((0, _)) => return Err(Closed),
                Ok(_) => continue,
                Err(e) if would_block(&e) => {
                    self.ready.readable = false;
                    return Ok(false);
                }
                Err(e) if interrupted(&e) => continue,
                Err(_) => return Err(Closed),
            }
        }
    }

    fn write_client(&mut self, ctx: &mut Ctx) -> Step {
        let mut progress = false;
        while self.ready.writable {
            if self.out_pos == self.out.len() {
                if !self.client.has_pending_output() {
                    break;
                }
                match self.client.flush() {
                    Ok(()) => {
                        progress = true;
                        self.last_write = ctx.now;
                    }
                    Err(e) if would_block(&e) => self.ready.writable = false,
                    Err(e) if interrupted(&e) => {}
                    Err(_) => return Err(Closed),
                }
                continue;
            }
            match self.client.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(Closed),
                Ok(n) => {
                    progress = true;
                    self.last_write = ctx.now;
                    if n < self.out.len() - self.out_pos {
                        self.ready.writable = false;
                    }
                    self.out_pos += n;
                    if self.out_pos == self.out.len() {
                        self.out.clear();
                        self.out_pos = 0;
                    }
                }
                Err(e) if would_block(&e) => self.ready.writable = false,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    debug!("h2 client {}: write error: {e}", self.peer);
                    return Err(Closed);
                }
            }
        }
        if self.closing && !self.write_shut && self.flushed() {
            self.write_shut = true;
            self.client.shutdown_write();
        }
        if self.out.capacity() > 4 * OUT_HIGH && self.out.is_empty() {
            self.out.shrink_to(OUT_HIGH);
        }
        Ok(progress)
    }

    fn flushed(&self) -> bool {
        self.out_pos == self.out.len() && !self.client.has_pending_output()
    }

    /// Whether the connection has ended, or should begin to.
    fn check_end(&mut self, ctx: &mut Ctx) -> Step {
        if self.client_eof && !self.closing {
            // An HTTP/2 client does not half-close: it has gone, with whatever it asked.
            return Err(Closed);
        }
        if self.closing {
            return if self.client_eof && self.flushed() {
                Err(Closed)
            } else {
                Ok(false)
            };
        }
        let stopping = self.goaway_last.is_some() || self.peer_goaway;
        if stopping && self.streams.is_empty() && self.pending_block.is_none() {
            self.send_goaway(ErrorCode::NoError, b"");
            self.begin_closing(ctx);
            return Ok(true);
        }
        Ok(false)
    }

    /// GOAWAY naming the last stream we will serve; only the first one counts.
    fn send_goaway(&mut self, code: ErrorCode, debug_data: &[u8]) {
        if self.goaway_last.is_some() && code == ErrorCode::NoError {
            return;
        }
        self.goaway_last = Some(self.last_stream);
        frame::write_goaway(&mut self.out, self.last_stream, code, debug_data);
    }

    /// A connection error: GOAWAY with its code, then the close.
    fn fail(&mut self, ctx: &mut Ctx, code: ErrorCode, reason: &'static str) {
        if self.closing {
            return;
        }
        debug!(
            "h2 client {}: connection error {code:?}: {reason}",
            self.peer
        );
        self.goaway_last = None;
        self.send_goaway(code, reason.as_bytes());
        self.begin_closing(ctx);
    }

    /// Our last frames are queued: flush them, half-close, and read until the client closes
    /// (or the linger ends), so that our GOAWAY is not lost to a reset.
    fn begin_closing(&mut self, ctx: &mut Ctx) {
        self.closing = true;
        self.linger_until = Some(ctx.now + LINGER);
        self.pending_block = None;
        for mut s in std::mem::take(&mut self.streams) {
            s.abort(ctx);
        }
    }

    fn on_error(&mut self, ctx: &mut Ctx, error: H2Error) {
        match error {
            H2Error::Connection { code, reason } => self.fail(ctx, code, reason),
            H2Error::Stream {
                stream,
                code,
                reason,
            } => {
                debug!(
                    "h2 client {}: stream {stream} error {code:?}: {reason}",
                    self.peer
                );
                self.reset_stream(ctx, stream, code);
            }
        }
    }

    fn close(&mut self, ctx: &mut Ctx) {
        for mut s in std::mem::take(&mut self.streams) {
            s.abort(ctx);
        }
        self.client.close();
    }

    /// Ends the connection at once, each stream's exchange accounted as cut by `why`.
    pub fn abort(&mut self, ctx: &mut Ctx, why: &'static str) {
        for s in &mut self.streams {
            s.mark_termination(why);
        }
        self.close(ctx);
    }

    /// The earliest moment something must happen if no byte moves before it.
    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        let t = &settings.timeouts;
        let mut best: Option<Instant> = None;
        let mut consider = |at: Instant| {
            if best.is_none_or(|b| at < b) {
                best = Some(at);
            }
        };
        if let Some(at) = self.linger_until {
            consider(at);
        }
        if self.closing {
            return best;
        }
        if !self.settings_seen {
            consider(self.started + t.client_header);
        } else if self.streams.is_empty() {
            consider(self.last_read.max(self.idle_since) + t.client_idle);
        }
        if !self.settings_acked {
            consider(self.started + SETTINGS_ACK_TIMEOUT);
        }
        if !self.flushed() && !self.ready.writable {
            consider(self.last_write + t.client_idle);
        }
        for s in &self.streams {
            if let Some(at) = s.deadline(settings) {
                consider(at);
            }
        }
        best
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx) -> Outcome {
        let now = ctx.now;
        let t = ctx.settings.timeouts.clone();
        if self.linger_until.is_some_and(|at| now >= at) {
            self.close(ctx);
            return Outcome::Close;
        }
        if !self.closing {
            if !self.settings_seen && now >= self.started + t.client_header {
                debug!("h2 client {}: no preface in time", self.peer);
                self.close(ctx);
                return Outcome::Close;
            }
            if !self.flushed() && !self.ready.writable && now >= self.last_write + t.client_idle {
                debug!("h2 client {}: not reading; closing", self.peer);
                self.close(ctx);
                return Outcome::Close;
            }
            if !self.settings_acked && now >= self.started + SETTINGS_ACK_TIMEOUT {
                self.fail(ctx, ErrorCode::SettingsTimeout, "SETTINGS not acknowledged");
            } else if self.streams.is_empty()
                && now >= self.last_read.max(self.idle_since) + t.client_idle
            {
                self.send_goaway(ErrorCode::NoError, b"idle");
                self.begin_closing(ctx);
            }
            self.streams_on_timer(ctx);
        }
        self.drive(ctx)
    }

    /// Spends one token of the control-frame budget; none left is a flood.
    fn charge_control(&mut self, now: Instant) -> Result<(), H2Error> {
        let elapsed = now.duration_since(self.control_refilled);
        let refill = (elapsed.as_millis() as u64 * u64::from(CONTROL_REFILL) / 1000) as u32;
        if refill > 0 {
            self.control_tokens = (self.control_tokens.saturating_add(refill)).min(CONTROL_BURST);
            self.control_refilled = now;
        }
        match self.control_tokens.checked_sub(1) {
            Some(left) => {
                self.control_tokens = left;
                Ok(())
            }
            None => Err(H2Error::connection(
                ErrorCode::EnhanceYourCalm,
                "control frame flood",
            )),
        }
    }

    fn process_input(&mut self, ctx: &mut Ctx) -> bool {
        if self.closing || self.in_start == self.in_end {
            return false;
        }
        let input = std::mem::take(&mut self.input);
        let progress = self.process_frames(&input, ctx);
        self.input = input;
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        }
        progress
    }

    fn process_frames(&mut self, input: &[u8], ctx: &mut Ctx) -> bool {
        let mut progress = false;
        if !self.preface_done {
            let data = &input[self.in_start..self.in_end];
            if data.len() < PREFACE.len() {
                if !PREFACE.starts_with(data) {
                    self.fail(ctx, ErrorCode::ProtocolError, "bad connection preface");
                }
                return false;
            }
            if !data.starts_with(PREFACE) {
                self.fail(ctx, ErrorCode::ProtocolError, "bad connection preface");
                return false;
            }
            self.in_start += PREFACE.len();
            self.preface_done = true;
            progress = true;
        }
        while !self.closing && self.backlog() < OUT_HIGH {
            let data = &input[self.in_start..self.in_end];
            match frame::next_frame(data, MAX_FRAME) {
                Ok(None) => break,
                Ok(Some((f, used))) => {
                    self.in_start += used;
                    progress = true;
                    if let Err(e) = self.on_frame(f, ctx) {
                        self.on_error(ctx, e);
                    }
                }
                Err(e) => {
                    // A stream-scoped malformation still leaves the frame's extent known.
                    if let (H2Error::Stream { .. }, Some(head)) =
                        (e, data.first_chunk::<{ frame::HEADER_LEN }>())
                    {
                        let len = frame::FrameHeader::parse(head).length as usize;
                        self.in_start += frame::HEADER_LEN + len;
                    }
                    progress = true;
                    self.on_error(ctx, e);
                }
            }
        }
        progress
    }
}
