//! `[[route]]` tables: their raw shape and validation into [`RouteConfig`]s.
//!
//! Beyond each key's own check, a route must name a pool that exists, use keys that go
//! together (`strip_prefix` needs `path_prefix`, `status` needs `redirect`), and be reachable:
//! one that an earlier route shadows (catches every request it would) is refused, naming both.

use serde::Deserialize;
use toml::Spanned;

use super::error::{line_of, ConfigError};
use super::pool_tables::is_token;
use super::validate::Values;
use super::{PoolConfig, RouteAction, RouteConfig, DEFAULT_POOL};
use crate::route::{first_shadowed, Conditions, HostMatch, PathMatch};

/// `status` of a `redirect` route when left out.
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub header: Option<Spanned<RawHeader>>,
    pub pool: Option<Spanned<String>>,
    pub redirect: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<bool>>,
    pub status: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub name: Option<Spanned<String>>,
    pub value: Option<Spanned<String>>,
}

impl Values<'_> {
    /// The routes in file order. `pools` are the `[[pool]]` tables; `top_level_backends`
    /// says whether the pool `default` exists without one of them.
    pub(super) fn routes(
        &self,
        raw: &[Spanned<RawRoute>],
        pools: &[PoolConfig],
        top_level_backends: bool,
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        let mut known: Vec<&str> = Vec::with_capacity(pools.len() + 1);
        if top_level_backends || pools.is_empty() || pools.iter().any(|p| p.name == DEFAULT_POOL) {
            known.push(DEFAULT_POOL);
        }
        known.extend(
            pools
                .iter()
                .map(|p| p.name.as_str())
                .filter(|n| *n != DEFAULT_POOL),
        );

        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
        let mut lines = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            let line = line_of(self.text, entry.span().start);
            let route = self.route(index, entry.get_ref(), line, &known)?;
            if let Some(first) = routes.iter().position(|r| r.name == route.name) {
                let key = format!("route[{index}].name");
                let message = format!(
                    "duplicate route name, already used by route[{first}] on line {}",
                    lines[first]
                );
                return Err(match &entry.get_ref().name {
                    Some(n) => self.fail(&key, n.span(), message),
                    None => ConfigError::at_key(&key, Some(line), message),
                });
            }
            routes.push(route);
            lines.push(line);
        }
        let conditions: Vec<Conditions> = routes.iter().map(|r| r.conditions.clone()).collect();
        if let Some((later, earlier)) = first_shadowed(&conditions) {
            return Err(ConfigError::at_key(
                &format!("route[{later}]"),
                Some(lines[later]),
                format!(
                    "can never match: route {:?} (route[{earlier}], line {}) comes first and \
                     takes every request this one would; put the narrower route first",
                    routes[earlier].name, lines[earlier]
                ),
            ));
        }
        Ok(routes)
    }

    fn route(
        &self,
        index: usize,
        r: &RawRoute,
        line: usize,
        known: &[&str],
    ) -> Result<RouteConfig, ConfigError> {
        let key = |field: &str| format!("route[{index}].{field}");
        let name = match &r.name {
            Some(n) => {
                let text = n.get_ref().trim();
                if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.fail(
                        &key("name"),
                        n.span(),
                        "must be a non-empty name without spaces or control characters",
                    ));
                }
                text.to_string()
            }
            None => format!("route[{index}]"),
        };

        let host = match &r.host {
            Some(h) => Some(
                HostMatch::parse(h.get_ref()).map_err(|m| self.fail(&key("host"), h.span(), m))?,
            ),
            None => None,
        };
        let path = match (&r.path_prefix, &r.path) {
            (Some(_), Some(p)) => {
                return Err(self.fail(
                    &key("path"),
                    p.span(),
                    "a route has either path_prefix or path, not both",
                ))
            }
            (Some(p), None) => Some(PathMatch::Prefix(
                check_route_path(p.get_ref())
                    .map_err(|m| self.fail(&key("path_prefix"), p.span(), m))?,
            )),
            (None, Some(p)) => Some(PathMatch::Exact(
                check_route_path(p.get_ref()).map_err(|m| self.fail(&key("path"), p.span(), m))?,
            )),
            (None, None) => None,
        };
        let methods = match &r.methods {
            Some(list) => {
                let fail = |m: String| self.fail(&key("methods"), list.span(), m);
                if list.get_ref().is_empty() {
                    return Err(fail(
                        "must list at least one method; leave methods out to match any".into(),
                    ));
                }
                let mut methods = Vec::with_capacity(list.get_ref().len());
                for m in list.get_ref() {
                    let m = m.trim();
                    if !is_token(m) {
                        return Err(fail(format!("{m:?} is not a method name")));
                    }
                    if m.bytes().any(|b| b.is_ascii_lowercase()) {
                        return Err(fail(format!(
                            "methods are case-sensitive and clients send them in capitals: \
                             write {:?}",
                            m.to_ascii_uppercase()
                        )));
                    }
                    methods.push(m.to_string());
                }
                Some(methods)
            }
            None => None,
        };
        let header = match &r.header {
            Some(h) => Some(self.header(&key("header"), h)?),
            None => None,
        };
        let conditions = Conditions {
            host,
            path,
            methods,
            header,
        };

        let strip_prefix = match &r.strip_prefix {
            Some(s) if *s.get_ref() && r.path_prefix.is_none() => {
                return Err(self.fail(
                    &key("strip_prefix"),
                    s.span(),
                    "needs path_prefix: it is the prefix that is cut from the path",
                ))
            }
            Some(s) => *s.get_ref(),
            None => false,
        };
        if let (Some(status), None) = (&r.status, &r.redirect) {
            return Err(self.fail(
                &key("status"),
                status.span(),
                "only means something with redirect",
            ));
        }
        let action = match (&r.pool, &r.redirect) {
            (Some(_), Some(redirect)) => {
                return Err(self.fail(
                    &key("redirect"),
                    redirect.span(),
                    "a route has either pool or redirect, not both",
                ))
            }
            (Some(pool), None) => {
                let wanted = pool.get_ref().trim();
                if !known.contains(&wanted) {
                    let message = if wanted == DEFAULT_POOL {
                        "there is no pool \"default\": the top-level [[backend]] list is empty"
                            .to_string()
                    } else {
                        format!(
                            "no pool is named {wanted:?}; the pools are: {}",
                            known.join(", ")
                        )
                    };
                    return Err(self.fail(&key("pool"), pool.span(), message));
                }
                RouteAction::Forward {
                    pool: wanted.to_string(),
                    strip_prefix,
                }
            }
            (None, Some(redirect)) => {
                let location = check_redirect(redirect.get_ref())
                    .map_err(|m| self.fail(&key("redirect"), redirect.span(), m))?;
                let status = match &r.status {
                    Some(s) => match *s.get_ref() {
                        n @ (301 | 302 | 303 | 307 | 308) => n as u16,
                        _ => {
                            return Err(self.fail(
                                &key("status"),
                                s.span(),
                                "must be 301, 302, 303, 307 or 308",
                            ))
                        }
                    },
                    None => DEFAULT_REDIRECT_STATUS,
                };
                RouteAction::Redirect {
                    location,
                    status,
                    strip_prefix,
                }
            }
            (None, None) => {
                return Err(ConfigError::at_key(
                    &key("pool"),
                    Some(line),
                    "missing: a route needs pool = \"NAME\" or redirect = \"https://...\"",
                ))
            }
        };
        Ok(RouteConfig {
            name,
            conditions,
            action,
        })
    }

    fn header(&self, key: &str, raw: &Spanned<RawHeader>) -> Result<(String, String), ConfigError> {
        let h = raw.get_ref();
        let line = Some(line_of(self.text, raw.span().start));
        let name = match &h.name {
            Some(n) if is_token(n.get_ref().trim()) => n.get_ref().trim().to_ascii_lowercase(),
            Some(n) => {
                return Err(self.fail(
                    &format!("{key}.name"),
                    n.span(),
                    "must be a header name like \"X-Canary\"",
                ))
            }
            None => {
                return Err(ConfigError::at_key(
                    &format!("{key}.name"),
                    line,
                    "missing: header = { name = \"X-Canary\", value = \"1\" }",
                ))
            }
        };
        let value =
            match &h.value {
                Some(v) if v.get_ref().chars().any(|c| c.is_control()) => {
                    return Err(self.fail(
                        &format!("{key}.value"),
                        v.span(),
                        "must not contain control characters",
                    ))
                }
                // Header values reach the rules without the whitespace around them.
                Some(v) => v.get_ref().trim().to_string(),
                None => return Err(ConfigError::at_key(
                    &format!("{key}.value"),
                    line,
                    "missing: header = { name = \"X-Canary\", value = \"1\" } (compared exactly)",
                )),
            };
        Ok((name, value))
    }
}

/// Paths are compared byte for byte with the request's path, which never holds a query,
/// a fragment or whitespace.
fn check_route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must start with '/', like \"/api/\"".to_string());
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err("must be a path without spaces, control characters, '?' or '#'".to_string());
    }
    Ok(path.to_string())
}

/// The redirect is a prefix that the request's path and query are appended to, so it is an
/// absolute `http(s)://` URL with a host and no query or fragment; a trailing `/` is dropped
/// so that `https://a/` + `/x` is not `https://a//x`.
fn check_redirect(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an absolute URL starting with https:// or http://")?;
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        return Err("must not contain spaces, quotes or control characters".to_string());
    }
    if url.contains('?') || url.contains('#') {
        return Err(
            "must not hold a query or fragment: the request's own path and query are appended"
                .to_string(),
        );
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("must name a host, like \"https://www.example.com\"".to_string());
    }
    Ok(url.trim_end_matches('/').to_string())
}
