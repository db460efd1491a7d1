//! Pools and routes as validated: `[[pool]]` tables (each a named list of backends with its
//! own balancing policy, health checks, retries and timeouts), `[[route]]` tables (which pool a
//! request goes to), and the pool `default` that the top-level `[[backend]]` list stands for.
//!
//! Every pool setting left out of a `[[pool]]` table takes the top-level value of the same key
//! (`algorithm`, `hash_key`, `sticky`, `slow_start`, `retries`, `[health]`, `timeouts.connect`,
//! `timeouts.backend_response`), so the pool `default` is exactly what `lb` was before pools.

use std::time::Duration;

use super::{Algorithm, BackendConfig, BackendProtocol, Config, DiscoverConfig, HealthConfig};
use crate::route::Conditions;

/// The name of the pool made of the top-level `[[backend]]` tables and `--backend` flags; the
/// pool of requests that match no route.
pub const DEFAULT_POOL: &str = "default";

/// `sticky.ttl` when left out: the cookie lasts as long as the browser session.
pub const DEFAULT_STICKY_TTL: Option<Duration> = None;

/// What a `consistent_hash` pool hashes to choose a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `"client_ip"`: the client's address (after a PROXY protocol header, the one it names).
    ClientIp,
    /// `"header:NAME"`: the first value of that header; name stored lower case.
    Header(String),
    /// `"cookie:NAME"`: that cookie's value (name compared exactly, as browsers send it).
    Cookie(String),
    /// `"uri"`: the request target as sent, path and query (nginx's `$request_uri`).
    Uri,
}

impl HashKey {
    /// `"client_ip"`, `"header:X-User"`, `"cookie:session"` or `"uri"`.
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let text = text.trim();
        let token = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if text == "client_ip" {
            return Ok(HashKey::ClientIp);
        }
        if text == "uri" {
            return Ok(HashKey::Uri);
        }
        if let Some(name) = text.strip_prefix("header:") {
            if token(name) {
                return Ok(HashKey::Header(name.to_ascii_lowercase()));
            }
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            if token(name) {
                return Ok(HashKey::Cookie(name.to_string()));
            }
        }
        Err(format!(
            "{text:?} is not a hash key: expected \"client_ip\", \"uri\", \"header:NAME\" or \
             \"cookie:NAME\""
        ))
    }
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Uri => f.write_str("uri"),
        }
    }
}

/// `sticky = { cookie = "lb_srv", ttl = "1h" }`: a client keeps the backend named by the
/// cookie the balancer set, while that backend is up and not draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: String,
    /// `Max-Age` of the cookie; `None`: a session cookie.
    pub ttl: Option<Duration>,
}

/// One pool: its backends and how requests are spread over them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    /// Set exactly when `algorithm` is `consistent_hash`.
    pub hash_key: Option<HashKey>,
    pub sticky: Option<StickyConfig>,
    /// Zero: a backend back up takes its full share at once.
    pub slow_start: Duration,
    pub health: HealthConfig,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub backend_response_timeout: Duration,
    /// What the pool's backends speak: HTTP/1.1, or HTTP/2 on one multiplexed connection each.
    pub protocol: BackendProtocol,
    pub backends: Vec<BackendConfig>,
    pub discover: Vec<DiscoverConfig>,
}

/// One `[[route]]`, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `name = ...`, or `route[N]` after its position.
    pub name: String,
    pub conditions: Conditions,
    pub action: RouteAction,
}

/// What a matching route does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// `pool = "api"`: forwarded to a backend of that pool; with `strip_prefix`, the route's
    /// `path_prefix` is cut from the path first (what is left always starts with `/`).
    Forward { pool: String, strip_prefix: bool },
    /// `redirect = "https://www.example.com"`: answered by the balancer with `status` and a
    /// `Location` of that prefix followed by the request's path and query (HAProxy's
    /// `redirect prefix`), the route's `path_prefix` cut first with `strip_prefix`.
    Redirect {
        location: String,
        status: u16,
        strip_prefix: bool,
    },
}

impl Config {
    /// Every pool in effect: `default` first (when the top-level list, `--backend` or
    /// discovery gives it a member, or when no `[[pool]]` exists), then the `[[pool]]` tables
    /// in file order.
    pub fn pools_in_effect(&self) -> Vec<PoolConfig> {
        let mut pools = Vec::with_capacity(self.pools.len() + 1);
        if self.has_default_pool() {
            pools.push(self.default_pool());
        }
        pools.extend(
            self.pools
                .iter()
                .filter(|p| p.name != DEFAULT_POOL)
                .cloned(),
        );
        pools
    }

    /// Whether requests that match no route have a pool to go to (otherwise: 404).
    pub fn has_default_pool(&self) -> bool {
        !self.backends.is_empty()
            || !self.discover.is_empty()
            || self.pools.is_empty()
            || self.pools.iter().any(|p| p.name == DEFAULT_POOL)
    }

    /// The pool `default` as the top-level keys make it; a `[[pool]] name = "default"` table
    /// (allowed only when the top level has no backends) stands for it instead.
    fn default_pool(&self) -> PoolConfig {
        if let Some(p) = self.pools.iter().find(|p| p.name == DEFAULT_POOL) {
            return p.clone();
        }
        PoolConfig {
            name: DEFAULT_POOL.to_string(),
            algorithm: self.algorithm,
            hash_key: self.hash_key.clone(),
            sticky: self.sticky.clone(),
            slow_start: self.slow_start,
            health: self.health.clone(),
            retries: self.retries,
            connect_timeout: self.timeouts.connect,
            backend_response_timeout: self.timeouts.backend_response,
            protocol: BackendProtocol::Http1,
            backends: self.backends.clone(),
            discover: self.discover.clone(),
        }
    }
}
