//! Accounting for finished exchanges: counters, latency statistics, the dashboard's request
//! events and the access log line.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::{Ctx, Session};
use crate::access::Record;
use crate::events::{Event, RequestEvent};

impl Session {
    /// Accounts for a finished exchange, or (`aborted`) one its connection ended: counters,
    /// latency statistics, the dashboard's event and the access log line.
    pub(super) fn log_exchange(&self, ctx: &mut Ctx, aborted: bool) {
        let Some(ex) = &self.exchange else {
            return;
        };
        let backend = ex.backend.and_then(|i| ctx.backends.get(i));
        let elapsed = ctx.now.saturating_duration_since(ex.started);
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
        let wants_event = ctx.events.wants_requests();
        if !wants_event && !ctx.access.is_on() {
            return;
        }
        let backend = backend.as_ref().map(|b| b.name.as_str());
        let pool = ex.pool.and_then(|p| ctx.router.pool_name(p));
        let route = ex
            .request
            .routed
            .route
            .and_then(|r| ctx.router.route_name(r));
        let line = ex.request.request_line.as_deref().unwrap_or("-");
        // A stream's exchange was written as HTTP/1.1 by the HTTP/2 layer; the log says what
        // the client spoke.
        let h2_line;
        let line = match (self.h2_stream, line.strip_suffix("HTTP/1.1")) {
            (1.., Some(start)) => {
                h2_line = format!("{start}HTTP/2.0");
                h2_line.as_str()
            }
            _ => line,
        };
        let protocol = if self.h2_stream != 0 {
            "HTTP/2"
        } else if ex.request.version_minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let request_id = ex.request.request_id.as_deref();
        if wants_event {
            let (method, target) = crate::access::method_and_target(Some(line));
            ctx.events.publish(Event::Request(RequestEvent {
                time: SystemTime::now(),
                client: self.peer.to_string(),
                method: method.to_string(),
                target: target.to_string(),
                status: ex.status,
                backend: backend.map(str::to_string),
                pool: pool.map(str::to_string),
                route: route.map(str::to_string),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                bytes: ex.bytes_to_client,
                protocol,
                request_id: request_id.map(str::to_string),
            }));
        }
        let termination = match (ex.error_cause, ex.termination) {
            (Some(cause), _) | (None, Some(cause)) => cause,
            (None, None) if !aborted => "ok",
            (None, None) if self.client_eof => "client-closed",
            (None, None) => "aborted",
        };
        ctx.access.write(
            ctx.now,
            &Record {
                client: Some(self.peer),
                request_line: Some(line),
                protocol,
                status: ex.status,
                bytes_in: ex.bytes_from_client,
                bytes_out: ex.bytes_to_client,
                backend,
                pool,
                route,
                request_id,
                tls: self.client.tls_description(),
                head: Some(ex.head_time),
                connect: ex.connect_time,
                first_byte: ex
                    .first_byte_at
                    .map(|at| at.saturating_duration_since(ex.started)),
                served: elapsed,
                cause: ex.error_cause.or(ex.termination),
                termination,
                aborted,
            },
        );
    }

    /// Accounts for a request refused before it was understood.
    pub(super) fn record_refusal(&self, ctx: &mut Ctx, status: u16, cause: &'static str) {
        ctx.totals.requests.fetch_add(1, Ordering::Relaxed);
        ctx.totals.answered_by_proxy.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = ctx.totals.unattributed.lock() {
            t.record(status, Duration::ZERO, ctx.totals.second(ctx.now));
        }
        let protocol = if self.h2_stream != 0 { "HTTP/2" } else { "-" };
        if ctx.events.wants_requests() {
            ctx.events.publish(Event::Request(RequestEvent {
                time: SystemTime::now(),
                client: self.peer.to_string(),
                method: "-".to_string(),
                target: "-".to_string(),
                status,
                backend: None,
                pool: None,
                route: None,
                duration_ms: 0.0,
                bytes: 0,
                protocol,
                request_id: None,
            }));
        }
        ctx.access.write(
            ctx.now,
            &refusal(
                self.peer,
                protocol,
                status,
                cause,
                self.client.tls_description(),
                ctx.now.saturating_duration_since(self.head_started),
            ),
        );
    }
}

/// The line of a request refused before it was understood (no method, no target).
pub(super) fn refusal<'a>(
    client: std::net::SocketAddr,
    protocol: &'a str,
    status: u16,
    cause: &'a str,
    tls: Option<(&'a str, &'a str)>,
    head: Duration,
) -> Record<'a> {
    Record {
        client: Some(client),
        protocol,
        status,
        tls,
        head: Some(head),
        cause: Some(cause),
        termination: cause,
        ..Record::default()
    }
}
