//! The HTTP/1 exchange: request and response heads and bodies through their phases, from the
//! first byte of a request head to the end of its response, and what comes next on the
//! connection (the next request, a tunnel, or the close).

use log::{debug, warn};

use super::{BackendFailure, Closed, Ctx, Exchange, RequestPhase, ResponsePhase, Session, Step};
use crate::balance::sticky;
use crate::config::StickyConfig;
use crate::http::h1::routing::RouteTarget;
use crate::http::{self, request, response, Answer, BodyKind, BodyScanner, RequestError};

impl Session {
    pub(super) fn advance_request(&mut self, ctx: &mut Ctx) -> Step {
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
                        if let Some(ex) = &mut self.exchange {
                            ex.bytes_from_client += scanned.used as u64;
                        }
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
                if let Some(ex) = &mut self.exchange {
                    ex.bytes_from_client += len.saturating_sub(self.req_released) as u64;
                }
                self.req_released = len;
                Ok(progress)
            }
            RequestPhase::Complete | RequestPhase::Abandoned | RequestPhase::Closing => Ok(false),
        }
    }

    pub(super) fn parse_request_head(&mut self, ctx: &mut Ctx) -> Step {
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
        if !self.served_any && self.h2_stream == 0 && self.is_http2(ctx) {
            return Ok(false);
        }
        // RFC 9112 §2.2: empty lines before a request line are ignored (some clients send a CRLF
        // after a body). They must go before the head is looked for: alone in the buffer they
        // look like a complete head to `find_head_end` and like nothing yet to httparse. Nor do
        // they start a head, so they do not restart the header clock.
        let blank = http::leading_empty_lines(self.req_in.data());
        if blank > 0 {
            self.req_in.consume(blank);
            self.head_searched = 0;
            self.head_checked = request::PartialHead::default();
            return Ok(true);
        }
        if self.head_searched == 0 && self.served_any {
            self.head_started = ctx.now;
        }
        let limits = &ctx.settings.head_limits;
        let data = self.req_in.data();
        let Some(_) = http::find_head_end(data, &mut self.head_searched) else {
            // A head that can no longer become valid is answered now, not when the header
            // timeout ends the wait for the rest; even after a half-close, as the client may
            // still read.
            if let Err(e) = self.head_checked.check(data, limits) {
                return self.refuse_head(ctx, e);
            }
            if self.client_eof {
                // The client half-closed mid-head: the rest will never come.
                return Err(Closed);
            }
            self.ack_promptly();
            return Ok(false);
        };
        ctx.bufs.lend_head(&mut self.to_backend);
        ctx.bufs.lend_head(&mut self.to_client);
        let origin = request::Origin {
            ip: self.peer.ip(),
            https: self.client.is_tls(),
        };
        let parsed = request::parse_routed(
            data,
            limits,
            origin,
            ctx.access.is_on() || ctx.events.wants_requests(),
            ctx.settings.request_id,
            ctx.router,
            &mut self.to_backend,
        );
        let request = match parsed {
            Ok(Some(request)) => request,
            // httparse wants more than what looked like a head's end: wait for it (the header
            // timeout still runs).
            Ok(None) if self.client_eof => return Err(Closed),
            Ok(None) => {
                self.ack_promptly();
                return Ok(false);
            }
            Err(e) => return self.refuse_head(ctx, e),
        };
        if let Some(port) = ctx.settings.redirect_https.filter(|_| !origin.https) {
            return self.redirect_to_https(ctx, port);
        }
        self.req_in.consume(request.head_len);
        self.head_searched = 0;
        self.head_checked = request::PartialHead::default();
        self.to_backend_pos = 0;
        self.req_released = 0;
        self.req_written = 0;
        self.replayable = true;
        self.req_scanner = BodyScanner::new(request.body);
        self.req_phase = if self.req_scanner.is_done() {
            RequestPhase::Complete
        } else {
            self.ack_promptly();
            RequestPhase::Body
        };
        self.resp_phase = ResponsePhase::Head;
        self.resp_head_searched = 0;
        if !request.keep_alive || self.draining {
            self.close_after = true;
        }
        let pool = match request.routed.target {
            RouteTarget::Pool(pool) => Some(pool),
            RouteTarget::Redirect { .. } | RouteTarget::NoRoute => None,
        };
        let head_time = ctx.now.saturating_duration_since(self.head_started);
        let head_len = request.head_len as u64;
        self.exchange = Some(Box::new(Exchange {
            request,
            started: ctx.now,
            head_time,
            connect_time: None,
            first_byte_at: None,
            bytes_from_client: head_len,
            termination: None,
            pool,
            policy: pool.and_then(|p| ctx.backends.policy(p)),
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
        let Some(pool) = pool else {
            return self.answer_route(ctx);
        };
        if !self.connect_backend(ctx) {
            let cause = if ctx.backends.live_count_in(pool) == 0 {
                "no-backend"
            } else {
                "all-backends-unreachable"
            };
            return self.answer_error(ctx, Answer::ServiceUnavailable, cause);
        }
        Ok(true)
    }

    /// Whether the connection is HTTP/2: ALPN said `h2`, or (with `http2.h2c`) the client
    /// opened with the preface on the plain listener. Then `wants_h2` is set and nothing is
    /// parsed here. A prefix of the preface waits for the rest.
    fn is_http2(&mut self, ctx: &Ctx) -> bool {
        let data = self.req_in.data();
        if self.client.alpn() == Some(b"h2") {
            self.wants_h2 = true;
        } else if ctx.settings.http2.h2c && !self.client.is_tls() {
            if data.starts_with(crate::h2::PREFACE) {
                self.wants_h2 = true;
            } else if crate::h2::PREFACE.starts_with(data) && !self.client_eof {
                self.ack_promptly();
                return true;
            }
        }
        if self.wants_h2 {
            // An HTTP/2 connection lives long and its frames come apart from their answers.
            self.ack_promptly();
        }
        self.wants_h2
    }

    pub(super) fn parse_proxy_header(&mut self, ctx: &mut Ctx) -> Step {
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

    pub(super) fn refuse_head(&mut self, ctx: &mut Ctx, error: RequestError) -> Step {
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
    pub(super) fn refuse_request(
        &mut self,
        ctx: &mut Ctx,
        answer: Answer,
        cause: &'static str,
    ) -> Step {
        if self.exchange.as_ref().is_some_and(|ex| ex.answer_sent) {
            return Err(Closed);
        }
        match &mut self.exchange {
            Some(ex) => {
                ex.status = answer.status();
                ex.error_cause = Some(cause);
                self.log_exchange(ctx, false);
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

    /// `tls.redirect_http`: a plain request is sent to the same host and target over HTTPS,
    /// with 308 so that the method and body are kept, and the connection closes (its request
    /// body, if any, is never read).
    fn redirect_to_https(&mut self, ctx: &mut Ctx, port: u16) -> Step {
        self.to_backend.clear();
        let mut answer = std::mem::take(&mut self.to_client);
        answer.clear();
        if !http::answer::https_redirect(self.req_in.data(), port, &mut answer) {
            self.to_client = answer;
            return self.refuse_request(ctx, Answer::BadRequest, "no-host-to-redirect");
        }
        self.record_refusal(ctx, 308, "redirect-to-https");
        self.to_client = answer;
        self.to_client_pos = 0;
        self.resp_in.clear();
        self.resp_released = 0;
        self.resp_phase = ResponsePhase::Complete;
        self.begin_closing(ctx);
        Ok(true)
    }

    pub(super) fn advance_response(&mut self, ctx: &mut Ctx) -> Step {
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

    pub(super) fn parse_response_head(&mut self, ctx: &mut Ctx) -> Step {
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
        if let Some(sticky) = ex.policy.as_ref().and_then(|p| p.sticky.as_ref()) {
            let chosen = ex.backend.and_then(|i| ctx.backends.get(i));
            if let Some(backend) = chosen.filter(|b| ex.request.routed.sticky != Some(b.cookie_id))
            {
                write_sticky_cookie(
                    &mut self.to_client,
                    sticky,
                    backend.cookie_id,
                    self.client.is_tls(),
                );
            }
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
    pub(super) fn response_complete(&mut self, ctx: &mut Ctx) {
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

    pub(super) fn finish(&mut self, ctx: &mut Ctx) -> Step {
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
        self.log_exchange(ctx, false);
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
}

/// `Set-Cookie` naming the backend that answered: for the whole site, out of scripts' reach,
/// and only over TLS when the request came over TLS.
fn write_sticky_cookie(out: &mut Vec<u8>, sticky: &StickyConfig, id: u64, https: bool) {
    use std::fmt::Write as _;
    let mut line = format!(
        "Set-Cookie: {}={}; Path=/; HttpOnly",
        sticky.cookie,
        sticky::format(id)
    );
    if let Some(ttl) = sticky.ttl {
        let _ = write!(line, "; Max-Age={}", ttl.as_secs());
    }
    if https {
        line.push_str("; Secure");
    }
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
}
