//! A connection's streams: each one's HTTP/1 exchange (fed the translated request, its body
//! and trailers), the framing of its response within the windows, and its end.

use std::time::{Duration, Instant};

use log::debug;

use super::frames::remember;
use super::{Ctx, H2Error, H2Session, Outcome, Settings};
use crate::h2::frame;
use crate::h2::framer::Framer;
use crate::h2::hpack::HeaderList;
use crate::h2::request::{self, RequestBody};
use crate::h2::ErrorCode;
use crate::http::Answer;
use crate::session::Session;
use crate::transport::pipe::Pipe;

/// Response bytes an exchange may leave waiting for the windows.
const PIPE_OUTPUT: usize = 32 * 1024;
/// How long the rest of a request body is read and thrown away after its response is out.
/// Resetting the stream at once would be allowed (RFC 9113 §8.1), but some clients (curl
/// before 8.x) then drop the response they were given; nginx lingers the same way.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) struct Stream {
    pub id: u32,
    pub exchange: Box<Session>,
    /// The exchange has not closed yet.
    open: bool,
    /// Its exchange may make progress: drive it.
    pub dirty: bool,
    pub send_window: i64,
    /// What the client may still send on it.
    recv_window: i64,
    /// The window the client started with, which the exchange's reading gives back.
    full_window: i64,
    /// DATA put into the pipe and not yet given back to the window (padding counts as given
    /// back at once).
    delivered: i64,
    padding: i64,
    body: RequestBody,
    body_left: u64,
    /// END_STREAM received.
    remote_closed: bool,
    pub response: Framer,
    /// The response is out and the exchange over, but the client is still sending: since
    /// when, and when it last sent.
    discarding: Option<(Instant, Instant)>,
}

fn stream_error(id: u32, code: ErrorCode, reason: &'static str) -> H2Error {
    H2Error::stream(id, code, reason)
}

