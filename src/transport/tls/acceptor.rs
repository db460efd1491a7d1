//! The server side of TLS: the rustls configuration a listener hands each new connection
//! (certificates by SNI, versions, ALPN, resumption), its reload, and the handshake counters.
//!
//! One acceptor serves every reactor, so the session cache and the ticket keys are shared, and
//! a reload (SIGHUP) swaps the configuration for new connections while open ones keep theirs.
//! The ticket keys and the cache survive a reload, so clients resume across it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use log::{info, warn};
use mio::net::TcpStream;
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, StoresServerSessions};
use rustls::{Connection, HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection};

use super::certs::{self, LoadedCert, SniResolver};
use super::provider;
use super::TlsStream;
use crate::config::{TlsConfig, TlsVersion};

/// Why a handshake did not complete; the label of its Prometheus series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client offered no version we accept (TLS 1.0, 1.1, or 1.2 under a 1.3 minimum).
    ProtocolVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoSharedParameters,
    /// The client wanted only application protocols we do not speak.
    NoApplicationProtocol,
    /// Plain HTTP sent to the TLS port.
    PlainHttp,
    /// Bytes that are not the TLS the handshake expects.
    BadMessage,
    /// The client ended the handshake with an alert (it did not trust our certificate, say).
    AlertReceived,
    /// `tls.handshake_timeout` ran out.
    Timeout,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::NoSharedParameters,
        HandshakeFailure::NoApplicationProtocol,
        HandshakeFailure::PlainHttp,
        HandshakeFailure::BadMessage,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::NoSharedParameters => "no_shared_parameters",
            HandshakeFailure::NoApplicationProtocol => "no_application_protocol",
            HandshakeFailure::PlainHttp => "plain_http",
            HandshakeFailure::BadMessage => "bad_message",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    pub fn from_error(error: &rustls::Error) -> HandshakeFailure {
        use rustls::{Error, PeerIncompatible as P};
        match error {
            // A TLS 1.0 or 1.1 ClientHello carries no signature_algorithms, which rustls looks
            // for before it looks at the version.
            Error::PeerIncompatible(
                P::SupportedVersionsExtensionRequired
                | P::SignatureAlgorithmsExtensionRequired
                | P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::ServerTlsVersionIsDisabledByOurConfig,
            ) => HandshakeFailure::ProtocolVersion,
            Error::PeerIncompatible(_) => HandshakeFailure::NoSharedParameters,
            Error::NoApplicationProtocol => HandshakeFailure::NoApplicationProtocol,
            Error::InvalidMessage(_)
            | Error::DecryptError
            | Error::PeerMisbehaved(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. } => HandshakeFailure::BadMessage,
            Error::AlertReceived(_) => HandshakeFailure::AlertReceived,
            _ => HandshakeFailure::Other,
        }
    }
}

/// Handshake counters of one listener, read by the admin API.
#[derive(Debug, Default)]
pub struct TlsStats {
    pub handshakes: AtomicU64,
    pub resumed: AtomicU64,
    pub tls12: AtomicU64,
    pub tls13: AtomicU64,
    failures: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Completed handshakes per cipher suite, in the provider's order.
    suites: Vec<(&'static str, AtomicU64)>,
}

impl TlsStats {
    fn new() -> TlsStats {
        let suites = provider::provider()
            .cipher_suites
            .iter()
            .map(|s| (s.suite().as_str().unwrap_or("unknown"), AtomicU64::new(0)))
            .collect();
        TlsStats {
            suites,
            ..TlsStats::default()
        }
    }

