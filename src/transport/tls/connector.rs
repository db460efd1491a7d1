//! The client side of TLS, for backends reached over it (`[[backend]] tls = true`): the trusted
//! roots (a private CA, or the system's), the name the certificate must carry, and a rustls
//! configuration per backend whose session cache lets reconnections resume.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use log::warn;
use mio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::provider;
use super::TlsStream;
use crate::config::BackendTls;

/// How a backend's TLS connections start.
#[derive(Debug)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    /// The same with ALPN `h2`, for pools that speak HTTP/2 to their backends.
    config_h2: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    pub fn new(tls: &BackendTls) -> Result<TlsConnector, String> {
        let roots = match &tls.ca {
            Some(path) => load_roots(path)?,
            None => system_roots(),
        };
        let server_name = ServerName::try_from(tls.server_name.clone())
            .map_err(|_| format!("{:?} is not a DNS name or an IP address", tls.server_name))?;
        let mut config = ClientConfig::builder_with_provider(provider::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut config_h2 = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config_h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsConnector {
            config: Arc::new(config),
            config_h2: Arc::new(config_h2),
            server_name,
        })
    }

    /// Starts TLS on a connection being opened; the handshake runs as the socket allows.
    pub fn connect(&self, tcp: TcpStream) -> Result<TlsStream, rustls::Error> {
        let conn = ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())?;
        Ok(TlsStream::client(tcp, conn))
    }

    /// The same, offering only `h2` by ALPN.
    pub fn connect_h2(&self, tcp: TcpStream) -> Result<TlsStream, rustls::Error> {
        let conn = ClientConnection::new(Arc::clone(&self.config_h2), self.server_name.clone())?;
        Ok(TlsStream::client(tcp, conn))
    }
}

/// The CAs of a PEM bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", path.display()));
    }
    Ok(roots)
}

/// The system's roots, read once.
fn system_roots() -> RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                warn!("tls to backends: system CA roots: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                warn!("tls to backends: no system CA roots found; set tls_ca for each backend");
            }
            roots
        })
        .clone()
}
