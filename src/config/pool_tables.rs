//! `[[pool]]` tables and the balancing policy keys (`algorithm`, `hash_key`, `sticky`,
//! `slow_start`) that the top level and every pool share: their raw shape and validation.
//!
//! A pool inherits each key it leaves out from the top level, so the rules that tie keys
//! together (`consistent_hash` needs a `hash_key`; `hash_key` means nothing without it;
//! slow start would move hashed keys around) are checked on the values in effect, and an error
//! says where the inherited half came from.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::backends::SeenNames;
use super::duration::parse_duration;
use super::error::{line_of, ConfigError};
use super::raw::{RawBackend, RawHealth, RawSticky};
use super::validate::Values;
use super::{
    Algorithm, BackendProtocol, HashKey, HealthConfig, PoolConfig, StickyConfig, DEFAULT_ALGORITHM,
    DEFAULT_POOL, DEFAULT_STICKY_TTL,
};

/// `sticky.cookie` when left out.
pub const DEFAULT_STICKY_COOKIE: &str = "lb_srv";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub name: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<Algorithm>>,
    pub hash_key: Option<Spanned<String>>,
    pub sticky: Option<Spanned<RawSticky>>,
    pub slow_start: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub protocol: Option<Spanned<BackendProtocol>>,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub timeouts: RawPoolTimeouts,
    #[serde(default)]
    pub backend: Vec<Spanned<RawBackend>>,
}

/// The timeouts that belong to a pool's backends; the client-side ones stay global.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoolTimeouts {
    pub connect: Option<Spanned<String>>,
    pub backend_response: Option<Spanned<String>>,
}

/// The policy keys of one table, as written.
pub(super) struct RawPolicy<'a> {
    pub algorithm: Option<&'a Spanned<Algorithm>>,
    pub hash_key: Option<&'a Spanned<String>>,
    pub sticky: Option<&'a Spanned<RawSticky>>,
    pub slow_start: Option<&'a Spanned<String>>,
}

/// The policy keys as validated.
pub(super) struct Policy {
    pub algorithm: Algorithm,
    pub hash_key: Option<HashKey>,
    pub sticky: Option<StickyConfig>,
    pub slow_start: Duration,
}

/// What a pool takes from the top level for the keys it leaves out.
pub(super) struct PoolDefaults<'a> {
    pub policy: &'a Policy,
    pub health: &'a HealthConfig,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub backend_response_timeout: Duration,
}