    pub(super) fn record_success(&self, conn: &Connection) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.resumed.fetch_add(1, Ordering::Relaxed);
        }
        match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => self.tls13.fetch_add(1, Ordering::Relaxed),
            _ => self.tls12.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(suite) = conn.negotiated_cipher_suite() {
            let name = suite.suite().as_str().unwrap_or("unknown");
            if let Some((_, count)) = self.suites.iter().find(|(n, _)| *n == name) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn record_failure(&self, reason: HandshakeFailure) {
        if let Some(i) = HandshakeFailure::ALL.iter().position(|&r| r == reason) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Failed handshakes by reason, every reason listed.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        HandshakeFailure::ALL
            .iter()
            .zip(&self.failures)
            .map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Completed handshakes by cipher suite, every suite offered listed.
    pub fn suites(&self) -> Vec<(&'static str, u64)> {
        self.suites
            .iter()
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What the admin API shows of a certificate.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// The TLS side of the HTTPS listener, shared by every reactor.
pub struct TlsAcceptor {
    current: RwLock<Arc<ServerConfig>>,
    /// The address the listener got (`tls.listen` may say port 0).
    bound: RwLock<Option<std::net::SocketAddr>>,
    settings: RwLock<(TlsConfig, Vec<CertSummary>)>,
    pub stats: Arc<TlsStats>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    pub fn new(config: &TlsConfig) -> Result<Arc<TlsAcceptor>, String> {
        let ticketer =
            provider::ticketer().map_err(|e| format!("cannot make session ticket keys: {e}"))?;
        let cache: Arc<dyn StoresServerSessions> = if config.session_cache == 0 {
            Arc::new(NoServerSessionStorage {})
        } else {
            ServerSessionMemoryCache::new(config.session_cache)
        };
        let (server, summaries) = build(config, &ticketer, &cache)?;
        Ok(Arc::new(TlsAcceptor {
            current: RwLock::new(Arc::new(server)),
            bound: RwLock::new(None),
            settings: RwLock::new((config.clone(), summaries)),
            stats: Arc::new(TlsStats::new()),
            ticketer,
            cache,
        }))
    }

    /// Loads the certificates again (SIGHUP): new connections get the new ones; a file that
    /// does not load changes nothing.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), String> {
        let (server, summaries) = build(config, &self.ticketer, &self.cache)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(server);
        }
        if let Ok(mut settings) = self.settings.write() {
            *settings = (config.clone(), summaries);
        }
        info!("tls: {} certificate(s) reloaded", config.certificates.len());
        Ok(())
    }

    /// Starts the server side of TLS on a connection just accepted.
    pub fn accept(&self, tcp: TcpStream) -> Result<TlsStream, rustls::Error> {
        let config = match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let conn = ServerConnection::new(config)?;
        Ok(TlsStream::server(tcp, conn, Arc::clone(&self.stats)))
    }

    /// Records where the listener is, for what the admin API reports.
    pub fn set_bound(&self, addr: std::net::SocketAddr) {
        if let Ok(mut bound) = self.bound.write() {
            *bound = Some(addr);
        }
    }

    /// The configuration in force (with the address actually bound) and what its
    /// certificates say.
    pub fn settings(&self) -> (TlsConfig, Vec<CertSummary>) {
        let (mut config, certs) = match self.settings.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(addr) = self.bound.read().ok().and_then(|b| *b) {
            config.listen = addr;
        }
        (config, certs)
    }
}

fn build(
    config: &TlsConfig,
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
    cache: &Arc<dyn StoresServerSessions>,
) -> Result<(ServerConfig, Vec<CertSummary>), String> {
    let provider = provider::provider();
    let now = SystemTime::now();
    let mut loaded: Vec<LoadedCert> = Vec::with_capacity(config.certificates.len());
    for (i, c) in config.certificates.iter().enumerate() {
        let cert = certs::load(&c.cert, &c.key, &provider)
            .map_err(|e| format!("tls.certificate[{i}]: {e}"))?;
        if cert.is_expired(now) {
            warn!(
                "tls.certificate[{i}]: {} has expired; clients will refuse it",
                c.cert.display()
            );
        }
        loaded.push(cert);
    }
    if loaded.is_empty() {
        return Err("tls: no certificate configured".to_string());
    }
    let summaries = loaded
        .iter()
        .map(|c| CertSummary {
            names: c.names.clone(),
            not_after: c.not_after,
        })
        .collect();
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(loaded)));
    // h2 first: a client offering both gets HTTP/2 (RFC 9113 §3.2).
    server.alpn_protocols = if config.alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // The server's order (AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; ECDHE suites only in
    // TLS 1.2), as HAProxy's default: a client's preference for a weaker suite does not win.
    server.ignore_client_order = true;
    server.session_storage = Arc::clone(cache);
    if config.session_tickets {
        server.ticketer = Arc::clone(ticketer);
    }
    // One ticket is enough for the next connection to resume; each costs an encryption and a
    // record on every full handshake.
    server.send_tls13_tickets = 1;
    Ok((server, summaries))
}

/// The name operators know a version by.
pub fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    }
}
