//! `[tls]` and `[[tls.certificate]]`: the file's tables and their validation.
//!
//! Certificates are loaded here, not only at startup, so that `lb --check` and a SIGHUP refuse
//! a missing file, a key that is not the certificate's, or two certificates claiming the same
//! name, with the key and line at fault. An expired certificate is only warned about when it is
//! served (the acceptor logs it): refusing it would turn a renewal gone late into an outage.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::error::{line_of, ConfigError};
use super::raw::RawBackend;
use super::validate::Values;
use super::{
    BackendTls, CertificateConfig, TlsConfig, TlsVersion, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    DEFAULT_TLS_LISTEN, DEFAULT_TLS_MIN_VERSION, DEFAULT_TLS_REDIRECT_HTTP,
    DEFAULT_TLS_SESSION_CACHE, DEFAULT_TLS_SESSION_TICKETS,
};
use crate::transport::tls::{certs, provider};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub listen: Option<Spanned<String>>,
    pub min_version: Option<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub redirect_http: Option<bool>,
    pub session_cache: Option<Spanned<i64>>,
    pub session_tickets: Option<bool>,
    #[serde(default)]
    pub certificate: Vec<Spanned<RawCertificate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

pub(super) fn build(
    v: &Values,
    raw: &Spanned<RawTls>,
    alpn_h2: bool,
) -> Result<TlsConfig, ConfigError> {
    let dir = v.dir;
    let table_line = line_of(v.text, raw.span().start);
    let raw = raw.get_ref();
    let listen = v.address("tls.listen", raw.listen.as_ref(), DEFAULT_TLS_LISTEN)?;
    let min_version = match &raw.min_version {
        Some(s) => match s.get_ref().trim() {
            "1.2" => TlsVersion::Tls12,
            "1.3" => TlsVersion::Tls13,
            _ => {
                return Err(v.fail(
                    "tls.min_version",
                    s.span(),
                    "must be \"1.2\" or \"1.3\" (TLS 1.0 and 1.1 are broken and not offered)",
                ))
            }
        },
        None => DEFAULT_TLS_MIN_VERSION,
    };
    let handshake_timeout = v.duration(
        "tls.handshake_timeout",
        raw.handshake_timeout.as_ref(),
        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    )?;
    let session_cache = v.int(
        "tls.session_cache",
        raw.session_cache.as_ref(),
        DEFAULT_TLS_SESSION_CACHE,
        0,
    )?;
    if raw.certificate.is_empty() {
        return Err(ConfigError::at_key(
            "tls.certificate",
            Some(table_line),
            "[tls] needs at least one [[tls.certificate]] with cert and key",
        ));
    }
    let provider = provider::provider();
    let mut certificates = Vec::with_capacity(raw.certificate.len());
    let mut loaded: Vec<certs::LoadedCert> = Vec::new();
    for (i, entry) in raw.certificate.iter().enumerate() {
        let line = line_of(v.text, entry.span().start);
        let (cert, cert_value) = file(dir, i, "cert", entry.get_ref().cert.as_ref(), line)?;
        let (key, key_value) = file(dir, i, "key", entry.get_ref().key.as_ref(), line)?;
        let cert_key = format!("tls.certificate[{i}].cert");
        let this = certs::load(&cert, &key, &provider).map_err(|e| match e {
            certs::CertError::Cert(m) => v.fail(&cert_key, cert_value.span(), m),
            certs::CertError::Key(m) => {
                v.fail(&format!("tls.certificate[{i}].key"), key_value.span(), m)
            }
        })?;
        if let Some((first, name)) = certs::clash(&loaded, &this) {
            return Err(v.fail(
                &cert_key,
                cert_value.span(),
                format!(
                    "{name:?} is also a name of tls.certificate[{first}], whose key is of the \
                     same kind: SNI could never pick this one for it"
                ),
            ));
        }
        loaded.push(this);
        certificates.push(CertificateConfig { cert, key });
    }
    Ok(TlsConfig {
        listen,
        min_version,
        handshake_timeout,
        redirect_http: raw.redirect_http.unwrap_or(DEFAULT_TLS_REDIRECT_HTTP),
        session_cache,
        session_tickets: raw.session_tickets.unwrap_or(DEFAULT_TLS_SESSION_TICKETS),
        alpn_h2,
        certificates,
    })
}

/// `tls`, `tls_server_name` and `tls_ca` of the backend table keyed `table` (`backend[0]`,
/// `pool[1].backend[0]`); `written` is its address or discover name as written, whose host is
/// the default server name.
pub(super) fn backend(
    v: &Values,
    table: &str,
    raw: &RawBackend,
    written: Option<&str>,
) -> Result<Option<BackendTls>, ConfigError> {
    let key = |field: &str| format!("{table}.{field}");
    let on = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
    if !on {
        if let Some(extra) = raw.tls_server_name.as_ref().or(raw.tls_ca.as_ref()) {
            let field = if raw.tls_server_name.is_some() {
                "tls_server_name"
            } else {
                "tls_ca"
            };
            return Err(v.fail(
                &key(field),
                extra.span(),
                "only means something with tls = true",
            ));
        }
        return Ok(None);
    }
    let server_name = match &raw.tls_server_name {
        Some(n) => {
            let name = n.get_ref().trim();
            if rustls_pki_types::ServerName::try_from(name).is_err() {
                return Err(v.fail(
                    &key("tls_server_name"),
                    n.span(),
                    "must be a DNS name or an IP address",
                ));
            }
            name.to_string()
        }
        None => written.map(default_server_name).unwrap_or_default(),
    };
    let ca = match &raw.tls_ca {
        Some(p) => {
            let path = resolve(v.dir, p.get_ref());
            crate::transport::tls::connector::load_roots(&path)
                .map_err(|m| v.fail(&key("tls_ca"), p.span(), m))?;
            Some(path)
        }
        None => None,
    };
    Ok(Some(BackendTls { server_name, ca }))
}

/// The host of `host:port` (or of an SRV name), brackets off an IPv6 address.
fn default_server_name(written: &str) -> String {
    let host = match written.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => written,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_string()
}

/// A certificate's file path, resolved, and the value it came from (for errors that point at it).
fn file<'a>(
    dir: &Path,
    index: usize,
    field: &str,
    value: Option<&'a Spanned<String>>,
    line: usize,
) -> Result<(PathBuf, &'a Spanned<String>), ConfigError> {
    match value {
        Some(p) if !p.get_ref().trim().is_empty() => Ok((resolve(dir, p.get_ref()), p)),
        _ => Err(ConfigError::at_key(
            &format!("tls.certificate[{index}].{field}"),
            Some(line),
            "missing: give the path of a PEM file",
        )),
    }
}

fn resolve(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path.trim());
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}
