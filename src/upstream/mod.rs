//! Backends as the reactor sees them: their addresses and counters, the round-robin choice among
//! them, and the pool of idle keep-alive connections to each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use log::{error, info};

mod pool;

pub use pool::Pool;

use crate::balance::{Balancer, Candidate};
use crate::config::{Algorithm, BackendConfig, BackendTls, HealthConfig};
use crate::events::{Event, EventBus};
use crate::health::{HealthTracker, ProbeResult};
use crate::stats::Traffic;
use crate::transport::tls::connector::TlsConnector;

/// One backend server, its health, and what happened on it.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    /// Relative share for weighted algorithms; a reload may change it.
    weight: AtomicU32,
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
    up: AtomicBool,
    draining: AtomicBool,
    /// Taken away by an operator: never picked again; the slot stays so indexes are stable.
    removed: AtomicBool,
    /// Found in DNS rather than configured: a reload of the file leaves it alone.
    pub discovered: bool,
    /// `tls = true`: how its connections start TLS, or why they cannot.
    pub tls: Option<Result<Arc<TlsConnector>, String>>,
    tls_config: Option<BackendTls>,
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
    fn new(config: &BackendConfig) -> Backend {
        Backend {
            name: config.name.clone(),
            address: config.address,
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

    fn lock_health(&self) -> std::sync::MutexGuard<'_, HealthStatus> {
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

    fn selectable(&self, fail_open: bool) -> bool {
        !self.removed.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && (fail_open || self.up.load(Ordering::Relaxed))
    }
}

/// The backends, in configuration order then in the order they were added, and how one is
/// chosen. Shared by the reactor, the health thread and the management thread; only the reactor
/// changes the list (on the management thread's commands), rarely, so a read-write lock costs the
/// request path one uncontended read.
#[derive(Debug)]
pub struct Backends {
    list: RwLock<Vec<Arc<Backend>>>,
    balancer: Balancer,
    rise: AtomicU32,
    fall: AtomicU32,
    events: Arc<EventBus>,
}

/// Why a change to the backend list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    NotFound(String),
    Duplicate(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::NotFound(name) => write!(f, "no backend named {name:?}"),
            ChangeError::Duplicate(name) => write!(f, "a backend named {name:?} already exists"),
        }
    }
}

impl Backends {
    pub fn new(configs: &[BackendConfig], algorithm: Algorithm, health: &HealthConfig) -> Backends {
        Backends::with_events(configs, algorithm, health, Arc::new(EventBus::default()))
    }

