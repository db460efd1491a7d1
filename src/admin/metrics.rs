//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), with names in the style
//! of HAProxy's exporter and Traefik's.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::Admin;
use crate::stats::{Traffic, HISTOGRAM_BOUNDS};
use crate::upstream::BackendState;

/// Reads one per-backend figure.
type Figure = fn(&crate::upstream::Backend) -> u64;

/// Escapes a label value: backslash, double quote and newline (the format's rules).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `labels` is the series' `backend="…",pool="…"`.
fn histogram(out: &mut String, labels: &str, traffic: &Traffic) {
    let mut cumulative = 0;
    for (i, bound) in HISTOGRAM_BOUNDS.iter().enumerate() {
        cumulative += traffic.histogram[i];
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += traffic.histogram[HISTOGRAM_BOUNDS.len()];
    let _ = writeln!(
        out,
        "lb_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "lb_request_duration_seconds_sum{{{labels}}} {}",
        traffic.duration_sum_seconds
    );
    let _ = writeln!(
        out,
        "lb_request_duration_seconds_count{{{labels}}} {}",
        traffic.count
    );
}

pub fn render(admin: &Admin) -> String {
    let backends = admin.backends.snapshot();
    let live: Vec<_> = backends
        .iter()
        .filter(|b| b.state() != BackendState::Removed)
        .collect();
    let pools = admin.backends.pools();
    // Every per-backend series carries its pool, so one pool's share can be summed.
    let labels: Vec<String> = live
        .iter()
        .map(|b| {
            let pool = pools
                .iter()
                .find(|p| p.index == b.pool)
                .map_or("", |p| p.name.as_str());
            format!("backend=\"{}\",pool=\"{}\"", label(&b.name), label(pool))
        })
        .collect();
    let mut out = String::with_capacity(4096);

    family(
        &mut out,
        "lb_pool_backends",
        "gauge",
        "Backends of the pool, and how many of them pass their health checks.",
    );
    for p in &pools {
        let members: Vec<_> = live.iter().filter(|b| b.pool == p.index).collect();
        let up = members.iter().filter(|b| b.is_up()).count();
        let name = label(&p.name);
        let _ = writeln!(
            out,
            "lb_pool_backends{{pool=\"{name}\",state=\"all\"}} {}",
            members.len()
        );
        let _ = writeln!(out, "lb_pool_backends{{pool=\"{name}\",state=\"up\"}} {up}");
    }

    family(
        &mut out,
        "lb_backend_up",
        "gauge",
        "Whether the backend passes its health checks (1) or not (0).",
    );
    for (b, labels) in live.iter().zip(&labels) {
        let up = u8::from(b.state() == BackendState::Up || b.is_up());
        let _ = writeln!(out, "lb_backend_up{{{labels}}} {up}");
    }
    family(
        &mut out,
        "lb_backend_state",
        "gauge",
        "The backend's state: 1 for the state it is in.",
    );
    for (b, labels) in live.iter().zip(&labels) {
        let current = b.state();
        for state in [BackendState::Up, BackendState::Down, BackendState::Draining] {
            let _ = writeln!(
                out,
                "lb_backend_state{{{labels},state=\"{}\"}} {}",
                state.as_str(),
                u8::from(current == state)
            );
        }
    }

    let traffic: Vec<(String, Traffic)> = live
        .iter()
        .zip(&labels)
        .map(|(b, labels)| (labels.clone(), b.traffic()))
        .collect();
    let unattributed = admin
        .totals
        .unattributed
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();

    family(&mut out, "lb_requests_total", "counter", "Responses sent to clients, by backend, pool and status code (backend \"\" for answers no backend is involved in).");
    for (name, t) in traffic.iter().chain(std::iter::once(&(
        "backend=\"\",pool=\"\"".to_string(),
        unattributed.clone(),
    ))) {
        for (code, n) in &t.by_code {
            let _ = writeln!(out, "lb_requests_total{{{name},code=\"{code}\"}} {n}");
        }
    }
    family(
        &mut out,
        "lb_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the end of the response, per backend.",
    );
    for (name, t) in &traffic {
        histogram(&mut out, name, t);
    }

    let per_backend: [(&str, &str, &str, Figure); 7] = [
        (
            "lb_backend_in_flight",
            "gauge",
            "Requests on the backend now.",
            |b| b.in_flight.load(Ordering::Relaxed),
        ),
        (
            "lb_retries_total",
            "counter",
            "Requests sent again to the same backend after a stale pooled connection.",
            |b| b.retries.load(Ordering::Relaxed),
        ),
        (
            "lb_redispatches_total",
            "counter",
            "Requests moved to another backend after a failure on this one.",
            |b| b.redispatches.load(Ordering::Relaxed),
        ),
        (
            "lb_backend_errors_total",
            "counter",
            "Connect failures, resets, bad responses and timeouts.",
            |b| b.errors.load(Ordering::Relaxed),
        ),
        (
            "lb_backend_connections_total",
            "counter",
            "Connections opened to the backend.",
            |b| b.connections.load(Ordering::Relaxed),
        ),
        (
            "lb_backend_attempts_total",
            "counter",
            "Requests sent to the backend, each try counted.",
            |b| b.requests.load(Ordering::Relaxed),
        ),
        (
            "lb_health_flips_total",
            "counter",
            "Times the backend went up or down.",
            |b| b.health().flips,
        ),
    ];
    for (name, kind, help, value) in per_backend {
        family(&mut out, name, kind, help);
        for (b, labels) in live.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(b));
        }
    }

    let t = &admin.totals;
    family(
        &mut out,
        "lb_active_connections",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        out,
        "lb_active_connections {}",
        t.active_connections.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "lb_proxy_answers_total",
        "counter",
        "Answers the balancer made itself (400, 408, 414, 431, 502, 503, 504, ...).",
    );
    let _ = writeln!(
        out,
        "lb_proxy_answers_total {}",
        t.answered_by_proxy.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "lb_events_dropped_total",
        "counter",
        "Dashboard events dropped because a listener could not keep up.",
    );
    let _ = writeln!(out, "lb_events_dropped_total {}", admin.events.dropped());
    family(
        &mut out,
        "lb_access_log_dropped_lines_total",
        "counter",
        "Access log lines dropped because their destination did not keep up or failed.",
    );
    let _ = writeln!(
        out,
        "lb_access_log_dropped_lines_total {}",
        t.access_log_dropped.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "lb_reactor_spin_seconds_total",
        "counter",
        "Time the reactors spent polling on instead of sleeping while busy (idle_spin): CPU given for the wake-ups it saved.",
    );
    let _ = writeln!(
        out,
        "lb_reactor_spin_seconds_total {:.6}",
        t.spin_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    family(
        &mut out,
        "lb_backend_slots",
        "gauge",
        "Slots in the backend table: the most backends held at once, live or recently removed (a removed backend's slot is reused), however many came and went.",
    );
    let _ = writeln!(out, "lb_backend_slots {}", admin.backends.slots());
    family(
        &mut out,
        "lb_uptime_seconds",
        "gauge",
        "Seconds since the balancer started.",
    );
    let _ = writeln!(
        out,
        "lb_uptime_seconds {:.3}",
        t.started.elapsed().as_secs_f64()
    );
    if let Some(tls) = &admin.tls {
        tls_series(&mut out, tls);
    }
    out
}