impl Stream {
    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        if let Some((since, last)) = self.discarding {
            return Some((since + DISCARD_FOR).min(last + settings.timeouts.client_idle));
        }
        if self.open {
            self.exchange.deadline(settings)
        } else {
            None
        }
    }

    /// Says why the exchange under way is ending, before [`Stream::abort`].
    pub fn mark_termination(&mut self, why: &'static str) {
        if self.open {
            self.exchange.mark_termination(why);
        }
    }

    /// Ends the exchange now (accounted as aborted if it was under way).
    pub fn abort(&mut self, ctx: &mut Ctx) {
        if self.open {
            self.open = false;
            self.exchange.close(ctx);
        }
    }

    pub fn receive_data(
        &mut self,
        now: Instant,
        data: &[u8],
        end_stream: bool,
        flow: i64,
    ) -> Result<(), H2Error> {
        let id = self.id;
        if self.remote_closed {
            return Err(stream_error(
                id,
                ErrorCode::StreamClosed,
                "DATA after END_STREAM",
            ));
        }
        if flow > self.recv_window {
            return Err(stream_error(
                id,
                ErrorCode::FlowControlError,
                "DATA beyond the stream window",
            ));
        }
        self.recv_window -= flow;
        if let Some((_, last)) = &mut self.discarding {
            *last = now;
            self.padding += flow;
            self.remote_closed = end_stream;
            return Ok(());
        }
        self.padding += flow - data.len() as i64;
        self.delivered += data.len() as i64;
        let body = self.body;
        let left = self.body_left;
        let Some(pipe) = self.exchange.pipe_mut() else {
            return Ok(());
        };
        let input = pipe.input_mut();
        match body {
            RequestBody::None => {}
            RequestBody::Length(_) => {
                if data.len() as u64 > left {
                    return Err(stream_error(
                        id,
                        ErrorCode::ProtocolError,
                        "DATA beyond content-length",
                    ));
                }
                input.extend_from_slice(data);
                self.body_left -= data.len() as u64;
            }
            RequestBody::Chunked if data.is_empty() => {}
            RequestBody::Chunked => {
                request::chunk_header(data.len(), input);
                input.extend_from_slice(data);
                input.extend_from_slice(b"\r\n");
            }
        }
        if end_stream {
            if matches!(body, RequestBody::Length(_)) && self.body_left != 0 {
                return Err(stream_error(
                    id,
                    ErrorCode::ProtocolError,
                    "END_STREAM before content-length",
                ));
            }
            if body == RequestBody::Chunked {
                input.extend_from_slice(b"0\r\n\r\n");
            }
            pipe.end_input();
            self.remote_closed = true;
        }
        self.dirty = true;
        Ok(())
    }

    pub fn receive_trailers(&mut self, list: &HeaderList, end_stream: bool) -> Result<(), H2Error> {
        let id = self.id;
        if self.remote_closed {
            return Err(stream_error(
                id,
                ErrorCode::StreamClosed,
                "HEADERS after END_STREAM",
            ));
        }
        if !end_stream {
            return Err(stream_error(
                id,
                ErrorCode::ProtocolError,
                "trailers without END_STREAM",
            ));
        }
        // Checked here even when they will be dropped: a malformed request is not forwarded.
        request::check_trailers(list)
            .map_err(|m| stream_error(id, ErrorCode::ProtocolError, m.0))?;
        if self.discarding.is_some() {
            self.remote_closed = true;
            return Ok(());
        }
        let body = self.body;
        let left = self.body_left;
        let Some(pipe) = self.exchange.pipe_mut() else {
            return Ok(());
        };
        match body {
            RequestBody::Chunked => request::write_trailers(list, pipe.input_mut())
                .map_err(|m| stream_error(id, ErrorCode::ProtocolError, m.0))?,
            // A length-framed body has no place for trailers: they are dropped, as HTTP/1.1
            // intermediaries do.
            RequestBody::Length(_) if left != 0 => {
                return Err(stream_error(
                    id,
                    ErrorCode::ProtocolError,
                    "END_STREAM before content-length",
                ));
            }
            _ => {}
        }
        pipe.end_input();
        self.remote_closed = true;
        self.dirty = true;
        Ok(())
    }
}

impl H2Session {
    pub(super) fn open_stream(
        &mut self,
        ctx: &mut Ctx,
        id: u32,
        list: HeaderList,
        end_stream: bool,
    ) -> Result<(), H2Error> {
        if self.streams.len() >= self.config.max_concurrent_streams as usize {
            // Refused streams are safe to retry; a client that keeps opening past the limit
            // spends the same budget as one that resets.
            self.spend_reset()?;
            return Err(stream_error(
                id,
                ErrorCode::RefusedStream,
                "over max_concurrent_streams",
            ));
        }
        if list.too_large {
            self.answer(
                ctx,
                id,
                Answer::HeaderFieldsTooLarge,
                "header-list-too-large",
                end_stream,
            );
            return Ok(());
        }
        let mut head = Vec::with_capacity(256 + list.size);
        let translated = match request::translate(&list, end_stream, &mut head) {
            Ok(t) => t,
            Err(m) => {
                self.log_refusal(ctx, "malformed-h2-request", m.0);
                return Err(stream_error(id, ErrorCode::ProtocolError, m.0));
            }
        };
        let mut pipe = Pipe::new(PIPE_OUTPUT, self.client.tls_description());
        pipe.input_mut().extend_from_slice(&head);
        if end_stream {
            pipe.end_input();
        }
        let exchange = Session::for_stream(self.id, self.slot, id, pipe, self.peer, ctx.now);
        // Our SETTINGS may not be acknowledged yet: until then the client may use the
        // protocol's default window, so that much is allowed whatever we announced.
        let window = i64::from(self.config.initial_window_size.max(65_535));
        self.streams.push(Stream {
            id,
            exchange: Box::new(exchange),
            open: true,
            dirty: true,
            send_window: self.peer_initial_window,
            recv_window: window,
            full_window: window,
            delivered: 0,
            padding: 0,
            body: translated.body,
            body_left: match translated.body {
                RequestBody::Length(n) => n,
                _ => 0,
            },
            remote_closed: end_stream,
            response: Framer::new(translated.is_head),
            discarding: None,
        });
        Ok(())
    }