    pub fn with_events(
        configs: &[BackendConfig],
        algorithm: Algorithm,
        health: &HealthConfig,
        events: Arc<EventBus>,
    ) -> Backends {
        Backends {
            list: RwLock::new(configs.iter().map(|c| Arc::new(Backend::new(c))).collect()),
            balancer: Balancer::new(algorithm, false),
            rise: AtomicU32::new(health.rise),
            fall: AtomicU32::new(health.fall),
            events,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Backend>>> {
        // Writers only push or flip flags: a panic mid-write cannot leave the list torn.
        self.list.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Backend>>> {
        self.list.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots in the list, removed backends included.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Backends that can still take requests (not removed).
    pub fn live_count(&self) -> usize {
        self.read()
            .iter()
            .filter(|b| b.state() != BackendState::Removed)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.live_count() == 0
    }

    pub fn get(&self, index: usize) -> Option<Arc<Backend>> {
        self.read().get(index).cloned()
    }

    /// Every backend, removed ones included, with its index.
    pub fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.read().clone()
    }

    /// The live backend called `name`.
    pub fn find(&self, name: &str) -> Option<(usize, Arc<Backend>)> {
        self.read()
            .iter()
            .enumerate()
            .find(|(_, b)| b.name == name && b.state() != BackendState::Removed)
            .map(|(i, b)| (i, Arc::clone(b)))
    }

    /// Picks a backend that is up and not draining, none of `exclude`. When none is left, fails
    /// open: backends marked down are tried too, since a stale verdict must not turn into a
    /// certain 503.
    pub fn pick(&self, exclude: &[usize]) -> Option<usize> {
        let list = self.read();
        let view = |fail_open: bool| {
            let list = &list;
            move |i: usize| {
                let b = &list[i];
                Candidate {
                    eligible: b.selectable(fail_open),
                    weight: b.weight(),
                    in_flight: b.in_flight.load(Ordering::Relaxed),
                }
            }
        };
        let n = list.len();
        self.balancer
            .select(n, view(false), exclude, None)
            .or_else(|| self.balancer.select(n, view(true), exclude, None))
    }

    /// Adds a backend at runtime; returns its index.
    pub fn add(&self, config: &BackendConfig) -> Result<usize, ChangeError> {
        self.insert(Backend::new(config))
    }

    /// Adds a backend found in DNS: it starts down and takes traffic after `rise` passing
    /// health checks, so an address that is published before it serves gets no request.
    pub fn add_discovered(&self, config: &BackendConfig) -> Result<usize, ChangeError> {
        let mut backend = Backend::new(config);
        backend.discovered = true;
        backend.up.store(false, Ordering::Relaxed);
        {
            let mut health = backend.lock_health();
            health.tracker.force_down();
            health.last_change_reason = "discovered; waiting for health checks".to_string();
        }
        self.insert(backend)
    }

    fn insert(&self, backend: Backend) -> Result<usize, ChangeError> {
        let config = BackendConfig {
            name: backend.name.clone(),
            address: backend.address,
            weight: backend.weight(),
            tls: backend.tls_config.clone(),
            backup: false,
        };
        let mut list = self.write();
        if list
            .iter()
            .any(|b| b.name == config.name && b.state() != BackendState::Removed)
        {
            return Err(ChangeError::Duplicate(config.name.clone()));
        }
        list.push(Arc::new(backend));
        drop(list);
        info!("backend {} at {} added", config.name, config.address);
        self.announce("add", &config.name);
        Ok(self.len() - 1)
    }

    /// Removes a backend at runtime: it gets no new requests; those in flight finish.
    pub fn remove(&self, name: &str) -> Result<usize, ChangeError> {
        let (index, backend) = self
            .find(name)
            .ok_or_else(|| ChangeError::NotFound(name.to_string()))?;
        backend.removed.store(true, Ordering::Relaxed);
        info!("backend {name} removed");
        self.announce("remove", name);
        Ok(index)
    }

    /// Drains (no new requests; those in flight finish) or enables a backend.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<usize, ChangeError> {
        let (index, backend) = self
            .find(name)
            .ok_or_else(|| ChangeError::NotFound(name.to_string()))?;
        backend.draining.store(draining, Ordering::Relaxed);
        let action = if draining { "drain" } else { "enable" };
        info!("backend {name}: {action}");
        self.announce(action, name);
        Ok(index)
    }

    /// New rise and fall thresholds (a reload).
    pub fn set_thresholds(&self, rise: u32, fall: u32) {
        self.rise.store(rise, Ordering::Relaxed);
        self.fall.store(fall, Ordering::Relaxed);
    }

    /// Makes the live backends match `configs` (a reload): new names are added, missing ones
    /// removed, a changed address is a removal and an addition, a changed weight is applied in
    /// place. Returns the indexes removed.
    pub fn reconcile(&self, configs: &[BackendConfig]) -> Vec<usize> {
        let mut removed = Vec::new();
        for (index, b) in self.snapshot().iter().enumerate() {
            if b.state() == BackendState::Removed || b.discovered {
                continue;
            }
            // A new address or new TLS settings make another backend of the same name.
            let keep = configs
                .iter()
                .any(|c| c.name == b.name && c.address == b.address && c.tls == b.tls_config);
            if !keep && self.remove(&b.name).is_ok() {
                removed.push(index);
            }
        }
        for config in configs {
            match self.find(&config.name) {
                Some((_, b)) => {
                    if b.weight() != config.weight {
                        info!(
                            "backend {}: weight {} -> {}",
                            b.name,
                            b.weight(),
                            config.weight
                        );
                        b.weight.store(config.weight, Ordering::Relaxed);
                    }
                }
                None => {
                    // Cannot be a duplicate: the name was just looked up.
                    let _ = self.add(config);
                }
            }
        }
        removed
    }

    fn announce(&self, action: &'static str, backend: &str) {
        self.events.publish(Event::Config {
            time: SystemTime::now(),
            action,
            backend: backend.to_string(),
        });
    }

    /// Applies an active health check result.
    pub fn observe_probe(&self, result: &ProbeResult) {
        let Some(backend) = self.get(result.backend) else {
            return;
        };
        if backend.state() == BackendState::Removed {
            // A probe that was under way when its backend was removed.
            return;
        }
        let mut health = backend.lock_health();
        health.last_check = Some(result.at);
        health.last_ok = Some(result.ok);
        health.last_detail.clone_from(&result.detail);
        health.last_latency = result.latency;
        let (rise, fall) = (
            self.rise.load(Ordering::Relaxed),
            self.fall.load(Ordering::Relaxed),
        );
        if health.tracker.observe(result.ok, rise, fall) {
            let up = health.tracker.is_up();
            health.last_change = result.at;
            health.flips += 1;
            backend.up.store(up, Ordering::Relaxed);
            let (state, rule, count) = if up {
                ("up", "rise", rise)
            } else {
                ("down", "fall", fall)
            };
            let reason = format!("health check {} ({rule} {count})", result.detail);
            info!("backend {} is {state}: {reason}", backend.name);
            health.last_change_reason.clone_from(&reason);
            drop(health);
            self.events.publish(Event::Health {
                time: result.at,
                backend: backend.name.clone(),
                up,
                reason,
            });
        }
    }

    /// Takes a backend out of rotation after a failure on live traffic; active checks bring it
    /// back.
    pub fn mark_down(&self, index: usize, reason: &str) {
        let Some(backend) = self.get(index) else {
            return;
        };
        let mut health = backend.lock_health();
        if health.tracker.force_down() {
            let now = SystemTime::now();
            health.last_change = now;
            health.flips += 1;
            let reason = format!("{reason} on live traffic");
            health.last_change_reason.clone_from(&reason);
            backend.up.store(false, Ordering::Relaxed);
            drop(health);
            info!("backend {} is down: {reason}", backend.name);
            self.events.publish(Event::Health {
                time: now,
                backend: backend.name.clone(),
                up: false,
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests;
