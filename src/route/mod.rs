//! Routing rules (issue #12): which pool a request goes to, by host, path, method and header,
//! the first matching rule in file order winning; and the check that finds a rule no request
//! can ever reach because an earlier one catches everything it would.
//!
//! Pure and allocation-free per request: a rule is a few byte comparisons (no regex), so twenty
//! rules cost about what parsing one header does. [`Table`] is what a reactor holds: the rules
//! of `[[route]]` resolved to pools, consulted by the request head's parser.

mod index;
mod table;

pub use table::{Action, AffinitySpec, Decision, Table};

use std::sync::{Arc, RwLock};

use crate::config::RouteConfig;

/// The `[[route]]` tables in effect, as the admin API shows them: replaced by every reload,
/// read by the management thread. The reactors route with their own [`Table`]s, never this.
#[derive(Debug, Default)]
pub struct Published {
    routes: RwLock<Arc<Vec<RouteConfig>>>,
}

impl Published {
    pub fn new(routes: &[RouteConfig]) -> Published {
        Published {
            routes: RwLock::new(Arc::new(routes.to_vec())),
        }
    }

    pub fn replace(&self, routes: &[RouteConfig]) {
        // A panicked writer left a whole list behind: still a valid one to show.
        let mut slot = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_slice() != routes {
            *slot = Arc::new(routes.to_vec());
        }
    }

    pub fn get(&self) -> Arc<Vec<RouteConfig>> {
        Arc::clone(&self.routes.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How a rule matches the request's host (case-insensitive, port ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`, stored lower case.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` with at least one label before it;
    /// stored as the suffix with its dot, lower case.
    Wildcard(String),
}

/// How a rule matches the request's path (the target up to `?`, compared byte for byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

/// One `[[route]]`'s conditions; an absent one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// Upper case, as methods are compared exactly (RFC 9110 §9.1: they are case-sensitive).
    pub methods: Option<Vec<String>>,
    /// Name lower case; value compared exactly.
    pub header: Option<(String, String)>,
}

/// What a request presents to the rules, its host and path taken apart once for all of them.
pub struct Request<'a> {
    /// The Host's name, port cut off.
    host: Option<&'a [u8]>,
    /// The target's path, query cut off.
    path: &'a [u8],
    method: &'a [u8],
    header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// `target` as sent (origin-form `/a/b?c`, or absolute-form `http://h/a/b?c`); `header`
    /// gives a header's value by its lower-case name (the first one, if several).
    pub fn new(
        host: Option<&'a [u8]>,
        target: &'a [u8],
        method: &'a [u8],
        header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Request<'a> {
        Request {
            host: host.map(host_name),
            path: path_of(target),
            method,
            header,
        }
    }
}

impl HostMatch {
    /// `"*.example.com"` or `"Example.com"` as written in the file.
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let text = text.trim().to_ascii_lowercase();
        let valid = |name: &str| {
            !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        match text.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(HostMatch::Wildcard(format!(".{rest}"))),
            None if valid(&text) => Ok(HostMatch::Exact(text)),
            _ => Err(format!(
                "{text:?} is not a host name like \"api.example.com\" or \"*.example.com\""
            )),
        }
    }

    #[inline]
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            HostMatch::Exact(want) => name.eq_ignore_ascii_case(want.as_bytes()),
            HostMatch::Wildcard(suffix) => {
                name.len() > suffix.len()
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }

    /// Every host this one matches is also matched by `self`.
    fn covers(&self, other: &HostMatch) -> bool {
        match (self, other) {
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            (HostMatch::Wildcard(s), HostMatch::Exact(b)) => b.len() > s.len() && b.ends_with(s),
            (HostMatch::Wildcard(a), HostMatch::Wildcard(b)) => b.ends_with(a.as_str()),
            (HostMatch::Exact(_), HostMatch::Wildcard(_)) => false,
        }
    }
}

impl PathMatch {
    #[inline]
    fn matches(&self, path: &[u8]) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            PathMatch::Exact(p) => path == p.as_bytes(),
        }
    }

    fn covers(&self, other: &PathMatch) -> bool {
        match (self, other) {
            (PathMatch::Prefix(a), PathMatch::Prefix(b) | PathMatch::Exact(b)) => {
                b.starts_with(a.as_str())
            }
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
        }
    }
}

/// A Host value without its port (`[::1]:80` keeps its brackets).
fn host_name(host: &[u8]) -> &[u8] {
    let host = host.trim_ascii();
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// The path of a target: origin-form up to `?`; absolute-form from its first `/` after the
/// authority (`/` when it has none).
pub fn path_of(target: &[u8]) -> &[u8] {
    // Origin-form (nearly every request) needs no search for a scheme.
    let absolute = target.first() != Some(&b'/');
    let target = match absolute.then(|| target.windows(3).position(|w| w == b"://")) {
        Some(Some(scheme_end)) => {
            let rest = &target[scheme_end + 3..];
            match rest.iter().position(|&b| b == b'/' || b == b'?') {
                Some(i) if rest[i] == b'/' => &rest[i..],
                _ => b"/",
            }
        }
        _ => target,
    };
    match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => &target[..end],
        None => target,
    }
}

impl Conditions {
    pub fn matches(&self, req: &Request<'_>) -> bool {
        if let Some(host) = &self.host {
            if !req.host.is_some_and(|h| host.matches(h)) {
                return false;
            }
        }
        if let Some(path) = &self.path {
            if !path.matches(req.path) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.as_bytes() == req.method) {
                return false;
            }
        }
        if let Some((name, value)) = &self.header {
            if (req.header)(name) != Some(value.as_bytes()) {
                return false;
            }
        }
        true
    }

    /// Every request `later` matches, `self` matches too: placed before it, `self` leaves it
    /// nothing (a config error: the operator meant something else).
    pub fn shadows(&self, later: &Conditions) -> bool {
        let host = match (&self.host, &later.host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.covers(b),
        };
        let path = match (&self.path, &later.path) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.covers(b),
        };
        let methods = match (&self.methods, &later.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
        };
        let header = match (&self.header, &later.header) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a == b,
        };
        host && path && methods && header
    }
}

/// The index of the first rule that matches, if any (the request then goes to the default pool).
pub fn first_match(rules: &[Conditions], req: &Request<'_>) -> Option<usize> {
    rules.iter().position(|r| r.matches(req))
}

/// The first rule that an earlier one shadows, with the earlier one's index.
pub fn first_shadowed(rules: &[Conditions]) -> Option<(usize, usize)> {
    rules.iter().enumerate().skip(1).find_map(|(i, later)| {
        rules[..i]
            .iter()
            .position(|earlier| earlier.shadows(later))
            .map(|earlier| (i, earlier))
    })
}

#[cfg(test)]
mod tests;
