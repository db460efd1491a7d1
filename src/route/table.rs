//! The routing table a reactor consults for each request head: the `[[route]]` rules resolved
//! to pool indexes, the pool of requests no rule takes, and what each pool's affinity needs from
//! a request (the hash key, the sticky cookie's name). Rebuilt on every reload.

use crate::config::{HashKey, RouteAction, RouteConfig};

use super::index::Index;
use super::{Conditions, PathMatch, Request};

/// What a rule does with the requests it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// To a backend of pool `pool`; `strip` bytes of the path (the matched prefix) are cut.
    Forward { pool: usize, strip: usize },
    /// Answered by the balancer: `status`, `Location: {location}{path and query}`.
    Redirect {
        location: String,
        status: u16,
        strip: usize,
    },
}

/// What the table decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'t> {
    /// `route` is the matching rule's index, `None` for the default pool.
    Forward {
        route: Option<usize>,
        pool: usize,
        strip: usize,
    },
    Redirect {
        route: usize,
        location: &'t str,
        status: u16,
        strip: usize,
    },
    /// No rule matched and there is no default pool: 404.
    NoRoute,
}

/// What a pool's affinity reads from a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AffinitySpec {
    /// The pool's name, for the logs.
    pub pool: String,
    pub hash_key: Option<HashKey>,
    /// The sticky cookie's name.
    pub sticky_cookie: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    conditions: Vec<Conditions>,
    /// The rules as bitmasks, when there are few enough of them (else they are tried in turn).
    index: Option<Index>,
    actions: Vec<Action>,
    names: Vec<String>,
    default_pool: Option<usize>,
    /// By pool index; pools without affinity have the default spec.
    affinity: Vec<AffinitySpec>,
}

impl Table {
    /// Every request to pool 0: setups without routes, and tests.
    pub fn single_pool() -> Table {
        Table {
            default_pool: Some(0),
            ..Table::default()
        }
    }

    /// Resolves `routes` with `pool_index` (pool names to indexes; a validated config names
    /// only existing pools, and a rule whose pool is unknown anyway is left out). `affinity`
    /// gives each pool's needs by index.
    pub fn build(
        routes: &[RouteConfig],
        pool_index: impl Fn(&str) -> Option<usize>,
        default_pool: Option<usize>,
        affinity: Vec<AffinitySpec>,
    ) -> Table {
        let mut table = Table {
            default_pool,
            affinity,
            ..Table::default()
        };
        for route in routes {
            let strip_len = |strip: bool| match (&route.conditions.path, strip) {
                (Some(PathMatch::Prefix(p)), true) => p.len(),
                _ => 0,
            };
            let action = match &route.action {
                RouteAction::Forward { pool, strip_prefix } => match pool_index(pool) {
                    Some(pool) => Action::Forward {
                        pool,
                        strip: strip_len(*strip_prefix),
                    },
                    None => continue,
                },
                RouteAction::Redirect {
                    location,
                    status,
                    strip_prefix,
                } => Action::Redirect {
                    location: location.trim_end_matches('/').to_string(),
                    status: *status,
                    strip: strip_len(*strip_prefix),
                },
            };
            table.conditions.push(route.conditions.clone());
            table.actions.push(action);
            table.names.push(route.name.clone());
        }
        table.index = Index::build(&table.conditions);
        table
    }

    /// The decision for `req`: the first rule that matches, else the default pool.
    pub fn decide(&self, req: &Request<'_>) -> Decision<'_> {
        let first = match &self.index {
            Some(index) => index.first_match(req),
            None => super::first_match(&self.conditions, req),
        };
        match first {
            Some(route) => match &self.actions[route] {
                Action::Forward { pool, strip } => Decision::Forward {
                    route: Some(route),
                    pool: *pool,
                    strip: *strip,
                },
                Action::Redirect {
                    location,
                    status,
                    strip,
                } => Decision::Redirect {
                    route,
                    location,
                    status: *status,
                    strip: *strip,
                },
            },
            None => match self.default_pool {
                Some(pool) => Decision::Forward {
                    route: None,
                    pool,
                    strip: 0,
                },
                None => Decision::NoRoute,
            },
        }
    }

    /// No rules: every request goes to the default pool.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Where requests go when no rule matches; what every request gets with no rules.
    pub fn default_pool(&self) -> Option<usize> {
        self.default_pool
    }

    pub fn route_name(&self, route: usize) -> Option<&str> {
        self.names.get(route).map(String::as_str)
    }

    /// The name of pool `pool`, for the logs.
    pub fn pool_name(&self, pool: usize) -> Option<&str> {
        self.affinity
            .get(pool)
            .map(|a| a.pool.as_str())
            .filter(|name| !name.is_empty())
    }

    pub fn affinity(&self, pool: usize) -> Option<&AffinitySpec> {
        self.affinity.get(pool)
    }
}
