//! Pools and routes (issue #12), end to end: several pools of demo backends behind one
//! balancer, requests routed by host, path, method and header, and each pool's own policy.
//!
//! - `rules`: each match kind, first-match order, strip_prefix, redirects, 404 without a
//!   default pool, per-pool algorithm and health checks, one pool down while another serves;
//! - `affinity`: consistent hashing, sticky cookies, slow start, backups;
//! - `reload`: routes and pools rewired under load.

use std::time::Duration;

use lb::config::{
    Algorithm, BackendConfig, BackendProtocol, Config, PoolConfig, RouteAction, RouteConfig,
};
use lb::route::{Conditions, HostMatch, PathMatch};

use crate::support::*;

mod admin;
mod affinity;
mod file;
mod reload;
mod rules;

/// A pool of `backends` with the top-level defaults, as a `[[pool]]` table with only `name`
/// and its backends would be.
fn pool(name: &str, backends: Vec<BackendConfig>) -> PoolConfig {
    let c = Config::default();
    PoolConfig {
        name: name.to_string(),
        algorithm: Algorithm::RoundRobin,
        hash_key: None,
        sticky: None,
        slow_start: Duration::ZERO,
        health: c.health.clone(),
        retries: c.retries,
        connect_timeout: c.timeouts.connect,
        backend_response_timeout: c.timeouts.backend_response,
        protocol: BackendProtocol::Http1,
        backends,
        discover: Vec::new(),
    }
}

fn to_pool(name: &str, conditions: Conditions) -> RouteConfig {
    RouteConfig {
        name: format!("to-{name}"),
        conditions,
        action: RouteAction::Forward {
            pool: name.to_string(),
            strip_prefix: false,
        },
    }
}

fn host(h: &str) -> Conditions {
    Conditions {
        host: Some(HostMatch::parse(h).expect("host")),
        ..Conditions::default()
    }
}

fn prefix(p: &str) -> Conditions {
    Conditions {
        path: Some(PathMatch::Prefix(p.to_string())),
        ..Conditions::default()
    }
}

/// `GET path` with `Host: host` and `extra` header lines, on a connection of its own.
fn get_as(addr: std::net::SocketAddr, host: &str, path: &str, extra: &str) -> Response {
    roundtrip(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Which backend answered each of `n` requests to `path`, counted by name.
fn spread(
    addr: std::net::SocketAddr,
    host_name: &str,
    path: &str,
    n: usize,
) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for _ in 0..n {
        let r = get_as(addr, host_name, path, "");
        assert_eq!(r.status, 200, "{}", r.text());
        let name = r.backend().to_string();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.sort();
    counts
}
