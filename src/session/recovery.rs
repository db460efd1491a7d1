//! What happens when a backend fails an exchange: the stale-connection replay, the redispatch
//! to another backend, the balancer's own error answer, or the end of a response cut short.

use std::sync::atomic::Ordering;

use log::{debug, warn};

use super::{BackendFailure, Closed, Ctx, RequestPhase, ResponsePhase, Session, Step};
use crate::http::h1::routing::RouteTarget;
use crate::http::{self, request, Answer};

impl Session {
    /// Handles a failed backend connection: a replay, another backend, an error answer, or the
    /// end of the session, whichever is still possible and safe.
    pub(super) fn backend_failed(&mut self, ctx: &mut Ctx, failure: BackendFailure) -> Step {
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
            BackendFailure::Broken | BackendFailure::Garbage | BackendFailure::Refused => {}
        }
        let may_retry = match failure {
            BackendFailure::Connect | BackendFailure::ConnectTimeout => true,
            BackendFailure::Timeout => false,
            BackendFailure::Broken | BackendFailure::Garbage => resendable,
            // Unprocessed whatever the method, but only what is still held can be sent again.
            BackendFailure::Refused => untouched,
        };
        let (answer, cause) = match failure {
            BackendFailure::Connect | BackendFailure::ConnectTimeout => {
                (Answer::ServiceUnavailable, "all-backends-unreachable")
            }
            BackendFailure::Timeout => (Answer::GatewayTimeout, "backend-timeout"),
            BackendFailure::Garbage => (Answer::BadGateway, "bad-response"),
            BackendFailure::Broken => (Answer::BadGateway, "backend-closed"),
            BackendFailure::Refused => (Answer::BadGateway, "backend-refused"),
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
    pub(super) fn restart_request(&mut self) {
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
    pub(super) fn answer_error(
        &mut self,
        ctx: &mut Ctx,
        answer: Answer,
        cause: &'static str,
    ) -> Step {
        self.answer_with(
            ctx,
            answer.status(),
            Some(cause),
            |out, connection, head_only| answer.write(out, cause, connection, head_only),
        )
    }

    /// Answers a request that its route does not send to a backend: the route's redirect, or
    /// 404 when no route matched and there is no default pool.
    pub(super) fn answer_route(&mut self, ctx: &mut Ctx) -> Step {
        let target = match &self.exchange {
            Some(ex) => ex.request.routed.target.clone(),
            None => return Err(Closed),
        };
        match target {
            RouteTarget::Redirect { status, location } => {
                self.answer_with(ctx, status, None, |out, connection, _| {
                    http::answer::redirect(out, status, &location, connection)
                })
            }
            RouteTarget::NoRoute | RouteTarget::Pool(_) => {
                self.answer_error(ctx, Answer::NotFound, "no-route")
            }
        }
    }

    /// Answers the current exchange with what `write` makes (given the `Connection` value
    /// needed, and whether the answer is to a HEAD); `cause`, when the answer is an error.
    fn answer_with(
        &mut self,
        ctx: &mut Ctx,
        status: u16,
        cause: Option<&'static str>,
        write: impl FnOnce(&mut Vec<u8>, Option<&str>, bool),
    ) -> Step {
        self.drop_backend(ctx, false);
        let last_before_eof = self.last_request_before_eof();
        let Some(ex) = &mut self.exchange else {
            return Err(Closed);
        };
        if ex.answer_sent {
            return self.end_response_early(ctx, cause.unwrap_or("answered"));
        }
        ex.status = status;
        ex.error_cause = cause;
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
        write(&mut self.to_client, connection, head_only);
        self.resp_phase = ResponsePhase::Complete;
        Ok(true)
    }

    /// The backend failed after its response head went to the client. What was read of the
    /// response still goes out (it may even be all of it); if it is not all, the connection then
    /// closes, which is how the client learns the message was cut short. Closing at once would
    /// throw away bytes already read, and reset the client's connection under them.
    pub(super) fn end_response_early(&mut self, ctx: &mut Ctx, cause: &'static str) -> Step {
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
}
