//! One backend server: its address, its pool, its counters, its health, and when it last came
//! back up (for slow start).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use log::error;

use crate::balance::sticky;
use crate::config::{BackendConfig, BackendTls};
use crate::health::HealthTracker;
use crate::stats::Traffic;
use crate::transport::tls::connector::TlsConnector;

/// `up_since` of a backend that has not come back up since it was added: its full weight.
const NEVER: u64 = u64::MAX;

/// The process-wide origin of `up_since` stamps (an `Instant` cannot sit in an atomic).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// One backend server, its health, and what happened on it.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    /// The pool it belongs to (an index into the pools, stable for the process's life).
    pub pool: usize,
    /// Takes requests only when no primary backend of its pool can.
    pub backup: bool,
    /// What the sticky cookie says to name it.
    pub cookie_id: u64,
    /// When it last came back up, in milliseconds from [`epoch`]; [`NEVER`] when it has not.
    up_since: AtomicU64,
    /// Relative share for weighted algorithms; a reload may change it.
    pub(super) weight: AtomicU32,
    /// Requests sent to it (each try counts).
    pub requests: AtomicU64,
    /// Requests on it now.
    pub in_flight: AtomicU64,
    /// Connections opened to it (a keep-alive pool keeps this far below `requests`).
    pub connections: AtomicU64,
    /// Connect failures, resets, garbage and timeouts seen on it.
    pub errors: AtomicU64,
    /// Requests sent to it again after a failure on it (a stale pooled connection).
    pub retries: AtomicU64,
    /// Requests moved from it to another backend after a failure on it.
    pub redispatches: AtomicU64,
    pub(super) up: AtomicBool,
    pub(super) draining: AtomicBool,
    /// Taken away by an operator, a reload or discovery: never picked again; still listed
    /// until later removals push it out of the table.
    pub(super) removed: AtomicBool,
    /// Found in DNS rather than configured: a reload of the file leaves it alone.
    pub discovered: bool,
    /// `tls = true`: how its connections start TLS, or why they cannot.
    pub tls: Option<Result<Arc<TlsConnector>, String>>,
    pub(super) tls_config: Option<BackendTls>,
    health: Mutex<HealthStatus>,
    traffic: Mutex<Traffic>,
}

/// The state a backend is in, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Up,
    Down,
    /// Taken out of rotation by an operator; requests in flight finish.
    Draining,
    /// Deleted by an operator; requests in flight finish.
    Removed,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "draining",
            BackendState::Removed => "removed",
        }
    }
}

/// Health details kept for the admin API.
#[derive(Debug, Clone)]
pub struct HealthStatus {
    pub tracker: HealthTracker,
    pub last_check: Option<SystemTime>,
    pub last_ok: Option<bool>,
    /// What the last check or failure said: `status 200`, `timeout`, `connection refused`.
    pub last_detail: String,
    pub last_latency: Duration,
    pub last_change: SystemTime,
    /// Why the last flip happened.
    pub last_change_reason: String,
    /// How many times the state flipped.
    pub flips: u64,
}

impl Backend {
    pub(super) fn new(config: &BackendConfig, pool: usize, pool_name: &str) -> Backend {
        Backend {
            name: config.name.clone(),
            address: config.address,
            pool,
            backup: config.backup,
            cookie_id: sticky::backend_id(pool_name, &config.name),
            up_since: AtomicU64::new(NEVER),
            weight: AtomicU32::new(config.weight),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            redispatches: AtomicU64::new(0),
            up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            discovered: false,
            tls: config.tls.as_ref().map(|t| {
                TlsConnector::new(t).map(Arc::new).map_err(|e| {
                    error!("backend {}: TLS unavailable: {e}", config.name);
                    e
                })
            }),
            tls_config: config.tls.clone(),
            traffic: Mutex::new(Traffic::default()),
            health: Mutex::new(HealthStatus {
                tracker: HealthTracker::default(),
                last_check: None,
                last_ok: None,
                last_detail: String::new(),
                last_latency: Duration::ZERO,
                last_change: SystemTime::now(),
                last_change_reason: "started".to_string(),
                flips: 0,
            }),
        }
    }

    pub fn state(&self) -> BackendState {
        if self.removed.load(Ordering::Relaxed) {
            BackendState::Removed
        } else if self.draining.load(Ordering::Relaxed) {
            BackendState::Draining
        } else if self.up.load(Ordering::Relaxed) {
            BackendState::Up
        } else {
            BackendState::Down
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// A copy of the health details.
    pub fn health(&self) -> HealthStatus {
        self.lock_health().clone()
    }

    pub(super) fn lock_health(&self) -> std::sync::MutexGuard<'_, HealthStatus> {
        // Nothing panics while holding this lock; if something ever did, the data is still
        // plain counters and strings, safe to keep using.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a response it gave; `second` counts from a fixed start (for the one-minute window).
    pub fn record(&self, status: u16, latency: Duration, second: u64) {
        self.lock_traffic().record(status, latency, second);
    }

    /// A copy of the traffic statistics.
    pub fn traffic(&self) -> Traffic {
        self.lock_traffic().clone()
    }

    /// Latency percentiles over the last minute, in milliseconds.
    pub fn latency_percentiles(&self, now_second: u64, quantiles: &[f64]) -> Vec<Option<f64>> {
        self.lock_traffic().percentiles(now_second, quantiles)
    }

    fn lock_traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        // As with health: plain numbers, still usable after a panic elsewhere.
        self.traffic.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a return to service: slow start counts from now.
    pub(super) fn came_up(&self, now: Instant) {
        let ms = now.saturating_duration_since(epoch()).as_millis();
        self.up_since
            .store(u64::try_from(ms).unwrap_or(NEVER - 1), Ordering::Relaxed);
    }

    /// How long it has been up since it last came back, if it ever did.
    pub fn up_for(&self, now: Instant) -> Option<Duration> {
        let since = self.up_since.load(Ordering::Relaxed);
        if since == NEVER {
            return None;
        }
        let at = epoch() + Duration::from_millis(since);
        Some(now.saturating_duration_since(at))
    }

    /// The backend's config as it stands (a reload compares against it).
    pub(super) fn config(&self) -> BackendConfig {
        BackendConfig {
            name: self.name.clone(),
            address: self.address,
            weight: self.weight(),
            tls: self.tls_config.clone(),
            backup: self.backup,
        }
    }

    pub(super) fn selectable(&self, fail_open: bool) -> bool {
        !self.removed.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && (fail_open || self.up.load(Ordering::Relaxed))
    }
}