fn tls_series(out: &mut String, tls: &crate::transport::tls::TlsAcceptor) {
    let (config, _) = tls.settings();
    let listener = label(&config.listen.to_string());
    let stats = &tls.stats;
    family(
        out,
        "lb_tls_handshakes_total",
        "counter",
        "TLS handshakes completed on the HTTPS listener, by version.",
    );
    for (version, n) in [("1.2", &stats.tls12), ("1.3", &stats.tls13)] {
        let _ = writeln!(
            out,
            "lb_tls_handshakes_total{{listener=\"{listener}\",version=\"{version}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "lb_tls_resumptions_total",
        "counter",
        "TLS handshakes that resumed an earlier session (ticket or session ID).",
    );
    let _ = writeln!(
        out,
        "lb_tls_resumptions_total{{listener=\"{listener}\"}} {}",
        stats.resumed.load(Ordering::Relaxed)
    );
    family(
        out,
        "lb_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that did not complete, by reason.",
    );
    for (reason, n) in stats.failures() {
        let _ = writeln!(
            out,
            "lb_tls_handshake_failures_total{{listener=\"{listener}\",reason=\"{reason}\"}} {n}"
        );
    }
    family(
        out,
        "lb_tls_cipher_handshakes_total",
        "counter",
        "TLS handshakes completed, by negotiated cipher suite.",
    );
    for (suite, n) in stats.suites() {
        let _ = writeln!(
            out,
            "lb_tls_cipher_handshakes_total{{listener=\"{listener}\",cipher=\"{suite}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
