//! The backend side of a session: getting a connection (pooled or new) for the current
//! exchange, writing the request to it, reading the response from it, and letting it go.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{debug, warn};
use mio::net::TcpStream;

use super::{
    interrupted, would_block, BackendConn, BackendFailure, Ctx, RequestPhase, ResponsePhase,
    Session, Step,
};
use crate::config::BackendProtocol;
use crate::transport::{Readiness, Transport};
use crate::upstream::{Affinity, BackendId, BackendState};

/// What a failed stream on a multiplexed backend connection means for the exchange: the
/// connection never came up, the backend did not take the stream (REFUSED_STREAM, or past its
/// GOAWAY: safe to send elsewhere), or it broke off.
fn mux_failure(e: &io::Error) -> BackendFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => BackendFailure::Connect,
        io::ErrorKind::ConnectionAborted => BackendFailure::Refused,
        _ => BackendFailure::Broken,
    }
}

impl Session {
    /// Gets a connection for the current exchange, on a backend this request has not failed
    /// on, within the retry budget: an idle pooled one, or a new connect. Returns false when
    /// none is left to try.
    pub(super) fn connect_backend(&mut self, ctx: &mut Ctx) -> bool {
        loop {
            let Some(ex) = &mut self.exchange else {
                return false;
            };
            let Some(pool) = ex.pool else {
                return false;
            };
            let retries = ex
                .policy
                .as_ref()
                .map_or(ctx.settings.retries, |p| p.retries);
            if ex.tries > retries {
                return false;
            }
            let affinity = Affinity {
                key: ex.request.routed.key,
                sticky: ex.request.routed.sticky,
            };
            // Never the backend that just failed, unless it is the only one.
            let pick = ctx
                .backends
                .choose(pool, affinity, &ex.tried, ctx.now)
                .or_else(|| {
                    if ctx.backends.live_count_in(pool) == 1 {
                        ctx.backends.choose(pool, affinity, &[], ctx.now)
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
            if let Some((stream, id)) = ctx.pool.take(index, self.slot, ctx.registry, ctx.now) {
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
    pub(super) fn open_connection(&mut self, ctx: &mut Ctx, index: BackendId) -> io::Result<()> {
        let backend = ctx
            .backends
            .get(index)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let policy = self.exchange.as_ref().and_then(|ex| ex.policy.clone());
        if let Some(p) = policy.filter(|p| p.protocol == BackendProtocol::H2) {
            let (id, pipe, reused) = ctx.pool.open_stream(
                index,
                self.slot,
                ctx.registry,
                ctx.now,
                p.connect_timeout,
                || {
                    let stream = TcpStream::connect(backend.address)?;
                    match &backend.tls {
                        None => Ok(Transport::Plain(stream)),
                        Some(Ok(connector)) => connector
                            .connect_h2(stream)
                            .map(|t| Transport::Tls(Box::new(t)))
                            .map_err(io::Error::other),
                        Some(Err(e)) => Err(io::Error::other(e.clone())),
                    }
                },
            )?;
            if !reused {
                backend.connections.fetch_add(1, Ordering::Relaxed);
            }
            // Not connected until the stream's connection is up: until then no byte leaves the
            // exchange, so a failed connection loses none and the request may go elsewhere.
            self.attach(ctx, Transport::Mux(pipe), id, index, reused);
            if let Some(b) = &mut self.backend {
                b.connected = false;
                b.ready.writable = true;
            }
            return Ok(());
        }
        let mut stream = TcpStream::connect(backend.address)?;
        let id = ctx.pool.open(&mut stream, index, self.slot, ctx.registry)?;
        let transport = match &backend.tls {
            None => Ok(Transport::Plain(stream)),
            Some(Ok(connector)) => connector
                .connect(stream)
                .map(|t| Transport::Tls(Box::new(t)))
                .map_err(io::Error::other),
            Some(Err(e)) => Err(io::Error::other(e.clone())),
        };
        let transport = match transport {
            Ok(t) => t,
            Err(e) => {
                ctx.pool.release(id);
                return Err(e);
            }
        };
        backend.connections.fetch_add(1, Ordering::Relaxed);
        self.attach(ctx, transport, id, index, false);
        Ok(())
    }

    /// Makes `stream` the current exchange's backend connection.
    pub(super) fn attach(
        &mut self,
        ctx: &mut Ctx,
        stream: Transport,
        id: usize,
        index: BackendId,
        reused: bool,
    ) {
        if let Some(backend) = ctx.backends.get(index) {
            backend.requests.fetch_add(1, Ordering::Relaxed);
            backend.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ex) = &mut self.exchange {
            ex.connect_time = reused.then_some(Duration::ZERO);
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
    pub(super) fn detach(&mut self, ctx: &mut Ctx) -> Option<BackendConn> {
        let b = self.backend.take()?;
        if let Some(backend) = ctx.backends.get(b.index) {
            backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        Some(b)
    }

    /// Finishes a non-blocking connect once the socket reports readiness.
    pub(super) fn check_connected(&mut self, ctx: &mut Ctx) -> Step {
        let Some(b) = &mut self.backend else {
            return Ok(false);
        };
        if b.connected {
            return Ok(true);
        }
        if let Transport::Mux(pipe) = &b.stream {
            let state = pipe.lock().connect_state();
            return match state {
                Ok(true) => {
                    b.connected = true;
                    b.ready.writable = true;
                    if let Some(ex) = &mut self.exchange {
                        ex.connect_time = Some(ctx.now.saturating_duration_since(b.last_activity));
                    }
                    Ok(true)
                }
                Ok(false) => Ok(false),
                Err(e) => {
                    let failure = mux_failure(&e);
                    self.backend_failed(ctx, failure)
                }
            };
        }
        if !b.ready.writable && !b.ready.readable {
            return Ok(false);
        }
        match b.stream.socket().and_then(|s| s.take_error()) {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                debug!("connect to backend {} failed: {e}", b.index);
                return self.backend_failed(ctx, BackendFailure::Connect);
            }
        }
        match b.stream.socket().and_then(|s| s.peer_addr()) {
            Ok(_) => {
                b.connected = true;
                let _ = b.stream.socket().and_then(|s| s.set_nodelay(true));
                if let Some(ex) = &mut self.exchange {
                    ex.connect_time = Some(ctx.now.saturating_duration_since(b.last_activity));
                }
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

    pub(super) fn write_backend(&mut self, ctx: &mut Ctx) -> Step {
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
            let handshaking = b.stream.is_handshaking();
            if handshaking || (head.is_empty() && body.is_empty() && b.stream.has_pending_output())
            {
                // TLS: the handshake goes first, and no request byte goes to rustls before it
                // is done, so that a failed one loses none of them and the request can go to
                // another backend whatever its method.
                match b.stream.flush() {
                    Ok(()) if handshaking => return Ok(progress),
                    Ok(()) => continue,
                    Err(e) if would_block(&e) => {
                        b.ready.writable = false;
                        return Ok(progress);
                    }
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => {
                        debug!("backend write error: {e}");
                        let failure = if handshaking {
                            BackendFailure::Connect
                        } else {
                            BackendFailure::Broken
                        };
                        return self.backend_failed(ctx, failure);
                    }
                }
            }
            if head.is_empty() && body.is_empty() {
                break;
            }
            let result = b.stream.write_parts(head, body);
            match result {
                Ok(n) => {
                    progress = true;
                    b.last_activity = ctx.now;
                    let mux = b.stream.is_mux();
                    if mux {
                        ctx.pool.poke(b.id);
                    }
                    if n < head.len() + body.len() {
                        // The send buffer is full: an edge will say when it has room again.
                        b.ready.writable = false;
                    }
                    let from_head = n.min(head.len());
                    self.to_backend_pos += from_head;
                    self.req_written += n - from_head;
                    // Once a byte is out, only an idempotent request may be sent again: for any
                    // other the copy is dead weight (a slow upload would hold a buffer for it).
                    // An HTTP/2 backend may still refuse the stream unprocessed (REFUSED_STREAM,
                    // GOAWAY), after which any request may go elsewhere: there the copy stays
                    // until the answer starts or the buffer is needed.
                    let idempotent = self
                        .exchange
                        .as_ref()
                        .is_some_and(|ex| ex.request.method.is_idempotent());
                    if !self.replayable || !(idempotent || mux) {
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

    pub(super) fn request_fully_sent(&self) -> bool {
        matches!(self.req_phase, RequestPhase::Complete)
            && self.to_backend_pos == self.to_backend.len()
            && self.req_written == self.req_released
            && !self
                .backend
                .as_ref()
                .is_some_and(|b| b.stream.has_pending_output())
    }

    pub(super) fn shut_backend_write_when_flushed(&mut self, _ctx: &mut Ctx) {
        let flushed =
            self.to_backend_pos == self.to_backend.len() && self.req_written == self.req_released;
        if let Some(b) = &mut self.backend {
            if flushed && !b.write_shut && b.connected {
                b.write_shut = true;
                b.stream.shutdown_write();
            }
        }
    }

    /// Forgets the copy of request bytes already written: once one is gone, the request can
    /// no longer be sent again.
    pub(super) fn drop_replay_copy(&mut self) {
        if self.req_written > 0 {
            self.replayable = false;
        }
        self.req_in.consume(self.req_written);
        self.req_released -= self.req_written;
        self.req_written = 0;
    }

    pub(super) fn read_backend(&mut self, ctx: &mut Ctx) -> Step {
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
        let handshaking = b.stream.is_handshaking();
        let result = self.resp_in.read_from(&mut b.stream, ctx.bufs);
        if handshaking {
            return match result {
                Err(e) if would_block(&e) => {
                    b.ready.readable = false;
                    if b.stream.is_handshaking() {
                        return Ok(false);
                    }
                    // Done: the request may go now, though no new edge will say so.
                    b.ready.writable = true;
                    Ok(true)
                }
                Err(e) if interrupted(&e) => Ok(true),
                Ok((n, _)) if n > 0 => Ok(true),
                Ok(_) => {
                    warn!("backend {}: closed during the TLS handshake", b.index);
                    self.backend_failed(ctx, BackendFailure::Connect)
                }
                Err(e) => {
                    warn!("backend {}: TLS handshake failed: {e}", b.index);
                    self.backend_failed(ctx, BackendFailure::Connect)
                }
            };
        }
        match result {
            Ok((0, _)) => {
                b.eof = true;
                self.on_backend_eof(ctx)
            }
            Ok((_, short)) => {
                if short {
                    b.ready.drained();
                }
                b.last_activity = ctx.now;
                if b.stream.is_mux() {
                    // What it read gives the backend window back.
                    ctx.pool.poke(b.id);
                }
                if let Some(ex) = &mut self.exchange {
                    if !ex.response_started {
                        ex.response_started = true;
                        ex.first_byte_at = Some(ctx.now);
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
                let failure = if b.stream.is_mux() {
                    mux_failure(&e)
                } else {
                    BackendFailure::Broken
                };
                self.backend_failed(ctx, failure)
            }
        }
    }

    pub(super) fn on_backend_eof(&mut self, ctx: &mut Ctx) -> Step {
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

    /// Lets go of the backend connection, into the pool when it can carry another request.
    pub(super) fn drop_backend(&mut self, ctx: &mut Ctx, reusable: bool) {
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
}
