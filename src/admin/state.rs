//! The `GET /api/state` document (also the SSE `stats` event).

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Admin;
use crate::transport::tls::TlsAcceptor;
use crate::upstream::{Backend, PoolView};

pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn backend_json(admin: &Admin, pools: &[PoolView], b: &Backend) -> Value {
    let health = b.health();
    let second = admin.totals.second(Instant::now());
    let p = b.latency_percentiles(second, &[0.5, 0.99]);
    let last_check = match (health.last_check, health.last_ok) {
        (Some(at), Some(ok)) => json!({
            "at_ms": epoch_ms(at),
            "ok": ok,
            "detail": health.last_detail,
            "latency_ms": millis(health.last_latency),
        }),
        _ => Value::Null,
    };
    let mut out = json!({
        "name": b.name,
        "address": b.address.to_string(),
        "weight": b.weight(),
        "state": b.state().as_str(),
        "last_check": last_check,
        "last_change_ms": epoch_ms(health.last_change),
        "last_change_reason": health.last_change_reason,
        "flips": health.flips,
        "consecutive_passes": health.tracker.consecutive_passes(),
        "consecutive_failures": health.tracker.consecutive_failures(),
        "in_flight": b.in_flight.load(Ordering::Relaxed),
        "requests": b.requests.load(Ordering::Relaxed),
        "errors": b.errors.load(Ordering::Relaxed),
        "retries": b.retries.load(Ordering::Relaxed),
        "redispatches": b.redispatches.load(Ordering::Relaxed),
        "connections": b.connections.load(Ordering::Relaxed),
        "latency_p50_ms": p.first().copied().flatten(),
        "latency_p99_ms": p.get(1).copied().flatten(),
    });
    if let (Some(out), Value::Object(member)) = (
        out.as_object_mut(),
        super::pools::membership(pools, b, Instant::now()),
    ) {
        out.extend(member);
    }
    out
}

pub fn document(admin: &Admin) -> Value {
    let backends = admin.backends.snapshot();
    let pools = admin.backends.pools();
    let in_flight: u64 = backends
        .iter()
        .map(|b| b.in_flight.load(Ordering::Relaxed))
        .sum();
    let s = &admin.summary;
    let t = &admin.totals;
    let tls = admin.tls.as_ref().map_or(Value::Null, |tls| tls_json(tls));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": t.started.elapsed().as_millis() as u64,
        "config": {
            "listen": s.listen.to_string(),
            "admin": s.admin.to_string(),
            "algorithm": s.algorithm,
            "retries": s.retries,
            "health": {
                "path": s.health.path,
                "interval_ms": s.health.interval.as_millis() as u64,
                "timeout_ms": s.health.timeout.as_millis() as u64,
                "rise": s.health.rise,
                "fall": s.health.fall,
            },
        },
        "totals": {
            "requests": t.requests.load(Ordering::Relaxed),
            "errors": t.answered_by_proxy.load(Ordering::Relaxed),
            "active_connections": t.active_connections.load(Ordering::Relaxed),
            "in_flight": in_flight,
            "events_dropped": admin.events.dropped(),
        },
        "backends": backends
            .iter()
            .map(|b| backend_json(admin, &pools, b))
            .collect::<Vec<_>>(),
        "pools": pools
            .iter()
            .map(super::pools::pool_json)
            .collect::<Vec<_>>(),
        "routes": admin
            .routes
            .get()
            .iter()
            .map(super::pools::route_json)
            .collect::<Vec<_>>(),
        "tls": tls,
    })
}

/// The HTTPS listener: its settings, its certificates, and how its handshakes went.
fn tls_json(tls: &TlsAcceptor) -> Value {
    let (config, certs) = tls.settings();
    let stats = &tls.stats;
    let count = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    let by_name = |pairs: Vec<(&str, u64)>| {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "listen": config.listen.to_string(),
        "min_version": config.min_version.as_str(),
        "handshake_timeout_ms": config.handshake_timeout.as_millis() as u64,
        "redirect_http": config.redirect_http,
        "session_cache": config.session_cache,
        "session_tickets": config.session_tickets,
        "certificates": certs
            .iter()
            .zip(&config.certificates)
            .map(|(c, files)| json!({
                "cert": files.cert.display().to_string(),
                "names": c.names,
                "not_after_ms": epoch_ms(c.not_after),
            }))
            .collect::<Vec<_>>(),
        "handshakes": count(&stats.handshakes),
        "resumed": count(&stats.resumed),
        "versions": { "TLSv1.2": count(&stats.tls12), "TLSv1.3": count(&stats.tls13) },
        "ciphers": by_name(stats.suites()),
        "failures": by_name(stats.failures()),
    })
}