    /// RST_STREAM from us; the stream's exchange ends.
    pub(super) fn reset_stream(&mut self, ctx: &mut Ctx, id: u32, code: ErrorCode) {
        frame::write_rst_stream(&mut self.out, id, code);
        remember(&mut self.reset_streams, id);
        if let Some(i) = self.streams.iter().position(|s| s.id == id) {
            let mut s = self.streams.swap_remove(i);
            s.abort(ctx);
        }
        if self.streams.is_empty() {
            self.idle_since = ctx.now;
        }
    }

    /// An answer of the balancer's own on a stream that gets no exchange.
    fn answer(&mut self, ctx: &mut Ctx, id: u32, answer: Answer, cause: &'static str, ended: bool) {
        let mut h1 = Vec::new();
        answer.write(&mut h1, cause, None, false);
        let mut writer = Framer::new(false);
        let window = self.peer_initial_window.min(self.send_window).max(0) as usize;
        if let Ok(p) = writer.pull(
            &h1,
            true,
            window,
            id,
            self.peer_max_frame,
            &mut self.encoder,
            &mut self.out,
        ) {
            self.send_window -= p.data as i64;
        }
        if !writer.is_done() {
            frame::write_rst_stream(&mut self.out, id, ErrorCode::InternalError);
        } else if !ended {
            // The request body will not be read (RFC 9113 §8.1).
            frame::write_rst_stream(&mut self.out, id, ErrorCode::NoError);
        }
        remember(&mut self.reset_streams, id);
        self.log_refusal(ctx, cause, "");
        let tls = self.client.tls_description();
        ctx.access.write(
            ctx.now,
            &crate::session::accounting::refusal(
                self.peer,
                "HTTP/2",
                answer.status(),
                cause,
                tls,
                Duration::ZERO,
            ),
        );
    }

    fn log_refusal(&self, ctx: &Ctx, cause: &str, detail: &str) {
        use std::sync::atomic::Ordering;
        ctx.totals.requests.fetch_add(1, Ordering::Relaxed);
        ctx.totals.answered_by_proxy.fetch_add(1, Ordering::Relaxed);
        debug!("h2 client {}: {cause} {detail}", self.peer);
    }

    /// Drives every exchange that may make progress.
    pub(super) fn drive_streams(&mut self, ctx: &mut Ctx) -> bool {
        let mut progress = false;
        for s in &mut self.streams {
            if !s.dirty || !s.open {
                continue;
            }
            s.dirty = false;
            progress = true;
            let (readable, writable) = match s.exchange.pipe_mut() {
                Some(p) => (
                    p.input_pending() > 0 || p.input_ended(),
                    p.has_output_room(),
                ),
                None => (false, false),
            };
            s.exchange.client_event(readable, writable, false);
            match s.exchange.drive(ctx) {
                Outcome::Close => s.open = false,
                Outcome::Yield => s.dirty = true,
                Outcome::Idle => {}
            }
        }
        progress
    }

    pub(super) fn streams_on_timer(&mut self, ctx: &mut Ctx) {
        let mut done_discarding = Vec::new();
        for s in &mut self.streams {
            if s.deadline(ctx.settings).is_none_or(|at| at > ctx.now) {
                continue;
            }
            if s.discarding.is_some() {
                done_discarding.push(s.id);
                continue;
            }
            if s.exchange.on_timer(ctx) == Outcome::Close {
                s.open = false;
            }
            s.dirty = true;
        }
        for id in done_discarding {
            self.reset_stream(ctx, id, ErrorCode::NoError);
        }
    }

