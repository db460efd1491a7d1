//! Configuration: the TOML file, its defaults, and command-line overrides.
//!
//! This module owns everything the operator can set: the schema and its
//! defaults (`DEFAULT_*`), parsing, validation, the command-line flags
//! ([`Cli`]) and the error messages for all of them. The rest of the program
//! only ever sees a validated [`Config`]: addresses already resolved,
//! durations already parsed, every limit already range-checked.
//!
//! ```text
//!  lb.toml ──toml + serde_path_to_error──▶ raw::RawConfig ──validate──▶ Config ──apply(&Cli)──▶ Config
//!  (text)    types, unknown keys,           (as written,       defaults,          flags win:
//!            key paths, lines               with spans)        ranges, DNS        --listen, --backend, …
//! ```
//!
//! Errors name the dotted key (`timeouts.connect`, `backend[0].address`,
//! with 0-based `[N]` as in serde_path_to_error and TOML path tools) and the
//! line, or the flag for command-line values.
//!
//! Every key is optional: [`Config::default`] holds every default and no
//! backends. A file may leave all backends to `--backend`; [`Config::apply`]
//! is where "at least one backend" is enforced.
//!
//! ```no_run
//! use clap::Parser;
//! use lb::config::{Cli, Config};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let cli = Cli::parse();
//!     let mut cfg = match &cli.config {
//!         Some(path) => Config::load(path)?,
//!         None => Config::default(),
//!     };
//!     cfg.apply(&cli)?;
//!     if cli.check {
//!         println!("{cfg}");
//!         return Ok(());
//!     }
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use log::LevelFilter;
use serde::Deserialize;

mod backends;
mod checks;
mod cli;
mod defaults;
mod display;
mod duration;
mod error;
mod http2;
mod pool_tables;
mod pools;
mod raw;
mod route_tables;
mod tls;
mod validate;

#[cfg(test)]
mod tests;

pub use backends::MAX_BACKEND_WEIGHT;
pub use cli::{Cli, Overrides};
pub use defaults::*;
pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use http2::{Http2Config, DEFAULT_MAX_CONCURRENT_STREAMS};
pub use pool_tables::DEFAULT_STICKY_COOKIE;
pub use pools::{
    HashKey, PoolConfig, RouteAction, RouteConfig, StickyConfig, DEFAULT_POOL, DEFAULT_STICKY_TTL,
};
pub use route_tables::DEFAULT_REDIRECT_STATUS;

/// How access log lines are written (`access_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AccessLogFormat {
    /// One line of space-separated fields, as the log has always had.
    #[default]
    #[serde(rename = "text")]
    Text,
    /// One JSON object per line, every field named (for log pipelines).
    #[serde(rename = "json")]
    Json,
}

impl AccessLogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Text => "text",
            AccessLogFormat::Json => "json",
        }
    }
}

/// What a pool's backends speak (`[[pool]] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 over the keep-alive pool: a connection per request in flight.
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2 (prior knowledge, or ALPN `h2` over TLS): one multiplexed connection per backend,
    /// which gRPC needs.
    #[serde(rename = "h2")]
    H2,
}

/// How a backend is chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each healthy backend in turn.
    #[default]
    RoundRobin,
    /// Each healthy backend in proportion to its weight, interleaved (nginx's smooth weighted
    /// round-robin).
    WeightedRoundRobin,
    /// The healthy backend with the fewest requests in flight per unit of weight.
    LeastConnections,
    /// Of two healthy backends drawn at random, the one with fewer requests in flight.
    PowerOfTwo,
    /// The backend that owns the request's `hash_key` on a Ketama ring: the same key goes to
    /// the same backend, and a change of backends moves only the keys it must.
    ConsistentHash,
}