impl Values<'_> {
    /// The policy keys of the table whose keys start with `prefix` (`""`, `pool[0].`), at
    /// `line`; `inherited` gives the values of keys left out (none at the top level).
    pub(super) fn policy(
        &self,
        prefix: &str,
        line: Option<usize>,
        raw: RawPolicy<'_>,
        inherited: Option<&Policy>,
    ) -> Result<Policy, ConfigError> {
        let key = |field: &str| format!("{prefix}{field}");
        let algorithm = match (raw.algorithm, inherited) {
            (Some(a), _) => *a.get_ref(),
            (None, Some(up)) => up.algorithm,
            (None, None) => DEFAULT_ALGORITHM,
        };
        let hashing = algorithm == Algorithm::ConsistentHash;
        let hash_key = match (raw.hash_key, inherited) {
            (Some(k), _) if !hashing => {
                return Err(self.fail(
                    &key("hash_key"),
                    k.span(),
                    format!(
                        "only means something with algorithm = \"consistent_hash\" (this \
                         table's algorithm is {algorithm})"
                    ),
                ));
            }
            (Some(k), _) => Some(
                HashKey::parse(k.get_ref())
                    .map_err(|m| self.fail(&key("hash_key"), k.span(), m))?,
            ),
            (None, _) if !hashing => None,
            (None, Some(up)) => up.hash_key.clone(),
            (None, None) => None,
        };
        if hashing && hash_key.is_none() {
            let message = "consistent_hash needs hash_key = \"client_ip\", \"uri\", \
                           \"header:NAME\" or \"cookie:NAME\": what the ring is keyed by";
            return Err(match raw.algorithm {
                Some(a) => self.fail(&key("algorithm"), a.span(), message),
                None => ConfigError::at_key(&key("algorithm"), line, message),
            });
        }
        let sticky = match (raw.sticky, inherited) {
            (Some(s), _) => Some(self.sticky(&key("sticky"), s)?),
            (None, Some(up)) => up.sticky.clone(),
            (None, None) => None,
        };
        let slow_start = match (raw.slow_start, inherited) {
            (Some(s), _) => parse_duration(s.get_ref())
                .map_err(|m| self.fail(&key("slow_start"), s.span(), m))?,
            (None, Some(up)) => up.slow_start,
            (None, None) => Duration::ZERO,
        };
        if hashing && !slow_start.is_zero() {
            // A ramping weight would move keys to and from the returning backend all along
            // the ramp, the opposite of what hashing is for.
            let message = "slow_start does not work with consistent_hash (ramping a backend's \
                           share would move keys back and forth)";
            return Err(match (raw.slow_start, raw.algorithm) {
                (Some(s), _) => self.fail(&key("slow_start"), s.span(), message),
                (None, Some(a)) => self.fail(
                    &key("algorithm"),
                    a.span(),
                    format!("{message}; the top-level slow_start applies here: set slow_start = \"0s\" in this pool"),
                ),
                (None, None) => ConfigError::at_key(&key("slow_start"), line, message),
            });
        }
        Ok(Policy {
            algorithm,
            hash_key,
            sticky,
            slow_start,
        })
    }

    fn sticky(&self, key: &str, raw: &Spanned<RawSticky>) -> Result<StickyConfig, ConfigError> {
        let s = raw.get_ref();
        let cookie = match &s.cookie {
            Some(c) => {
                let name = c.get_ref().trim();
                if !is_token(name) {
                    return Err(self.fail(
                        &format!("{key}.cookie"),
                        c.span(),
                        "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~",
                    ));
                }
                name.to_string()
            }
            None => DEFAULT_STICKY_COOKIE.to_string(),
        };
        let ttl = match &s.ttl {
            Some(t) => Some(self.duration(&format!("{key}.ttl"), Some(t), Duration::ZERO)?),
            None => DEFAULT_STICKY_TTL,
        };
        Ok(StickyConfig { cookie, ttl })
    }

    /// The `[[pool]]` tables in file order. `top_level_backends`: the top-level list has
    /// members, which makes it the pool `default` (so no table may take that name).
    pub(super) fn pools(
        &self,
        raw: &[Spanned<RawPool>],
        globals: &PoolDefaults<'_>,
        top_level_backends: bool,
        seen: &mut SeenNames,
    ) -> Result<Vec<PoolConfig>, ConfigError> {
        let mut pools: Vec<PoolConfig> = Vec::with_capacity(raw.len());
        let mut lines: Vec<usize> = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            let prefix = format!("pool[{index}].");
            let table_line = line_of(self.text, entry.span().start);
            let p = entry.get_ref();
            let name_key = format!("{prefix}name");
            let Some(name) = &p.name else {
                return Err(ConfigError::at_key(
                    &name_key,
                    Some(table_line),
                    "missing: every [[pool]] needs a name, which routes use to send requests to it",
                ));
            };
            let name_line = line_of(self.text, name.span().start);
            check_pool_name(name.get_ref()).map_err(|m| self.fail(&name_key, name.span(), m))?;
            let name_text = name.get_ref().clone();
            if let Some(first) = pools.iter().position(|q| q.name == name_text) {
                return Err(self.fail(
                    &name_key,
                    name.span(),
                    format!(
                        "duplicate pool name, already used by pool[{first}] on line {}",
                        lines[first]
                    ),
                ));
            }
            if name_text == DEFAULT_POOL && top_level_backends {
                return Err(self.fail(
                    &name_key,
                    name.span(),
                    "the pool \"default\" is the top-level [[backend]] list; name this pool \
                     otherwise, or move those backends into it",
                ));
            }
            let policy = self.policy(
                &prefix,
                Some(table_line),
                RawPolicy {
                    algorithm: p.algorithm.as_ref(),
                    hash_key: p.hash_key.as_ref(),
                    sticky: p.sticky.as_ref(),
                    slow_start: p.slow_start.as_ref(),
                },
                Some(globals.policy),
            )?;
            let health = self.health(&prefix, &p.health, globals.health)?;
            let retries = self.int(
                &format!("{prefix}retries"),
                p.retries.as_ref(),
                globals.retries,
                0,
            )?;
            let connect_timeout = self.duration(
                &format!("{prefix}timeouts.connect"),
                p.timeouts.connect.as_ref(),
                globals.connect_timeout,
            )?;
            let backend_response_timeout = self.duration(
                &format!("{prefix}timeouts.backend_response"),
                p.timeouts.backend_response.as_ref(),
                globals.backend_response_timeout,
            )?;
            let pool_name = name_text.clone();
            let (backends, discover) = self.backend_list(
                &format!("{prefix}backend"),
                &name_text,
                &p.backend,
                seen,
                |i| format!("{pool_name}-{}", i + 1),
            )?;
            let protocol = p
                .protocol
                .as_ref()
                .map_or(BackendProtocol::Http1, |p| *p.get_ref());
            if let Some(g) = &p.health.grpc {
                if *g.get_ref() && protocol != BackendProtocol::H2 {
                    return Err(self.fail(
                        &format!("{prefix}health.grpc"),
                        g.span(),
                        "the gRPC health check needs protocol = \"h2\" in this pool",
                    ));
                }
            }
            lines.push(name_line);
            pools.push(PoolConfig {
                name: name_text,
                algorithm: policy.algorithm,
                hash_key: policy.hash_key,
                sticky: policy.sticky,
                slow_start: policy.slow_start,
                health,
                retries,
                connect_timeout,
                backend_response_timeout,
                protocol,
                backends,
                discover,
            });
        }
        Ok(pools)
    }
}

/// Pool names appear in URLs of the admin API (`/api/pools/NAME/backends`), in metric labels
/// and in log lines, so they keep to characters that need no escaping in any of them.
fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("must be letters, digits, '-', '_' or '.', like \"api\"".to_string());
    }
    Ok(())
}

/// An RFC 9110 token: header names, methods and cookie names.
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
