//! The file exactly as written: TOML deserialized into plain serde structs.
//!
//! Nothing here is validated beyond TOML types. Values stay strings and
//! `i64`s wrapped in [`Spanned`] so that the validation step can point at
//! the line of a value that is well-typed but wrong. Every key is optional
//! here (except a backend's `address`): defaults are applied during
//! validation, where they are documented as `DEFAULT_*` constants.

use serde::Deserialize;
use toml::Spanned;

use super::error::{line_of, ConfigError};
use super::Algorithm;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<Algorithm>>,
    pub workers: Option<Spanned<i64>>,
    pub log_level: Option<Spanned<String>>,
    pub access_log: Option<bool>,
    pub access_log_format: Option<super::AccessLogFormat>,
    pub access_log_path: Option<Spanned<String>>,
    pub request_id: Option<bool>,
    pub tcp_defer_accept: Option<bool>,
    pub tcp_smart_accept: Option<bool>,
    pub busy_poll: Option<bool>,
    pub idle_spin: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub proxy_protocol: Option<bool>,
    pub proxy_protocol_from: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub discovery: RawDiscovery,
    #[serde(default)]
    pub backend: Vec<Spanned<RawBackend>>,
    pub tls: Option<Spanned<super::tls::RawTls>>,
    #[serde(default)]
    pub http2: super::http2::RawHttp2,
    pub hash_key: Option<Spanned<String>>,
    pub sticky: Option<Spanned<RawSticky>>,
    pub slow_start: Option<Spanned<String>>,
    #[serde(default)]
    pub pool: Vec<Spanned<super::pool_tables::RawPool>>,
    #[serde(default)]
    pub route: Vec<Spanned<super::route_tables::RawRoute>>,
}

/// `sticky = { cookie = "lb_srv", ttl = "1h" }`, at the top level or in a `[[pool]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSticky {
    pub cookie: Option<Spanned<String>>,
    pub ttl: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub expect: Option<Spanned<String>>,
    pub grpc: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub connect: Option<Spanned<String>>,
    pub client_header: Option<Spanned<String>>,
    pub client_idle: Option<Spanned<String>>,
    pub backend_response: Option<Spanned<String>>,
    pub backend_idle: Option<Spanned<String>>,
    pub tunnel: Option<Spanned<String>>,
    pub drain: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_connections: Option<Spanned<i64>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_target_bytes: Option<Spanned<i64>>,
    pub pool_max_idle: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub discover: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
    pub tls: Option<Spanned<bool>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub backup: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub resolve_interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub resolvers: Option<Spanned<Vec<String>>>,
}

/// `Spanned<T>` deserializes through a private map with these keys, which
/// serde_path_to_error records as path segments; they mean nothing to an
/// operator and are dropped from key paths.
const SPANNED_KEY_PREFIX: &str = "$__serde_spanned_private";

pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| translate(text, err))
}

/// Turns serde's generic wording into a message that names the dotted key,
/// the line, and what the key expects.
fn translate(text: &str, err: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let segments: Vec<Segment> = err
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } if key.starts_with(SPANNED_KEY_PREFIX) => {
                None
            }
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            // Enum variants and unknown segments carry no key for the operator.
            _ => None,
        })
        .collect();
    let inner = err.into_inner();
    let message = inner.message().trim().replace('\n', ", ");
    let span = inner.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    let key = render_path(&segments);

    if segments.is_empty() {
        // Syntax errors come from the TOML parser before any key is entered;
        // quoting the line lets the operator spot it without an editor.
        let source_line = line
            .and_then(|l| text.lines().nth(l - 1))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        return match source_line {
            Some(src) => ConfigError::syntax(line, format!("{message}: `{src}`")),
            None => ConfigError::syntax(line, message),
        };
    }

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let valid = backticked(rest).into_iter().skip(1).collect::<Vec<_>>();
        let (unknown, parent) = match segments.split_last() {
            Some((last, parent)) => (last.to_string(), parent),
            None => (String::new(), &[][..]),
        };
        let mut msg = if valid.is_empty() {
            format!("{} has no keys", section_name(parent))
        } else {
            format!(
                "valid keys {} are: {}",
                section_phrase(parent),
                valid.join(", ")
            )
        };
        if let Some(guess) = closest(&unknown, &valid) {
            msg = format!("did you mean '{guess}'? {msg}");
        }
        return ConfigError::unknown_key(&key, line, msg);
    }

    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = backticked(rest).into_iter().next().unwrap_or_default();
        let full = if key.is_empty() {
            field.clone()
        } else {
            format!("{key}.{field}")
        };
        let what = expectation(&full).unwrap_or("a value");
        let msg = format!("required key is missing, expected {what}");
        return ConfigError::at_key(&full, line, msg);
    }

    if message.starts_with("unknown variant ") {
        let valid = backticked(&message).into_iter().skip(1).collect::<Vec<_>>();
        let msg = format!("unknown value, expected one of: {}", valid.join(", "));
        return match span {
            Some(span) => ConfigError::value(text, &key, span, msg),
            None => ConfigError::at_key(&key, line, msg),
        };
    }

    // What remains are type mismatches ("invalid type: integer `5`, expected
    // a string"); serde names Rust types, the operator wants the TOML shape.
    let msg = match expectation(&key) {
        Some(what) => format!("wrong type, expected {what}"),
        None => message,
    };
    match span {
        // Quoting a whole table back is noise; the key and line suffice.
        Some(span) if !is_table_key(&key) => ConfigError::value(text, &key, span, msg),
        _ => ConfigError::at_key(&key, line, msg),
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Segment::Key(k) => f.write_str(k),
            Segment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// `backend[0].address` style, matching the keys named by validation errors.
fn render_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        if let Segment::Key(_) = segment {
            if !out.is_empty() {
                out.push('.');
            }
        }
        out.push_str(&segment.to_string());
    }
    out
}