impl Algorithm {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::PowerOfTwo => "power_of_two",
            Algorithm::ConsistentHash => "consistent_hash",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated configuration the program runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// When set, mutating admin calls need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    pub algorithm: Algorithm,
    pub workers: usize,
    pub log_level: LevelFilter,
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    /// Where access log lines go; `None`: standard error, with the other log lines.
    pub access_log_path: Option<std::path::PathBuf>,
    /// Requests without an `X-Request-Id` get one (and every request's is logged).
    pub request_id: bool,
    /// TCP_DEFER_ACCEPT on the listeners: a connection is accepted once its first bytes are in.
    pub tcp_defer_accept: bool,
    /// TCP_QUICKACK off on the plain listener: the ACK of a request goes out with its response
    /// rather than in a packet of its own (HAProxy's `tcp-smart-accept`).
    pub tcp_smart_accept: bool,
    /// Poll without sleeping: each reactor keeps a CPU busy, and in exchange is never woken
    /// from an idle CPU, which on virtual machines can take milliseconds (HAProxy's
    /// `busy-polling`).
    pub busy_poll: bool,
    /// While a reactor's own work fills at least half of its time, it polls on for this long
    /// without sleeping once it runs out of work, so that the next event finds it awake instead
    /// of having to wake it (see `reactor::spin`); zero never spins.
    pub idle_spin: Duration,
    /// How many other backends a failed request may still be sent to.
    pub retries: u32,
    /// Peers that must open their connections with a PROXY protocol header (v1 or v2); empty
    /// when `proxy_protocol` is off.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub backends: Vec<BackendConfig>,
    /// Backends found in DNS (`[[backend]] discover = ...`), re-resolved off the reactor.
    pub discover: Vec<DiscoverConfig>,
    pub discovery: DiscoverySettings,
    /// `[tls]`: the HTTPS listener, when configured.
    pub tls: Option<TlsConfig>,
    /// `[http2]`.
    pub http2: Http2Config,
    /// `hash_key`: what `consistent_hash` hashes (the pool `default`'s, and every pool's
    /// unless it sets its own).
    pub hash_key: Option<HashKey>,
    /// `sticky`: cookie affinity, likewise the default of every pool.
    pub sticky: Option<StickyConfig>,
    /// `slow_start`: zero when off; likewise the default of every pool.
    pub slow_start: Duration,
    /// `[[pool]]` tables, in file order (the pool `default` is in `backends` and `discover`,
    /// unless a `[[pool]]` is named `default`); see [`Config::pools_in_effect`].
    pub pools: Vec<PoolConfig>,
    /// `[[route]]` tables, in file order: the first that matches a request wins.
    pub routes: Vec<RouteConfig>,
}

/// `[tls]`: TLS termination on a listener of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
    pub redirect_http: bool,
    pub session_cache: usize,
    pub session_tickets: bool,
    /// `h2` is offered by ALPN besides `http/1.1` (`http2.enabled`).
    pub alpn_h2: bool,
    /// At least one; the first is the default for clients without SNI or with an unknown name.
    pub certificates: Vec<CertificateConfig>,
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// One `[[tls.certificate]]`: paths as resolved (relative ones from the config file's folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A `[[backend]]` whose addresses come from DNS: every address in the answer is a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverConfig {
    /// Prefix of the backends' names: `name@address`.
    pub name: String,
    /// The pool the backends found join.
    pub pool: String,
    pub backup: bool,
    pub target: DiscoverTarget,
    pub weight: u32,
    pub tls: Option<BackendTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverTarget {
    /// A and AAAA records of `host`, each with `port` (a Kubernetes headless Service).
    Host { host: String, port: u16 },
    /// SRV records (Consul, Kubernetes named ports): targets and ports from the answer.
    Srv(String),
}

/// `[discovery]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    pub resolve_interval: Duration,
    pub timeout: Duration,
    /// DNS servers asked in turn; by default the `nameserver`s of /etc/resolv.conf.
    pub resolvers: Vec<SocketAddr>,
}

/// `discovery.resolve_interval`: how often discovered names are looked up again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// `discovery.timeout`: how long one DNS query may take.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for DiscoverySettings {
    fn default() -> DiscoverySettings {
        DiscoverySettings {
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            timeout: DEFAULT_RESOLVE_TIMEOUT,
            resolvers: Vec::new(),
        }
    }
}

/// `[health]`: active health checks of the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect: StatusSet,
    /// Probe with the gRPC health service (`grpc.health.v1.Health/Check`): passes when it
    /// answers SERVING. Only for `protocol = "h2"` pools.
    pub grpc: bool,
}

/// A set of HTTP statuses, written like `"2xx"`, `"200"`, `"200-399"` or `"2xx, 404"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
}

