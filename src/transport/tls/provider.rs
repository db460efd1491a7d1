//! The one place that names the crypto provider under rustls, so that changing it (the choice
//! is made by measurement: see docs/BENCHMARKS.md) is one edit here and one in Cargo.toml.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

/// The provider every TLS configuration of the process is built with.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Session tickets with keys that rotate every 6 hours and stay valid 12 hours.
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}