fn section_name(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return "the top level".to_string();
    }
    // Tables of an array are written `[[pool.backend]]` in the file, whatever their indexes.
    let keys: Vec<&str> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    match segments.last() {
        Some(Segment::Index(_)) => format!("[[{}]]", keys.join(".")),
        _ => format!("[{}]", keys.join(".")),
    }
}

fn section_phrase(segments: &[Segment]) -> String {
    match segments {
        [] => "at the top level".to_string(),
        _ => format!("in {}", section_name(segments)),
    }
}

fn is_table_key(key: &str) -> bool {
    key.ends_with(']')
        || matches!(
            generic_key(key).as_str(),
            "health"
                | "timeouts"
                | "limits"
                | "discovery"
                | "backend"
                | "tls"
                | "sticky"
                | "pool"
                | "pool.health"
                | "pool.timeouts"
                | "pool.sticky"
                | "pool.backend"
                | "route"
                | "route.header"
        )
}

/// `pool[1].backend[0].address` -> `pool.backend.address`.
fn generic_key(key: &str) -> String {
    let mut generic = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => generic.push(c),
            _ => {}
        }
    }
    generic
}

/// What each key holds, in TOML terms, for type errors. Keyed by the dotted
/// path with any `[N]` index removed.
fn expectation(key: &str) -> Option<&'static str> {
    const DURATION: &str = "a duration string like \"250ms\" or \"5s\"";
    const ADDRESS: &str = "an address string like \"127.0.0.1:8000\"";
    const INTEGER: &str = "an integer";
    let generic = generic_key(key);
    // One table of an array, not the array.
    if key.ends_with(']') {
        return Some(match generic.as_str() {
            "pool" => "a table: [[pool]] with name and [[pool.backend]] tables",
            "route" => "a table: [[route]] with conditions and pool (or redirect)",
            _ => "a table with name, address (or discover) and weight",
        });
    }
    // A pool's keys mean what the top-level keys of the same name mean.
    let generic = match generic.strip_prefix("pool.") {
        Some(rest) if rest != "name" => rest.to_string(),
        _ => generic,
    };
    Some(match generic.as_str() {
        "listen" | "admin" | "backend.address" => ADDRESS,
        "algorithm" => "a string naming the algorithm, like \"round_robin\"",
        "protocol" => "a string: \"http1\" or \"h2\"",
        "workers" | "retries" | "health.rise" | "health.fall" | "backend.weight" => INTEGER,
        "log_level" => "a string: off, error, warn, info, debug or trace",
        "access_log" | "busy_poll" | "proxy_protocol" | "request_id" | "tcp_defer_accept"
        | "tcp_smart_accept" | "health.grpc" => {
            "true or false"
        }
        "access_log_format" => "a string: \"text\" or \"json\"",
        "access_log_path" => "a string: the file access log lines are appended to",
        "proxy_protocol_from" => {
            "a list of addresses or networks, like [\"10.0.0.0/8\", \"127.0.0.1\"]"
        }
        "admin_token" => "a string: the bearer token for mutating admin calls",
        "health.path" => "a string like \"/health\"",
        "health.expect" => "a string of statuses like \"2xx\", \"200\" or \"200-399, 404\"",
        "health.interval" | "health.timeout" | "idle_spin" => DURATION,
        k if k.starts_with("timeouts.") => DURATION,
        k if k.starts_with("limits.") => INTEGER,
        "backend.discover" => "a DNS name with a port, like \"api.internal:8080\", or an SRV name like \"_http._tcp.api.service.consul\"",
        "discovery.resolve_interval" | "discovery.timeout" => DURATION,
        "discovery.resolvers" => "a list of DNS servers, like [\"127.0.0.1:53\"]",
        "discovery" => "a table: [discovery]",
        "backend.name" => "a string like \"backend-1\"",
        "health" => "a table: [health]",
        "timeouts" => "a table: [timeouts]",
        "limits" => "a table: [limits]",
        "backend" => "an array of tables, written [[backend]] with double brackets",
        "backend.backup" => "true or false",
        "hash_key" => "a string: \"client_ip\", \"uri\", \"header:NAME\" or \"cookie:NAME\"",
        "sticky" => "a table like { cookie = \"lb_srv\", ttl = \"1h\" }",
        "sticky.cookie" => "a cookie name like \"lb_srv\"",
        "sticky.ttl" | "slow_start" => DURATION,
        "pool" => "an array of tables, written [[pool]] with double brackets",
        "pool.name" | "route.name" => "a name string like \"api\"",
        "route" => "an array of tables, written [[route]] with double brackets",
        "route.host" => "a host name like \"api.example.com\" or \"*.example.com\"",
        "route.path_prefix" | "route.path" => "a path string like \"/api/\"",
        "route.methods" => "a list of methods like [\"GET\", \"POST\"]",
        "route.header" => "a table like { name = \"X-Canary\", value = \"1\" }",
        "route.header.name" | "route.header.value" | "route.pool" => "a string",
        "route.redirect" => "a URL string like \"https://www.example.com\"",
        "route.strip_prefix" => "true or false",
        "route.status" => "an integer: 301, 302, 303, 307 or 308",
        _ => return None,
    })
}

/// The `quoted` names in a serde message, in order.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Suggests a valid key for a typo: small edit distance, or a plural/singular
/// mix-up like `backends` or `timeout`.
fn closest<'a>(unknown: &str, valid: &'a [String]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(unknown, v), v))
        .filter(|(d, v)| *d <= 2 && *d < v.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
