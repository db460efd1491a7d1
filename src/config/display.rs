//! The `--check` summary: every effective value of a [`Config`], in config-file notation.

use std::fmt;
use std::time::Duration;

use super::{
    format_duration, BackendConfig, BackendTls, Config, DiscoverConfig, DiscoverTarget, HashKey,
    RouteAction, StickyConfig,
};
use crate::route::{HostMatch, PathMatch};

/// The `--check` summary: every effective value, in config-file notation.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| format_duration(d);
        let h = &self.health;
        let t = &self.timeouts;
        let l = &self.limits;
        writeln!(f, "listen      {}", self.listen)?;
        writeln!(f, "admin       {}", self.admin)?;
        writeln!(f, "algorithm   {}", self.algorithm)?;
        writeln!(f, "workers     {}", self.workers)?;
        writeln!(
            f,
            "log_level   {}",
            self.log_level.as_str().to_ascii_lowercase()
        )?;
        writeln!(
            f,
            "access_log  {} ({}, to {})",
            self.access_log,
            self.access_log_format.as_str(),
            self.access_log_path
                .as_deref()
                .map_or("stderr".into(), |p| p.display().to_string())
        )?;
        writeln!(f, "request_id  {}", self.request_id)?;
        writeln!(f, "tcp_defer_accept {}", self.tcp_defer_accept)?;
        writeln!(f, "tcp_smart_accept {}", self.tcp_smart_accept)?;
        writeln!(f, "busy_poll   {}", self.busy_poll)?;
        writeln!(f, "idle_spin   {}", format_duration(self.idle_spin))?;
        writeln!(f, "retries     {}", self.retries)?;
        // The token itself is a secret: only whether there is one.
        let token = if self.admin_token.is_some() {
            "set"
        } else {
            "unset"
        };
        writeln!(f, "admin_token {token}")?;
        if self.proxy_protocol_from.is_empty() {
            writeln!(f, "proxy_protocol false")?;
        } else {
            let from: Vec<String> = self
                .proxy_protocol_from
                .iter()
                .map(|n| n.to_string())
                .collect();
            writeln!(f, "proxy_protocol true, from {}", from.join(", "))?;
        }
        writeln!(
            f,
            "health      GET {} every {}, timeout {}, rise {}, fall {}, expect {}",
            h.path,
            d(h.interval),
            d(h.timeout),
            h.rise,
            h.fall,
            h.expect
        )?;
        writeln!(
            f,
            "timeouts    connect {}, client_header {}, client_idle {}, backend_response {}, \
             backend_idle {}, tunnel {}, drain {}",
            d(t.connect),
            d(t.client_header),
            d(t.client_idle),
            d(t.backend_response),
            d(t.backend_idle),
            d(t.tunnel),
            d(t.drain)
        )?;
        writeln!(
            f,
            "limits      max_connections {}, max_header_bytes {}, max_headers {}, \
             max_target_bytes {}, pool_max_idle {}",
            l.max_connections,
            l.max_header_bytes,
            l.max_headers,
            l.max_target_bytes,
            l.pool_max_idle
        )?;
        let h2 = &self.http2;
        writeln!(
            f,
            "http2       enabled {}, h2c {}, max_concurrent_streams {}, initial_window_size {}, \
             max_header_list_size {}",
            h2.enabled,
            h2.h2c,
            h2.max_concurrent_streams,
            h2.initial_window_size,
            h2.max_header_list_size
        )?;
        let ds = &self.discovery;
        let resolvers = if ds.resolvers.is_empty() {
            "those of /etc/resolv.conf".to_string()
        } else {
            let each: Vec<String> = ds.resolvers.iter().map(|r| r.to_string()).collect();
            each.join(", ")
        };
        writeln!(
            f,
            "discovery   resolve_interval {}, timeout {}, resolvers {resolvers}",
            d(ds.resolve_interval),
            d(ds.timeout)
        )?;
        if let Some(tls) = &self.tls {
            writeln!(
                f,
                "tls         listen {}, min_version {}, handshake_timeout {}, redirect_http {}, \
                 session_cache {}, session_tickets {}",
                tls.listen,
                tls.min_version.as_str(),
                d(tls.handshake_timeout),
                tls.redirect_http,
                tls.session_cache,
                tls.session_tickets
            )?;
            for c in &tls.certificates {
                writeln!(
                    f,
                    "  certificate {}  key {}",
                    c.cert.display(),
                    c.key.display()
                )?;
            }
        }
        write_policy(
            f,
            "",
            self.hash_key.as_ref(),
            self.sticky.as_ref(),
            self.slow_start,
        )?;
        write!(f, "backends    {}", self.backends.len())?;
        write_backends(f, "  ", &self.backends, &self.discover, self)?;
        for p in &self.pools {
            let h = &p.health;
            let protocol = match p.protocol {
                super::BackendProtocol::Http1 => "",
                super::BackendProtocol::H2 => ", protocol h2",
            };
            let probe = if h.grpc {
                "gRPC Health/Check".to_string()
            } else {
                format!("GET {}", h.path)
            };
            write!(
                f,
                "\npool        {}  algorithm {}{protocol}, retries {}, health {probe} every {}, \
                 timeout {}, rise {}, fall {}, expect {}, timeouts connect {}, backend_response {}",
                p.name,
                p.algorithm,
                p.retries,
                d(h.interval),
                d(h.timeout),
                h.rise,
                h.fall,
                h.expect,
                d(p.connect_timeout),
                d(p.backend_response_timeout)
            )?;
            writeln!(f)?;
            write_policy(
                f,
                "  ",
                p.hash_key.as_ref(),
                p.sticky.as_ref(),
                p.slow_start,
            )?;
            write!(f, "  backends  {}", p.backends.len() + p.discover.len())?;
            write_backends(f, "    ", &p.backends, &p.discover, self)?;
        }
        if !self.routes.is_empty() {
            write!(f, "\nroutes      {} (first match wins)", self.routes.len())?;
        }
        for r in &self.routes {
            write!(f, "\n  {}  ", r.name)?;
            let c = &r.conditions;
            let mut parts = Vec::new();
            match &c.host {
                Some(HostMatch::Exact(h)) => parts.push(format!("host {h}")),
                Some(HostMatch::Wildcard(s)) => parts.push(format!("host *{s}")),
                None => {}
            }
            match &c.path {
                Some(PathMatch::Prefix(p)) => parts.push(format!("path_prefix {p}")),
                Some(PathMatch::Exact(p)) => parts.push(format!("path {p}")),
                None => {}
            }
            if let Some(m) = &c.methods {
                parts.push(format!("methods {}", m.join(",")));
            }
            if let Some((name, value)) = &c.header {
                parts.push(format!("header {name}: {value}"));
            }
            if parts.is_empty() {
                parts.push("every request".to_string());
            }
            write!(f, "{}", parts.join(", "))?;
            match &r.action {
                RouteAction::Forward { pool, strip_prefix } => {
                    write!(f, "  -> pool {pool}")?;
                    if *strip_prefix {
                        write!(f, " (prefix stripped)")?;
                    }
                }
                RouteAction::Redirect {
                    location,
                    status,
                    strip_prefix,
                } => {
                    write!(f, "  -> redirect {status} {location}")?;
                    if *strip_prefix {
                        write!(f, " (prefix stripped)")?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn write_policy(
    f: &mut fmt::Formatter<'_>,
    indent: &str,
    hash_key: Option<&HashKey>,
    sticky: Option<&StickyConfig>,
    slow_start: Duration,
) -> fmt::Result {
    if let Some(k) = hash_key {
        writeln!(f, "{indent}hash_key    {k}")?;
    }
    if let Some(s) = sticky {
        match s.ttl {
            Some(ttl) => writeln!(
                f,
                "{indent}sticky      cookie {}, ttl {}",
                s.cookie,
                format_duration(ttl)
            )?,
            None => writeln!(
                f,
                "{indent}sticky      cookie {} (session cookie)",
                s.cookie
            )?,
        }
    }
    if !slow_start.is_zero() {
        writeln!(f, "{indent}slow_start  {}", format_duration(slow_start))?;
    }
    Ok(())
}

fn write_backends(
    f: &mut fmt::Formatter<'_>,
    indent: &str,
    backends: &[BackendConfig],
    discover: &[DiscoverConfig],
    config: &Config,
) -> fmt::Result {
    for b in backends {
        write!(
            f,
            "\n{indent}{}  {}  weight {}",
            b.name, b.address, b.weight
        )?;
        write_backend_tls(f, b.tls.as_ref())?;
        if b.backup {
            write!(f, "  backup")?;
        }
    }
    for entry in discover {
        let target = match &entry.target {
            DiscoverTarget::Host { host, port } => format!("{host}:{port}"),
            DiscoverTarget::Srv(name) => format!("SRV {name}"),
        };
        write!(
            f,
            "\n{indent}{}  discover {target} every {}  weight {}",
            entry.name,
            format_duration(config.discovery.resolve_interval),
            entry.weight
        )?;
        write_backend_tls(f, entry.tls.as_ref())?;
        if entry.backup {
            write!(f, "  backup")?;
        }
    }
    Ok(())
}

fn write_backend_tls(f: &mut fmt::Formatter<'_>, tls: Option<&BackendTls>) -> fmt::Result {
    if let Some(tls) = tls {
        write!(f, "  tls {}", tls.server_name)?;
        if let Some(ca) = &tls.ca {
            write!(f, " (ca {})", ca.display())?;
        }
    }
    Ok(())
}
