//! The session's deadlines: which timeout applies in each phase, and what expiring does.

use std::time::Instant;

use log::debug;

use super::{BackendFailure, Closed, Ctx, Outcome, RequestPhase, ResponsePhase, Session, Settings};
use crate::http::Answer;

impl Session {
    /// The earliest moment something must happen if no byte moves before it.
    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        self.next_timer(settings).map(|(at, _)| at)
    }

    fn next_timer(&self, settings: &Settings) -> Option<(Instant, Timer)> {
        if self.client.is_handshaking() {
            // Nothing else can happen before the handshake ends; the session began with it.
            return Some((
                self.head_started + settings.handshake_timeout,
                Timer::Handshake,
            ));
        }
        let t = &settings.timeouts;
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
        // The pool's own timeouts, where it sets them.
        let (connect, backend_response) = self
            .exchange
            .as_ref()
            .and_then(|ex| ex.policy.as_ref())
            .map_or((t.connect, t.backend_response), |p| {
                (p.connect_timeout, p.backend_response_timeout)
            });
        if let Some(b) = &self.backend {
            if !b.connected || b.stream.is_handshaking() {
                // A TLS backend's handshake is part of connecting to it.
                consider(b.last_activity + connect, Timer::Connect);
            } else if backend_blocks && !client_blocks {
                consider(b.last_activity + backend_response, Timer::BackendResponse);
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
                consider(since + backend_response, Timer::BackendResponse);
            }
        }
        if client_blocks {
            consider(self.last_client_write + t.client_idle, Timer::ClientWrite);
        }
        best
    }

    /// Acts on whatever timer has expired, if one has.
    pub fn on_timer(&mut self, ctx: &mut Ctx) -> Outcome {
        let Some((at, timer)) = self.next_timer(ctx.settings) else {
            return Outcome::Idle;
        };
        if at > ctx.now {
            return Outcome::Idle;
        }
        debug!("client {}: {timer:?} timeout", self.peer);
        let step = match timer {
            Timer::Linger | Timer::KeepAliveIdle => Err(Closed),
            Timer::TunnelIdle => {
                self.mark_termination("tunnel-idle-timeout");
                Err(Closed)
            }
            Timer::ClientWrite => {
                self.mark_termination("client-write-timeout");
                Err(Closed)
            }
            Timer::Handshake => {
                self.client.handshake_timed_out();
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
                    self.mark_termination("client-body-timeout");
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
    Handshake,
    ClientHeader,
    KeepAliveIdle,
    ClientBody,
    ClientWrite,
    Connect,
    BackendResponse,
    TunnelIdle,
    Linger,
}
