//! Checks and parsers for single values (names, ports, paths, addresses, DNS names), shared by
//! the file's validation and the command-line flags.

use std::net::{SocketAddr, ToSocketAddrs};

use log::LevelFilter;

use super::DiscoverTarget;

/// `backend-1`, `backend-2`, ...: 1-based like the operator counts them.
pub(super) fn default_backend_name(index: usize) -> String {
    format!("backend-{}", index + 1)
}

/// Names show up in log lines and the admin API; whitespace or control
/// characters would make both ambiguous.
pub(super) fn check_backend_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("backend name must not be empty".to_string());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("backend name must not contain spaces or control characters".to_string());
    }
    Ok(())
}

/// A backend on port 0 can never be connected to.
pub(super) fn check_backend_port(addr: SocketAddr) -> Result<SocketAddr, String> {
    match addr.port() {
        0 => Err("port 0 is not a valid backend port".to_string()),
        _ => Ok(addr),
    }
}

/// The path goes verbatim into the probe's request line, so whitespace or
/// control characters would corrupt the request (or inject headers).
pub(super) fn check_health_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/', like \"/health\"".to_string());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_string());
    }
    Ok(())
}

pub(super) fn parse_log_level(text: &str) -> Result<LevelFilter, String> {
    const LEVELS: [(&str, LevelFilter); 6] = [
        ("off", LevelFilter::Off),
        ("error", LevelFilter::Error),
        ("warn", LevelFilter::Warn),
        ("info", LevelFilter::Info),
        ("debug", LevelFilter::Debug),
        ("trace", LevelFilter::Trace),
    ];
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, level)| level)
        .ok_or_else(|| {
            "unknown log level, expected one of: off, error, warn, info, debug, trace".to_string()
        })
}

const ADDRESS_FORM: &str = "expected host:port like \"127.0.0.1:8000\" or \"localhost:8000\"";

/// Resolves `host:port` once, taking the first address the resolver returns,
/// so the running proxy never blocks on DNS.
pub(super) fn resolve_address(text: &str) -> Result<SocketAddr, String> {
    // Literal IPs need no resolver; this also covers "[::1]:8000".
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("missing port, {ADDRESS_FORM}"));
    };
    if host.is_empty() {
        return Err(format!("missing host, {ADDRESS_FORM}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {port:?}, expected a number from 0 to 65535"))?;
    if host.starts_with('[') {
        return Err(format!("invalid IPv6 address {host}"));
    }
    if host.contains(':') {
        return Err("IPv6 addresses need brackets, like \"[::1]:8000\"".to_string());
    }
    // Rejecting impossible host names up front avoids a slow DNS round trip
    // that could only fail.
    let valid_host = host
        .strip_suffix('.')
        .unwrap_or(host)
        .split('.')
        .all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid_host {
        return Err(format!("invalid host name {host:?}, {ADDRESS_FORM}"));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} resolved to no addresses"))
}

/// `"name:port"` (A/AAAA) or `"_service._proto.name"` (SRV).
pub(super) fn parse_discover(text: &str) -> Result<DiscoverTarget, String> {
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if text.starts_with('_') {
        let name = text.trim_end_matches('.');
        if !valid_name(name) {
            return Err(format!("{text:?} is not a valid SRV name"));
        }
        return Ok(DiscoverTarget::Srv(name.to_string()));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} needs a port, like \"api.internal:8080\" (or an SRV name starting with '_')"
        ));
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("invalid port in {text:?}"))?;
    let host = host.trim_end_matches('.');
    if !valid_name(host) {
        return Err(format!("{host:?} is not a valid DNS name"));
    }
    Ok(DiscoverTarget::Host {
        host: host.to_string(),
        port,
    })
}