    /// Frames what the exchanges have answered, a stream at a time from a moving start, as
    /// far as the windows and the output backlog allow.
    pub(super) fn frame_responses(&mut self, ctx: &mut Ctx) -> bool {
        let n = self.streams.len();
        if n == 0 {
            return false;
        }
        let mut progress = false;
        let mut broken = Vec::new();
        let start = self.cursor % n;
        for k in 0..n {
            if self.out.len() - self.out_pos >= super::OUT_HIGH {
                break;
            }
            let s = &mut self.streams[(start + k) % n];
            if s.response.is_done() {
                continue;
            }
            let open = s.open;
            let Some(pipe) = s.exchange.pipe_mut() else {
                continue;
            };
            let ended = pipe.output_ended() || !open;
            if pipe.output().is_empty() && !ended {
                continue;
            }
            let window = s.send_window.min(self.send_window).max(0) as usize;
            match s.response.pull(
                pipe.output(),
                ended,
                window,
                s.id,
                self.peer_max_frame.min(super::MAX_FRAME * 4),
                &mut self.encoder,
                &mut self.out,
            ) {
                Ok(p) => {
                    pipe.consume_output(p.consumed);
                    s.send_window -= p.data as i64;
                    self.send_window -= p.data as i64;
                    if p.consumed > 0 {
                        s.dirty = true;
                    }
                    progress |= p.wrote || p.consumed > 0;
                }
                Err(e) => {
                    debug!("h2 client {}: stream {}: {}", self.peer, s.id, e.0);
                    broken.push(s.id);
                }
            }
        }
        self.cursor = self.cursor.wrapping_add(1);
        for id in broken {
            self.reset_stream(ctx, id, ErrorCode::InternalError);
            progress = true;
        }
        progress
    }

    /// Streams whose response is out end here; so do their exchanges.
    pub(super) fn reap_streams(&mut self, ctx: &mut Ctx) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.streams.len() {
            let s = &mut self.streams[i];
            if !s.response.is_done() || (s.open && !s.exchange.is_between_exchanges()) {
                i += 1;
                continue;
            }
            if !s.remote_closed {
                // The answer is complete before the request: the rest of the body is read
                // and dropped for a while, then the stream is reset (RFC 9113 §8.1).
                if s.discarding.is_none() {
                    s.discarding = Some((ctx.now, ctx.now));
                    s.abort(ctx);
                    progress = true;
                }
                i += 1;
                continue;
            }
            let mut s = self.streams.swap_remove(i);
            remember(&mut self.closed_streams, s.id);
            s.abort(ctx);
            self.reset_tokens =
                (self.reset_tokens + 1).min(self.config.max_concurrent_streams.saturating_mul(2));
            if self.streams.is_empty() {
                self.idle_since = ctx.now;
            }
            progress = true;
        }
        progress
    }

    /// WINDOW_UPDATE for what the exchanges have read, and for the connection.
    pub(super) fn open_windows(&mut self) {
        for s in &mut self.streams {
            if s.remote_closed {
                continue;
            }
            let full = s.full_window;
            let Some(pipe) = s.exchange.pipe_mut() else {
                continue;
            };
            let pending = pipe.input_pending() as i64;
            // Pending bytes include chunk framing, so this never credits bytes unread.
            let read = (s.delivered - pending).max(0);
            let credit = read + s.padding;
            let due =
                credit >= full / 2 || (pending == 0 && credit > 0 && s.recv_window < full / 2);
            if due && credit > 0 {
                frame::write_window_update(&mut self.out, s.id, credit as u32);
                s.recv_window += credit;
                s.delivered -= read;
                s.padding = 0;
            }
        }
        if self.recv_unacked >= super::CONN_WINDOW / 2 {
            frame::write_window_update(&mut self.out, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked;
            self.recv_unacked = 0;
        }
    }
}
