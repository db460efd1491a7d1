//! The pools and routes of `GET /api/state`: each pool's policy and members, each route's
//! conditions and action, as the configuration in effect (after the last reload) has them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::balance::slow_start;
use crate::config::{RouteAction, RouteConfig};
use crate::route::{HostMatch, PathMatch};
use crate::upstream::{Backend, PoolView};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a backend stands in its pool: the pool's name, backup or not, and the share of its
/// weight slow start gives it now (`null` while it is down).
pub fn membership(pools: &[PoolView], b: &Backend, now: Instant) -> Value {
    let pool = pools.iter().find(|p| p.index == b.pool);
    let factor = match pool {
        Some(p) if b.is_up() => {
            let since = b.up_for(now).unwrap_or(Duration::MAX);
            json!((slow_start::factor(since, p.policy.slow_start) * 1000.0).round() / 1000.0)
        }
        _ => Value::Null,
    };
    json!({
        "pool": pool.map(|p| p.name.as_str()),
        "backup": b.backup,
        "slow_start_factor": factor,
    })
}

pub fn pool_json(pool: &PoolView) -> Value {
    let p = &pool.policy;
    let members = &pool.members;
    json!({
        "name": pool.name,
        "algorithm": p.algorithm.as_str(),
        "hash_key": p.hash_key.as_ref().map(|k| k.to_string()),
        "sticky": p.sticky.as_ref().map(|s| json!({
            "cookie": s.cookie,
            "ttl_ms": s.ttl.map(ms),
        })),
        "slow_start_ms": ms(p.slow_start),
        "retries": p.retries,
        "connect_timeout_ms": ms(p.connect_timeout),
        "backend_response_timeout_ms": ms(p.backend_response_timeout),
        "health": {
            "path": p.health.path,
            "interval_ms": ms(p.health.interval),
            "timeout_ms": ms(p.health.timeout),
            "rise": p.health.rise,
            "fall": p.health.fall,
            "expect": p.health.expect.to_string(),
        },
        "backends": members.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        "up": members.iter().filter(|b| b.is_up()).count(),
    })
}

pub fn route_json(route: &RouteConfig) -> Value {
    let c = &route.conditions;
    let host = c.host.as_ref().map(|h| match h {
        HostMatch::Exact(name) => name.clone(),
        HostMatch::Wildcard(suffix) => format!("*{suffix}"),
    });
    let (path_prefix, path) = match &c.path {
        Some(PathMatch::Prefix(p)) => (Some(p.as_str()), None),
        Some(PathMatch::Exact(p)) => (None, Some(p.as_str())),
        None => (None, None),
    };
    let mut out = json!({
        "name": route.name,
        "host": host,
        "path_prefix": path_prefix,
        "path": path,
        "methods": c.methods,
        "header": c.header.as_ref().map(|(name, value)| json!({ "name": name, "value": value })),
    });
    let action = match &route.action {
        RouteAction::Forward { pool, strip_prefix } => json!({
            "pool": pool,
            "strip_prefix": strip_prefix,
        }),
        RouteAction::Redirect {
            location,
            status,
            strip_prefix,
        } => json!({
            "redirect": location,
            "status": status,
            "strip_prefix": strip_prefix,
        }),
    };
    if let (Some(out), Some(action)) = (out.as_object_mut(), action.as_object()) {
        out.extend(action.clone());
    }
    out
}
