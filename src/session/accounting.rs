//! Accounting for finished exchanges: counters, latency statistics, the dashboard's request
//! events and the access log line.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use log::info;

use super::{Ctx, Session};
use crate::events::{Event, RequestEvent};

impl Session {
    /// Accounts for a finished (or aborted) exchange: counters, latency statistics, the
    /// dashboard's event and the access log line.
    pub(super) fn log_exchange(&self, ctx: &Ctx, note: &str) {
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
        let pool = ex.pool.and_then(|p| ctx.router.pool_name(p));
        let route = ex
            .request
            .routed
            .route
            .and_then(|r| ctx.router.route_name(r));
        let millis = elapsed.as_secs_f64() * 1000.0;
        let line = ex.request.request_line.as_deref().unwrap_or("-");
        // A stream's exchange was written as HTTP/1.1 by the HTTP/2 layer; the log says what
        // the client spoke.
        let h2_line;
        let line = match line.strip_suffix("HTTP/1.1") {
            Some(start) if self.h2_stream != 0 => {
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
        if ctx.events.wants_requests() {
            let mut parts = line.split(' ');
            ctx.events.publish(Event::Request(RequestEvent {
                time: SystemTime::now(),
                client: self.peer.to_string(),
                method: parts.next().unwrap_or("-").to_string(),
                target: parts.next().unwrap_or("-").to_string(),
                status: ex.status,
                backend: backend.map(str::to_string),
                pool: pool.map(str::to_string),
                route: route.map(str::to_string),
                duration_ms: millis,
                bytes: ex.bytes_to_client,
                protocol,
            }));
        }
        if ctx.settings.access_log {
            info!(
                target: "access",
                "{} \"{line}\" {} {} {} {millis:.3}ms{}{}{}{note}",
                self.peer,
                ex.status,
                ex.bytes_to_client,
                backend.unwrap_or("-"),
                ex.error_cause.map_or(String::new(), |c| format!(" {c}")),
                RouteNote(pool, route),
                TlsNote(self.client.tls_description()),
            );
        }
    }

    /// Accounts for a request refused before it was understood.
    pub(super) fn record_refusal(&self, ctx: &Ctx, status: u16, cause: &str) {
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
                pool: None,
                route: None,
                duration_ms: 0.0,
                bytes: 0,
                protocol: if self.h2_stream != 0 { "HTTP/2" } else { "-" },
            }));
        }
        if ctx.settings.access_log {
            info!(
                target: "access",
                "{} \"-\" {status} 0 - 0.000ms {cause}{}",
                self.peer,
                TlsNote(self.client.tls_description())
            );
        }
    }
}

/// ` pool=api route=api-v1` (the route only when one matched; nothing for a request the
/// balancer answered before routing).
struct RouteNote<'a>(Option<&'a str>, Option<&'a str>);

impl std::fmt::Display for RouteNote<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(pool) = self.0 {
            write!(f, " pool={pool}")?;
        }
        if let Some(route) = self.1 {
            write!(f, " route={route}")?;
        }
        Ok(())
    }
}

/// ` tls=TLSv1.3/TLS13_AES_128_GCM_SHA256` on the lines of requests that came over TLS.
struct TlsNote(Option<(&'static str, &'static str)>);

impl std::fmt::Display for TlsNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some((version, suite)) => write!(f, " tls={version}/{suite}"),
            None => Ok(()),
        }
    }
}
