//! Server certificates: loading a PEM chain and its key, the names each certificate answers
//! for, and the choice by SNI among several.
//!
//! Names come from the leaf's subjectAltName (DNS names, with `*.example.com` wildcards of one
//! label, and IP addresses), or from its subject CN when it has no SAN. A client asking for a
//! name no certificate has, or for none at all, gets the first certificate: the default.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate ready to serve: its chain and key, and what it says about itself.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS names (possibly `*.` wildcards) and IP addresses it is valid for.
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

impl LoadedCert {
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.not_after <= now
    }
}

/// Why a certificate could not be loaded; says which of the two files is at fault, so that a
/// config error can name the right key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    Cert(String),
    Key(String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Cert(m) | CertError::Key(m) => f.write_str(m),
        }
    }
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, or SEC1 / PKCS#1),
/// and checks that the key is the certificate's.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<LoadedCert, CertError> {
    let cert_text = std::fs::read(cert)
        .map_err(|e| CertError::Cert(format!("cannot read {}: {e}", cert.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Cert(format!("{} is not PEM: {e}", cert.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::Cert(format!(
            "{} holds no CERTIFICATE block",
            cert.display()
        )));
    };
    let (names, not_after) =
        describe(leaf).map_err(|m| CertError::Cert(format!("{}: {m}", cert.display())))?;
    let key_text = std::fs::read(key)
        .map_err(|e| CertError::Key(format!("cannot read {}: {e}", key.display())))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| {
        CertError::Key(format!(
            "{} holds no PEM private key (PKCS#8, SEC1 or PKCS#1): {e}",
            key.display()
        ))
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CertError::Key(format!("{}: unusable key: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    if let Err(e) = certified.keys_match() {
        return Err(CertError::Key(format!(
            "{} is not the key of {} ({e})",
            key.display(),
            cert.display()
        )));
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// The names and the end of validity of a leaf certificate.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    let (_, parsed) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        for cn in parsed.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    let seconds = parsed.validity().not_after.timestamp();
    let not_after = if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH
    };
    Ok((names, not_after))
}

/// Whether certificate name `pattern` covers the host `name` (both lower case): equal, or a
/// `*.` wildcard standing for exactly one leftmost label (RFC 6125 §6.4.3).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => false,
    }
}

/// The certificates of a listener, chosen by SNI.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<LoadedCert>,
}

impl SniResolver {
    /// `certs` must not be empty; the first is the default.
    pub fn new(certs: Vec<LoadedCert>) -> SniResolver {
        SniResolver { certs }
    }

    /// The certificate for `server_name`: an exact name first, then a wildcard, else the
    /// default. Among certificates for the same name (an ECDSA and an RSA one), the first whose
    /// key the client can verify (`usable`).
    pub fn pick(
        &self,
        server_name: Option<&str>,
        usable: impl Fn(&LoadedCert) -> bool,
    ) -> Option<&LoadedCert> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let exact = self
                .certs
                .iter()
                .find(|c| c.names.contains(&name) && usable(c));
            let wildcard = || {
                self.certs
                    .iter()
                    .find(|c| c.names.iter().any(|n| name_matches(n, &name)) && usable(c))
            };
            if let Some(cert) = exact.or_else(wildcard) {
                return Some(cert);
            }
        }
        // The default, or its twin of the other key type.
        let default = self.certs.first()?;
        self.certs
            .iter()
            .find(|c| c.names == default.names && usable(c))
            .or(Some(default))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = client_hello.signature_schemes();
        let usable = |c: &LoadedCert| c.key.key.choose_scheme(schemes).is_some();
        self.pick(client_hello.server_name(), usable)
            .map(|c| Arc::clone(&c.key))
    }
}

/// The first name two certificates with the same kind of key share, if any: SNI could then
/// never reach the second. An ECDSA and an RSA certificate may share names: each client gets
/// the one it can verify.
pub fn clash(earlier: &[LoadedCert], cert: &LoadedCert) -> Option<(usize, String)> {
    let kind = cert.key.key.algorithm();
    earlier.iter().enumerate().find_map(|(i, other)| {
        if other.key.key.algorithm() != kind {
            return None;
        }
        cert.names
            .iter()
            .find(|n| other.names.contains(n))
            .map(|n| (i, n.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("example.com", "example.com"));
        assert!(!name_matches("example.com", "www.example.com"));
    }
}
