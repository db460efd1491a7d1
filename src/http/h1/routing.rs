//! What routing needs from a request head, read while the head is parsed: the rule it matches
//! (host, path, method, a header), and its pool's affinity inputs: the hash of the pool's
//! `hash_key`, the backend its sticky cookie names.

use std::net::IpAddr;

use crate::balance::consistent_hash::{hash_ip, hash_key};
use crate::balance::sticky;
use crate::config::HashKey;
use crate::http::trim_ows;
use crate::route::{self, Decision, Table};

/// Where a request goes, as decided from its head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// The index of the `[[route]]` that matched; `None` for the default pool.
    pub route: Option<usize>,
    pub target: RouteTarget,
    /// The hash of the pool's `hash_key`, when the request has that key.
    pub key: Option<u64>,
    /// The backend id its sticky cookie names, when it sent a well-formed one.
    pub sticky: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RouteTarget {
    Pool(usize),
    /// Answered by the balancer with this status and `Location`.
    Redirect {
        status: u16,
        location: String,
    },
    /// No route, no default pool: 404.
    #[default]
    NoRoute,
}

/// The headers of a parsed head, by name.
pub(super) struct Headers<'h, 'b>(pub(super) &'h [httparse::Header<'b>]);

impl<'b> Headers<'_, 'b> {
    /// The first value of the header `name` (any case), trimmed.
    pub(super) fn first(&self, name: &str) -> Option<&'b [u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| trim_ows(h.value))
    }

    /// The value of cookie `name` in the `Cookie` headers (RFC 6265 §5.4: `a=1; b=2`); names
    /// compare exactly, as browsers send them back as set.
    pub(super) fn cookie(&self, name: &str) -> Option<&'b [u8]> {
        self.0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = trim_ows(pair);
                let eq = pair.iter().position(|&b| b == b'=')?;
                (trim_ows(&pair[..eq]) == name.as_bytes()).then(|| {
                    let value = trim_ows(&pair[eq + 1..]);
                    // A quoted value is the same value (RFC 6265 §4.1.1).
                    value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value)
                })
            })
    }
}

/// Routes a request: `host` is its Host (or the absolute target's authority), `target` as sent,
/// `origin` the part of it forwarded (path and query).
pub(super) fn route(
    table: &Table,
    host: Option<&[u8]>,
    target: &[u8],
    origin: &[u8],
    method: &[u8],
    headers: &Headers<'_, '_>,
    client: IpAddr,
) -> (Routed, usize) {
    let lookup = |name: &str| headers.first(name);
    // Without rules there is nothing to take the request apart for.
    let decision = match table.default_pool() {
        Some(pool) if table.is_empty() => Decision::Forward {
            route: None,
            pool,
            strip: 0,
        },
        _ => table.decide(&route::Request::new(host, target, method, &lookup)),
    };
    match decision {
        Decision::Forward { route, pool, strip } => {
            let mut routed = Routed {
                route,
                target: RouteTarget::Pool(pool),
                key: None,
                sticky: None,
            };
            if let Some(spec) = table.affinity(pool) {
                routed.key = spec.hash_key.as_ref().and_then(|k| match k {
                    HashKey::ClientIp => Some(hash_ip(client)),
                    HashKey::Header(name) => headers.first(name).map(hash_key),
                    HashKey::Cookie(name) => headers.cookie(name).map(hash_key),
                    HashKey::Uri => Some(hash_key(target)),
                });
                routed.sticky = spec
                    .sticky_cookie
                    .as_deref()
                    .and_then(|name| headers.cookie(name))
                    .and_then(sticky::parse);
            }
            (routed, strip)
        }
        Decision::Redirect {
            route,
            location,
            status,
            strip,
        } => {
            let rest = stripped(origin, strip);
            let mut url = String::with_capacity(location.len() + rest.len() + 1);
            url.push_str(location);
            if rest.first() != Some(&b'/') {
                url.push('/');
            }
            // The target passed httparse's token check: visible ASCII, nothing to escape.
            url.push_str(&String::from_utf8_lossy(rest));
            let routed = Routed {
                route: Some(route),
                target: RouteTarget::Redirect {
                    status,
                    location: url,
                },
                key: None,
                sticky: None,
            };
            (routed, 0)
        }
        Decision::NoRoute => (Routed::default(), 0),
    }
}

/// `origin` without its first `strip` bytes (a matched prefix), when it does start with a path.
pub(super) fn stripped(origin: &[u8], strip: usize) -> &[u8] {
    if strip > 0 && origin.first() == Some(&b'/') && origin.len() >= strip {
        &origin[strip..]
    } else {
        origin
    }
}
