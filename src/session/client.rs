//! The client side of a session: reading requests in, writing responses out, the half-close
//! and the linger that let a closing connection end without a reset destroying its response.

use log::debug;

use super::{
    interrupted, would_block, Closed, Ctx, RequestPhase, ResponsePhase, Session, Step, LINGER,
};

impl Session {
    pub(super) fn read_client(&mut self, ctx: &mut Ctx) -> Step {
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
                self.mark_termination("client-reset");
                Err(Closed)
            }
        }
    }

    pub(super) fn on_client_eof(&mut self, ctx: &mut Ctx) -> Step {
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
    pub(super) fn last_request_before_eof(&self) -> bool {
        self.client_eof && self.req_in.len() <= self.req_released
    }

    pub(super) fn discard_client_input(&mut self, ctx: &mut Ctx) -> Step {
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

    pub(super) fn write_client(&mut self, ctx: &mut Ctx) -> Step {
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
                if !self.client.has_pending_output() {
                    break;
                }
                // TLS records (a handshake flight, a close_notify, the end of a response)
                // still waiting for room in the socket.
                match self.client.flush() {
                    Ok(()) => {
                        progress = true;
                        self.last_client_write = ctx.now;
                    }
                    Err(e) if would_block(&e) => self.client_ready.writable = false,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => {
                        debug!("client {}: write error: {e}", self.peer);
                        self.mark_termination("client-reset");
                        return Err(Closed);
                    }
                }
                continue;
            }
            // The response is all read and the connection ends with it: these are the last
            // bytes, and the FIN can travel with them.
            let last = self.close_after
                && self.resp_phase == ResponsePhase::Complete
                && self.resp_released == self.resp_in.len()
                && self.client.is_plain();
            let result = if last {
                self.client.write_last(head, body)
            } else {
                self.client.write_parts(head, body)
            };
            match result {
                Ok(0) => return Err(Closed),
                Ok(n) => {
                    progress = true;
                    self.last_client_write = ctx.now;
                    let all_taken = n == head.len() + body.len();
                    if !all_taken {
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
                    if last && all_taken {
                        // Pushes the held tail out with the FIN, before a close that might
                        // reset the connection could discard it.
                        self.shut_client_write_when_flushed();
                    }
                }
                Err(e) if would_block(&e) => self.client_ready.writable = false,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    debug!("client {}: write error: {e}", self.peer);
                    self.mark_termination("client-reset");
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

    pub(super) fn client_output_flushed(&self) -> bool {
        self.to_client_pos == self.to_client.len()
            && self.resp_released == 0
            && !self.client.has_pending_output()
    }

    pub(super) fn shut_client_write_when_flushed(&mut self) {
        if !self.client_write_shut && self.client_output_flushed() && !self.client.is_handshaking()
        {
            self.client_write_shut = true;
            self.client.shutdown_write();
        }
    }

    /// The listener's sockets hold a request's ACK to send it with the response
    /// (`tcp_smart_accept`); that saves a packet only when the whole request came at once. A
    /// client whose request (or HTTP/2 preface) arrives in parts may be waiting for that ACK
    /// to send the rest, so from then on this connection ACKs at once.
    pub(super) fn ack_promptly(&mut self) {
        if !self.acks_promptly {
            self.acks_promptly = true;
            self.client.ack_promptly();
        }
    }

    /// Our side is done: flush, then half-close and read until the client closes too.
    pub(super) fn begin_closing(&mut self, ctx: &mut Ctx) {
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

    /// Says why the exchange under way (if any) is ending, unless something already did.
    pub(super) fn mark_termination(&mut self, why: &'static str) {
        if let Some(ex) = &mut self.exchange {
            ex.termination.get_or_insert(why);
        }
    }

    /// Ends the connection now, the exchange under way accounted as cut by `why` (the
    /// balancer stops).
    pub fn abort(&mut self, ctx: &mut Ctx, why: &'static str) {
        self.mark_termination(why);
        self.close(ctx);
    }

    /// Releases everything the session holds.
    pub(super) fn close(&mut self, ctx: &mut Ctx) {
        if self.exchange.is_some() {
            self.log_exchange(ctx, true);
            self.exchange = None;
        }
        self.drop_backend(ctx, false);
        self.client.close();
        self.req_in.clear();
        self.resp_in.clear();
        self.req_in.release_if_empty(ctx.bufs);
        self.resp_in.release_if_empty(ctx.bufs);
        // Nothing more goes out: the head buffers serve the next session (an HTTP/2 stream's
        // lives for one request, and a new allocation per stream would cost more than it).
        self.to_backend.clear();
        self.to_client.clear();
        ctx.bufs.return_head(&mut self.to_backend);
        ctx.bufs.return_head(&mut self.to_client);
    }
}
