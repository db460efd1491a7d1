//! The `GET /api/state` document (also the SSE `stats` event).

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Admin;
use crate::upstream::Backend;

pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn backend_json(admin: &Admin, _index: usize, b: &Backend) -> Value {
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
    json!({
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
    })
}

pub fn document(admin: &Admin) -> Value {
    let backends = admin.backends.snapshot();
    let in_flight: u64 = backends
        .iter()
        .map(|b| b.in_flight.load(Ordering::Relaxed))
        .sum();
    let s = &admin.summary;
    let t = &admin.totals;
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
            .enumerate()
            .map(|(i, b)| backend_json(admin, i, b))
            .collect::<Vec<_>>(),
    })
}
