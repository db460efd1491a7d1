//! Raw file values -> the validated [`Config`]: defaults filled in, ranges
//! checked, addresses resolved. Every check names its key and line.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::backends::SeenNames;
use super::checks::*;
use super::duration::parse_duration;
use super::error::{line_of, ConfigError};
use super::pool_tables::{PoolDefaults, RawPolicy};
use super::raw::{RawConfig, RawHealth};
use super::*;

pub(super) fn build(raw: RawConfig, text: &str, dir: &Path) -> Result<Config, ConfigError> {
    let v = Values { text, dir };

    let listen = v.address("listen", raw.listen.as_ref(), DEFAULT_LISTEN)?;
    let admin = v.address("admin", raw.admin.as_ref(), DEFAULT_ADMIN)?;
    if conflicting(listen, admin) {
        return Err(match (&raw.admin, &raw.listen) {
            (Some(a), _) => v.fail("admin", a.span(), SAME_ADDRESS),
            (None, Some(l)) => v.fail("listen", l.span(), SAME_ADDRESS),
            // Only reachable if the two default constants ever collide.
            (None, None) => ConfigError::at_key("admin", None, SAME_ADDRESS),
        });
    }

    let admin_token = match &raw.admin_token {
        Some(t)
            if t.get_ref().trim().is_empty()
                || t.get_ref()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(v.fail(
                "admin_token",
                t.span(),
                "must be a non-empty string without spaces",
            ));
        }
        Some(t) => Some(t.get_ref().clone()),
        None => None,
    };
    if admin_token.is_none() && !admin.ip().is_loopback() {
        let message = "the admin API may listen beyond loopback only with admin_token set";
        return Err(match &raw.admin {
            Some(a) => v.fail("admin", a.span(), message),
            None => ConfigError::at_key("admin", None, message),
        });
    }
    let workers = v.int("workers", raw.workers.as_ref(), DEFAULT_WORKERS, 1)?;
    let log_level = match &raw.log_level {
        Some(s) => parse_log_level(s.get_ref()).map_err(|m| v.fail("log_level", s.span(), m))?,
        None => DEFAULT_LOG_LEVEL,
    };
    let access_log = raw.access_log.unwrap_or(DEFAULT_ACCESS_LOG);
    let access_log_format = raw.access_log_format.unwrap_or_default();
    let access_log_path = match &raw.access_log_path {
        Some(p) if p.get_ref().trim().is_empty() => {
            return Err(v.fail("access_log_path", p.span(), "must name a file"))
        }
        Some(p) => Some(std::path::PathBuf::from(p.get_ref())),
        None => None,
    };
    let request_id = raw.request_id.unwrap_or(false);
    let tcp_defer_accept = raw.tcp_defer_accept.unwrap_or(false);
    let tcp_smart_accept = raw.tcp_smart_accept.unwrap_or(true);
    let busy_poll = raw.busy_poll.unwrap_or(DEFAULT_BUSY_POLL);
    let idle_spin = match &raw.idle_spin {
        Some(s) => {
            let d = parse_duration(s.get_ref()).map_err(|m| v.fail("idle_spin", s.span(), m))?;
            if d > MAX_IDLE_SPIN {
                return Err(v.fail(
                    "idle_spin",
                    s.span(),
                    "must be at most 10ms (busy_poll = true never sleeps at all)",
                ));
            }
            d
        }
        None => DEFAULT_IDLE_SPIN,
    };
    let retries = v.int("retries", raw.retries.as_ref(), DEFAULT_RETRIES, 0)?;
    let mut proxy_protocol_from = Vec::new();
    if let Some(list) = &raw.proxy_protocol_from {
        for item in list.get_ref() {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    v.fail(
                        "proxy_protocol_from",
                        list.span(),
                        format!("{item:?} is not an address or a network like \"10.0.0.0/8\""),
                    )
                })?;
            proxy_protocol_from.push(net);
        }
    }
    let proxy_protocol = raw.proxy_protocol.unwrap_or(false);
    if proxy_protocol && proxy_protocol_from.is_empty() {
        return Err(ConfigError::at_key(
            "proxy_protocol_from",
            None,
            "proxy_protocol = true needs the addresses of the proxies allowed to send the header, \
             like proxy_protocol_from = [\"10.0.0.0/8\"]",
        ));
    }
    if !proxy_protocol {
        proxy_protocol_from.clear();
    }

    let health = v.health("", &raw.health, &HealthConfig::default())?;

    let t = &raw.timeouts;
    let timeouts = Timeouts {
        connect: v.duration(
            "timeouts.connect",
            t.connect.as_ref(),
            DEFAULT_TIMEOUT_CONNECT,
        )?,
        client_header: v.duration(
            "timeouts.client_header",
            t.client_header.as_ref(),
            DEFAULT_TIMEOUT_CLIENT_HEADER,
        )?,
        client_idle: v.duration(
            "timeouts.client_idle",
            t.client_idle.as_ref(),
            DEFAULT_TIMEOUT_CLIENT_IDLE,
        )?,
        backend_response: v.duration(
            "timeouts.backend_response",
            t.backend_response.as_ref(),
            DEFAULT_TIMEOUT_BACKEND_RESPONSE,
        )?,
        backend_idle: v.duration(
            "timeouts.backend_idle",
            t.backend_idle.as_ref(),
            DEFAULT_TIMEOUT_BACKEND_IDLE,
        )?,
        tunnel: v.duration("timeouts.tunnel", t.tunnel.as_ref(), DEFAULT_TIMEOUT_TUNNEL)?,
        drain: v.duration("timeouts.drain", t.drain.as_ref(), DEFAULT_TIMEOUT_DRAIN)?,
    };

    let l = &raw.limits;
    let limits = Limits {
        max_connections: v.int(
            "limits.max_connections",
            l.max_connections.as_ref(),
            DEFAULT_MAX_CONNECTIONS,
            1,
        )?,
        max_header_bytes: v.int(
            "limits.max_header_bytes",
            l.max_header_bytes.as_ref(),
            DEFAULT_MAX_HEADER_BYTES,
            MIN_MAX_HEADER_BYTES as i64,
        )?,
        max_headers: v.int(
            "limits.max_headers",
            l.max_headers.as_ref(),
            DEFAULT_MAX_HEADERS,
            1,
        )?,
        max_target_bytes: v.int(
            "limits.max_target_bytes",
            l.max_target_bytes.as_ref(),
            DEFAULT_MAX_TARGET_BYTES,
            MIN_MAX_TARGET_BYTES as i64,
        )?,
        pool_max_idle: v.int(
            "limits.pool_max_idle",
            l.pool_max_idle.as_ref(),
            DEFAULT_POOL_MAX_IDLE,
            0,
        )?,
    };
    // The target is part of the request head, so a target limit at or above
    // the head limit could never trigger its 414 and would be misleading.
    if limits.max_target_bytes >= limits.max_header_bytes {
        return Err(match (&l.max_target_bytes, &l.max_header_bytes) {
            (Some(target), _) => v.fail(
                "limits.max_target_bytes",
                target.span(),
                format!(
                    "must be less than limits.max_header_bytes ({})",
                    limits.max_header_bytes
                ),
            ),
            (None, Some(header)) => v.fail(
                "limits.max_header_bytes",
                header.span(),
                format!(
                    "must be greater than limits.max_target_bytes ({}, the default); \
                     raise it or lower limits.max_target_bytes",
                    limits.max_target_bytes
                ),
            ),
            // Both defaults: the constants themselves are inconsistent.
            (None, None) => ConfigError::at_key(
                "limits.max_target_bytes",
                None,
                "default must be less than the default limits.max_header_bytes",
            ),
        });
    }

    let d = &raw.discovery;
    let discovery = DiscoverySettings {
        resolve_interval: v.duration(
            "discovery.resolve_interval",
            d.resolve_interval.as_ref(),
            DEFAULT_RESOLVE_INTERVAL,
        )?,
        timeout: v.duration(
            "discovery.timeout",
            d.timeout.as_ref(),
            DEFAULT_RESOLVE_TIMEOUT,
        )?,
        resolvers: match &d.resolvers {
            Some(list) => list
                .get_ref()
                .iter()
                .map(|r| {
                    r.parse::<SocketAddr>()
                        .or_else(|_| {
                            r.parse::<std::net::IpAddr>()
                                .map(|ip| SocketAddr::new(ip, 53))
                        })
                        .map_err(|_| {
                            v.fail(
                                "discovery.resolvers",
                                list.span(),
                                format!("{r:?} is not an address like \"127.0.0.1:53\""),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        },
    };
    let mut seen = SeenNames::new();
    let (backends, discover) = v.backend_list(
        "backend",
        DEFAULT_POOL,
        &raw.backend,
        &mut seen,
        default_backend_name,
    )?;
    let policy = v.policy(
        "",
        None,
        RawPolicy {
            algorithm: raw.algorithm.as_ref(),
            hash_key: raw.hash_key.as_ref(),
            sticky: raw.sticky.as_ref(),
            slow_start: raw.slow_start.as_ref(),
        },
        None,
    )?;
    let globals = PoolDefaults {
        policy: &policy,
        health: &health,
        retries,
        connect_timeout: timeouts.connect,
        backend_response_timeout: timeouts.backend_response,
    };
    let top_level_backends = !backends.is_empty() || !discover.is_empty();
    let pools = v.pools(&raw.pool, &globals, top_level_backends, &mut seen)?;
    let routes = v.routes(&raw.route, &pools, top_level_backends)?;

    let http2 = super::http2::build(&v, &raw.http2, limits.max_header_bytes)?;
    let tls = match &raw.tls {
        Some(t) => Some(super::tls::build(&v, t, http2.enabled)?),
        None => None,
    };
    if let Some(t) = &tls {
        if conflicting(t.listen, listen) || conflicting(t.listen, admin) {
            let line = raw.tls.as_ref().map(|t| line_of(text, t.span().start));
            return Err(ConfigError::at_key(
                "tls.listen",
                line,
                "must differ from listen and admin",
            ));
        }
    }

    Ok(Config {
        listen,
        admin,
        admin_token,
        algorithm: policy.algorithm,
        workers,
        log_level,
        access_log,
        access_log_format,
        access_log_path,
        request_id,
        tcp_defer_accept,
        tcp_smart_accept,
        busy_poll,
        idle_spin,
        retries,
        proxy_protocol_from,
        health,
        timeouts,
        limits,
        backends,
        discover,
        discovery,
        tls,
        http2,
        hash_key: policy.hash_key,
        sticky: policy.sticky,
        slow_start: policy.slow_start,
        pools,
        routes,
    })
}

/// Message for `listen` and `admin` sharing a socket, which would make the
/// second bind fail at startup with a less helpful error.
pub(super) const SAME_ADDRESS: &str = "admin and listen must be different addresses";

/// Port 0 means "any free port", so two port-0 addresses never collide.
pub(super) fn conflicting(listen: SocketAddr, admin: SocketAddr) -> bool {
    listen == admin && listen.port() != 0
}

pub(super) struct Values<'a> {
    pub(super) text: &'a str,
    /// Where relative file paths start: the config file's folder.
    pub(super) dir: &'a Path,
}

impl Values<'_> {
    pub(super) fn fail(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::value(self.text, key, span, message)
    }

    pub(super) fn address(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: SocketAddr,
    ) -> Result<SocketAddr, ConfigError> {
        match value {
            Some(s) => resolve_address(s.get_ref()).map_err(|m| self.fail(key, s.span(), m)),
            None => Ok(default),
        }
    }

    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(s) = value else { return Ok(default) };
        let d = parse_duration(s.get_ref()).map_err(|m| self.fail(key, s.span(), m))?;
        if d.is_zero() {
            return Err(self.fail(key, s.span(), "must be greater than zero"));
        }
        Ok(d)
    }

    /// TOML integers are `i64`; they are range-checked here rather than by
    /// serde so the message can state the bound instead of a Rust type name.
    pub(super) fn int<T: IntField>(
        &self,
        key: &str,
        value: Option<&Spanned<i64>>,
        default: T,
        min: i64,
    ) -> Result<T, ConfigError> {
        let Some(n) = value else { return Ok(default) };
        let raw = *n.get_ref();
        if raw < min {
            return Err(self.fail(key, n.span(), format!("must be at least {min}")));
        }
        if raw > T::MAX {
            return Err(self.fail(key, n.span(), format!("must be at most {}", T::MAX)));
        }
        T::try_from(raw)
            .map_err(|_| self.fail(key, n.span(), format!("must be at most {}", T::MAX)))
    }

    /// `[health]`, or a pool's `[pool.health]` (keys prefixed `prefix`), each key left out
    /// taking its value from `defaults`.
    pub(super) fn health(
        &self,
        prefix: &str,
        h: &RawHealth,
        defaults: &HealthConfig,
    ) -> Result<HealthConfig, ConfigError> {
        let key = |field: &str| format!("{prefix}health.{field}");
        Ok(HealthConfig {
            path: match &h.path {
                Some(p) => {
                    check_health_path(p.get_ref())
                        .map_err(|m| self.fail(&key("path"), p.span(), m))?;
                    p.get_ref().clone()
                }
                None => defaults.path.clone(),
            },
            interval: self.duration(&key("interval"), h.interval.as_ref(), defaults.interval)?,
            timeout: self.duration(&key("timeout"), h.timeout.as_ref(), defaults.timeout)?,
            rise: self.int(&key("rise"), h.rise.as_ref(), defaults.rise, 1)?,
            fall: self.int(&key("fall"), h.fall.as_ref(), defaults.fall, 1)?,
            expect: match &h.expect {
                Some(e) => StatusSet::parse(e.get_ref())
                    .map_err(|m| self.fail(&key("expect"), e.span(), m))?,
                None => defaults.expect.clone(),
            },
            grpc: match &h.grpc {
                Some(g) if prefix.is_empty() => {
                    return Err(self.fail(
                        &key("grpc"),
                        g.span(),
                        "only in the [pool.health] of a pool with protocol = \"h2\"",
                    ))
                }
                Some(g) => *g.get_ref(),
                None => false,
            },
        })
    }
}

/// Integer types of validated fields, with their largest value as a TOML
/// integer so range errors can state the bound.
pub(super) trait IntField: TryFrom<i64> {
    const MAX: i64;
}

impl IntField for u32 {
    const MAX: i64 = u32::MAX as i64;
}

impl IntField for usize {
    // On 64-bit targets every non-negative TOML integer fits.
    const MAX: i64 = if usize::BITS >= i64::BITS {
        i64::MAX
    } else {
        usize::MAX as i64
    };
}