impl StatusSet {
    /// Every 2xx status.
    pub fn successful() -> StatusSet {
        StatusSet {
            ranges: vec![(200, 299)],
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    pub fn parse(text: &str) -> Result<StatusSet, String> {
        let bad = |item: &str| {
            format!(
                "invalid status {item:?}: expected statuses like \"2xx\", \"200\" or \"200-399\""
            )
        };
        let status = |s: &str| -> Option<u16> {
            let n: u16 = s.trim().parse().ok()?;
            (100..=599).contains(&n).then_some(n)
        };
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim) {
            let range =
                if let Some(class) = item.strip_suffix("xx").or_else(|| item.strip_suffix("XX")) {
                    match class.parse::<u16>() {
                        Ok(c @ 1..=5) if class.len() == 1 => (c * 100, c * 100 + 99),
                        _ => return Err(bad(item)),
                    }
                } else if let Some((lo, hi)) = item.split_once('-') {
                    match (status(lo), status(hi)) {
                        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                        _ => return Err(bad(item)),
                    }
                } else {
                    let n = status(item).ok_or_else(|| bad(item))?;
                    (n, n)
                };
            ranges.push(range);
        }
        Ok(StatusSet { ranges })
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else if lo % 100 == 0 && hi == lo + 99 {
                write!(f, "{}xx", lo / 100)?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// `[timeouts]`: all greater than zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub client_header: Duration,
    pub client_idle: Duration,
    pub backend_response: Duration,
    pub backend_idle: Duration,
    pub tunnel: Duration,
    pub drain: Duration,
}

/// `[limits]`: `max_target_bytes < max_header_bytes` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_target_bytes: usize,
    pub pool_max_idle: usize,
}

/// One `[[backend]]`; names are unique within a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    /// `tls = true`: the backend is reached over TLS.
    pub tls: Option<BackendTls>,
    /// `backup = true`: takes requests only when no other backend of its pool can.
    pub backup: bool,
}

/// TLS to a backend (`[[backend]] tls = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// `tls_server_name`: the name sent by SNI and checked in the backend's certificate;
    /// defaults to the host of `address` as written (a name, or an IP address).
    pub server_name: String,
    /// `tls_ca`: a PEM bundle of the CAs trusted for this backend; by default the system's
    /// roots.
    pub ca: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            admin: DEFAULT_ADMIN,
            admin_token: None,
            algorithm: DEFAULT_ALGORITHM,
            workers: DEFAULT_WORKERS,
            log_level: DEFAULT_LOG_LEVEL,
            access_log: DEFAULT_ACCESS_LOG,
            access_log_format: AccessLogFormat::Text,
            access_log_path: None,
            request_id: false,
            tcp_defer_accept: false,
            tcp_smart_accept: true,
            busy_poll: DEFAULT_BUSY_POLL,
            idle_spin: DEFAULT_IDLE_SPIN,
            retries: DEFAULT_RETRIES,
            proxy_protocol_from: Vec::new(),
            health: HealthConfig::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            backends: Vec::new(),
            discover: Vec::new(),
            discovery: DiscoverySettings::default(),
            tls: None,
            http2: Http2Config::default(),
            hash_key: None,
            sticky: None,
            slow_start: Duration::ZERO,
            pools: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: DEFAULT_HEALTH_PATH.to_string(),
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_HEALTH_RISE,
            fall: DEFAULT_HEALTH_FALL,
            expect: StatusSet::successful(),
            grpc: false,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_TIMEOUT_CONNECT,
            client_header: DEFAULT_TIMEOUT_CLIENT_HEADER,
            client_idle: DEFAULT_TIMEOUT_CLIENT_IDLE,
            backend_response: DEFAULT_TIMEOUT_BACKEND_RESPONSE,
            backend_idle: DEFAULT_TIMEOUT_BACKEND_IDLE,
            tunnel: DEFAULT_TIMEOUT_TUNNEL,
            drain: DEFAULT_TIMEOUT_DRAIN,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_target_bytes: DEFAULT_MAX_TARGET_BYTES,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
        }
    }
}

impl Config {
    /// Parses and validates a configuration file's text.
    ///
    /// Backend host names are resolved here, once. A file without backends
    /// is accepted because `--backend` may supply them; see [`Config::apply`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_in(text, Path::new("."))
    }

    /// As [`Config::from_toml_str`], with relative file paths (certificates) taken from `dir`.
    pub fn from_toml_str_in(text: &str, dir: &Path) -> Result<Config, ConfigError> {
        let raw = raw::parse(text)?;
        validate::build(raw, text, dir)
    }

    /// Reads and validates a configuration file; every error names `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, &e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str_in(&text, dir).map_err(|e| e.in_file(path))
    }
}
