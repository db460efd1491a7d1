//! The defaults of every top-level, `[health]`, `[timeouts]`, `[limits]` and `[tls]` key, and
//! the bounds the validation holds them to; each constant names its key.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use log::LevelFilter;

use super::{Algorithm, TlsVersion};

/// `listen`: where client connections are accepted.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8000));
/// `admin`: where the management API and dashboard are served.
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8004));
/// `algorithm`: how a backend is picked for each request.
pub const DEFAULT_ALGORITHM: Algorithm = Algorithm::RoundRobin;
/// `workers`: number of reactor threads.
pub const DEFAULT_WORKERS: usize = 1;
/// `log_level`: most verbose level that is logged.
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::Info;
/// `access_log`: whether each request produces one log line.
pub const DEFAULT_ACCESS_LOG: bool = true;
/// `busy_poll`: whether the reactors poll without ever sleeping.
pub const DEFAULT_BUSY_POLL: bool = false;
/// `idle_spin`: how long a busy reactor goes on polling, out of work, before it sleeps.
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(50);
/// The longest `idle_spin`: beyond it, spinning is `busy_poll` under another name.
pub const MAX_IDLE_SPIN: Duration = Duration::from_millis(10);

/// `health.path`: the path probed with `GET` on each backend.
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// `health.interval`: time between two probes of the same backend.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// `health.timeout`: a probe with no complete answer by then counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// `health.rise`: consecutive successful probes that bring a backend up.
pub const DEFAULT_HEALTH_RISE: u32 = 2;
/// `health.fall`: consecutive failed probes that take a backend down.
pub const DEFAULT_HEALTH_FALL: u32 = 2;
/// `health.expect`: which probe statuses pass ("2xx").
pub const DEFAULT_HEALTH_EXPECT: &str = "2xx";
/// `retries`: how many more backends a failed request may be sent to (2, so three tries).
pub const DEFAULT_RETRIES: u32 = 2;

/// `timeouts.connect`: limit on establishing a backend connection.
pub const DEFAULT_TIMEOUT_CONNECT: Duration = Duration::from_secs(2);
/// `timeouts.client_header`: the whole request head must arrive within this.
pub const DEFAULT_TIMEOUT_CLIENT_HEADER: Duration = Duration::from_secs(10);
/// `timeouts.client_idle`: keep-alive idle time between requests, and the
/// longest silence while reading a request body or writing to a client.
pub const DEFAULT_TIMEOUT_CLIENT_IDLE: Duration = Duration::from_secs(60);
/// `timeouts.backend_response`: longest silence from a backend while a
/// response is expected, or while it takes no byte of a request body.
pub const DEFAULT_TIMEOUT_BACKEND_RESPONSE: Duration = Duration::from_secs(30);
/// `timeouts.backend_idle`: how long an idle pooled backend connection is kept.
pub const DEFAULT_TIMEOUT_BACKEND_IDLE: Duration = Duration::from_secs(30);
/// `timeouts.tunnel`: idle timeout of an upgraded (WebSocket) tunnel.
pub const DEFAULT_TIMEOUT_TUNNEL: Duration = Duration::from_secs(3600);
/// `timeouts.drain`: how long a graceful stop (SIGTERM) waits for requests in flight.
pub const DEFAULT_TIMEOUT_DRAIN: Duration = Duration::from_secs(30);

/// `limits.max_connections`: concurrent client connections accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `limits.max_header_bytes`: request head size limit (larger gets 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32_768;
/// `limits.max_headers`: header count limit (more gets 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// `limits.max_target_bytes`: request target length limit (longer gets 414).
pub const DEFAULT_MAX_TARGET_BYTES: usize = 8192;
/// `limits.pool_max_idle`: idle keep-alive connections kept per backend, by all
/// the reactors together; 0 disables connection reuse.
pub const DEFAULT_POOL_MAX_IDLE: usize = 64;
/// Smallest accepted `limits.max_header_bytes`: below this, ordinary browser
/// requests would already be rejected.
pub const MIN_MAX_HEADER_BYTES: usize = 1024;
/// Smallest accepted `limits.max_target_bytes`: below this, ordinary request
/// targets would already be rejected.
pub const MIN_MAX_TARGET_BYTES: usize = 16;

/// `tls.listen`: where HTTPS connections are accepted (when `[tls]` is present).
pub const DEFAULT_TLS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8443));
/// `tls.min_version`: the oldest TLS version accepted.
pub const DEFAULT_TLS_MIN_VERSION: TlsVersion = TlsVersion::Tls12;
/// `tls.handshake_timeout`: a handshake not done by then is closed.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `tls.redirect_http`: whether the plain listener answers 308 to `https://`.
pub const DEFAULT_TLS_REDIRECT_HTTP: bool = false;
/// `tls.session_cache`: TLS sessions remembered for resumption by session ID (0: none).
pub const DEFAULT_TLS_SESSION_CACHE: usize = 20_000;
/// `tls.session_tickets`: whether clients get tickets to resume with (TLS 1.2 and 1.3).
pub const DEFAULT_TLS_SESSION_TICKETS: bool = true;

/// `backend.weight`: relative share of traffic (used by weighted algorithms).
pub const DEFAULT_BACKEND_WEIGHT: u32 = 1;
