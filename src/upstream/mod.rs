//! Backends as the reactor sees them: every backend of every pool in one table (named by
//! [`BackendId`]s, which the idle connection pool, the health thread and requests in flight
//! hold, and which never reach a later backend put in the same slot), the pools they belong to
//! and how one is chosen, runtime changes, and the pool of idle keep-alive connections to each.
//!
//! - `backend`: one backend's state and counters;
//! - `slots`: the table, its reuse of removed backends' slots, and the ids;
//! - `pools`: a pool's policy and the choice among its members;
//! - `pool`: the idle keep-alive connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use log::info;

mod backend;
pub mod h2;
mod pool;
mod pools;
mod slots;

pub use backend::{Backend, BackendState, HealthStatus};
pub use pool::{IdleExchange, Pool};
pub use pools::{Affinity, PoolPolicy, PoolState};
pub use slots::{BackendId, RETAINED_REMOVED};

use slots::Slots;

use crate::config::{
    Algorithm, BackendConfig, BackendProtocol, Config, HealthConfig, PoolConfig, DEFAULT_POOL,
};
use crate::events::{Event, EventBus};
use crate::health::{ProbeResult, ProbeTarget};

/// The backends of every pool, in configuration order then in the order they were added, and
/// the pools. Shared by the reactors, the health thread and the management thread; only the
/// reactors change them (on reloads and the management thread's commands), rarely, so a
/// read-write lock costs the request path one uncontended read.
#[derive(Debug)]
pub struct Backends {
    inner: RwLock<Inner>,
    events: Arc<EventBus>,
    /// Removals so far: a reactor that sees it move drops its idle connections to backends
    /// that are gone, whichever reactor carried out the removal.
    removals: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    list: Slots,
    pools: Vec<PoolState>,
}

/// Why a change to the backend list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    NotFound(String),
    Duplicate(String),
    NoPool(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::NotFound(name) => write!(f, "no backend named {name:?}"),
            ChangeError::Duplicate(name) => write!(f, "a backend named {name:?} already exists"),
            ChangeError::NoPool(name) => write!(f, "no pool named {name:?}"),
        }
    }
}

/// A pool as the admin API shows it.
#[derive(Debug, Clone)]
pub struct PoolView {
    pub index: usize,
    pub name: String,
    pub policy: Arc<PoolPolicy>,
    /// Its backends (removed ones left out), in the order they joined.
    pub members: Vec<Arc<Backend>>,
}

impl Backends {
    /// One pool, `default`, of `configs` (tests, and setups without `[[pool]]`).
    pub fn new(configs: &[BackendConfig], algorithm: Algorithm, health: &HealthConfig) -> Backends {
        let config = Config {
            algorithm,
            health: health.clone(),
            backends: configs.to_vec(),
            ..Config::default()
        };
        Backends::from_pools(&config.pools_in_effect(), Arc::new(EventBus::default()))
    }

    pub fn from_pools(pools: &[PoolConfig], events: Arc<EventBus>) -> Backends {
        let backends = Backends {
            inner: RwLock::new(Inner {
                list: Slots::default(),
                pools: pools.iter().map(PoolState::new).collect(),
            }),
            events,
            removals: AtomicU64::new(0),
        };
        for (pool, config) in pools.iter().enumerate() {
            for backend in &config.backends {
                // Names are unique across pools in a validated config.
                let _ = backends.insert(pool, Backend::new(backend, pool, &config.name), false);
            }
        }
        backends
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Writers fill or empty one slot, or flip flags: a panic mid-write cannot leave the
        // table torn.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots in the table: the most backends held at once, live or removed but still listed
    /// (at most [`RETAINED_REMOVED`] of those), however many ever came and went.
    pub fn slots(&self) -> usize {
        self.read().list.len()
    }

    /// Backends that can still take requests (not removed), in every pool.
    pub fn live_count(&self) -> usize {
        self.read()
            .list
            .iter()
            .filter(|(_, b)| b.state() != BackendState::Removed)
            .count()
    }

    /// Backends of `pool` that can still take requests.
    pub fn live_count_in(&self, pool: usize) -> usize {
        self.read().pools.get(pool).map_or(0, |p| p.members.len())
    }

    pub fn is_empty(&self) -> bool {
        self.live_count() == 0
    }

    /// How many backends were removed so far (see [`Backends::is_live`]).
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Whether `id` names a backend that was not removed.
    pub fn is_live(&self, id: BackendId) -> bool {
        self.read()
            .list
            .get(id)
            .is_some_and(|b| b.state() != BackendState::Removed)
    }

    /// The backend `id` names; `None` once it is gone from the table, even if its slot holds
    /// another backend now.
    pub fn get(&self, id: BackendId) -> Option<Arc<Backend>> {
        self.read().list.get(id).cloned()
    }

    /// The backend in slot `slot` now: the configured backends fill slots 0, 1, ... in order,
    /// which is how tests name them.
    pub fn in_slot(&self, slot: usize) -> Option<Arc<Backend>> {
        self.read().list.in_slot(slot).cloned()
    }

    /// Every backend listed (the recently removed included), in the order they were added.
    pub fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.read().list.in_order()
    }

    /// The live backend called `name`.
    pub fn find(&self, name: &str) -> Option<(BackendId, Arc<Backend>)> {
        find_in(&self.read().list, name)
    }

    /// The pool called `name`, unless a reload removed it.
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.read()
            .pools
            .iter()
            .position(|p| p.name == name && !p.removed)
    }

    /// The name of pool `index`.
    pub fn pool_name(&self, index: usize) -> Option<String> {
        self.read().pools.get(index).map(|p| p.name.clone())
    }

    /// The policy of pool `index`.
    pub fn policy(&self, index: usize) -> Option<Arc<PoolPolicy>> {
        self.read().pools.get(index).map(|p| Arc::clone(&p.policy))
    }

    /// The pools a reload has not removed, in order.
    pub fn pools(&self) -> Vec<PoolView> {
        let inner = self.read();
        inner
            .pools
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.removed)
            .map(|(index, p)| PoolView {
                index,
                name: p.name.clone(),
                policy: Arc::clone(&p.policy),
                members: p
                    .members
                    .iter()
                    .filter_map(|&id| inner.list.get(id).cloned())
                    .collect(),
            })
            .collect()
    }

    /// Picks a backend of `pool` for a request: the one its sticky cookie names if that one is
    /// up and not draining; else by the pool's algorithm over the primaries that are up, then
    /// the backups that are up; when none is, fails open over the ones marked down, since a
    /// stale verdict must not turn into a certain 503. Never one of `exclude`.
    pub fn choose(
        &self,
        pool: usize,
        affinity: Affinity,
        exclude: &[BackendId],
        now: Instant,
    ) -> Option<BackendId> {
        let inner = self.read();
        let state = inner.pools.get(pool).filter(|p| !p.removed)?;
        state.choose(&inner.list, affinity, exclude, now)
    }

    /// [`Backends::choose`] in the first pool, without affinity.
    pub fn pick(&self, exclude: &[BackendId]) -> Option<BackendId> {
        self.choose(0, Affinity::default(), exclude, Instant::now())
    }

    /// Adds a backend to `pool` at runtime; returns its id.
    pub fn add(&self, pool: &str, config: &BackendConfig) -> Result<BackendId, ChangeError> {
        let index = self
            .pool_index(pool)
            .ok_or_else(|| ChangeError::NoPool(pool.to_string()))?;
        self.insert(index, Backend::new(config, index, pool), true)
    }

    /// Adds a backend found in DNS to `pool`: it starts down and takes traffic after `rise`
    /// passing health checks, so an address that is published before it serves gets no request.
    pub fn add_discovered(
        &self,
        pool: &str,
        config: &BackendConfig,
    ) -> Result<BackendId, ChangeError> {
        let index = self
            .pool_index(pool)
            .ok_or_else(|| ChangeError::NoPool(pool.to_string()))?;
        let mut backend = Backend::new(config, index, pool);
        backend.discovered = true;
        backend.up.store(false, Ordering::Relaxed);
        {
            let mut health = backend.lock_health();
            health.tracker.force_down();
            health.last_change_reason = "discovered; waiting for health checks".to_string();
        }
        self.insert(index, backend, true)
    }

    fn insert(
        &self,
        pool: usize,
        backend: Backend,
        announce: bool,
    ) -> Result<BackendId, ChangeError> {
        let (name, address) = (backend.name.clone(), backend.address);
        let mut inner = self.write();
        if find_in(&inner.list, &name).is_some() {
            return Err(ChangeError::Duplicate(name));
        }
        let index = inner.list.insert(Arc::new(backend));
        let Inner { list, pools } = &mut *inner;
        if let Some(p) = pools.get_mut(pool) {
            p.members.push(index);
            p.rebuild(list);
        }
        drop(inner);
        if announce {
            info!("backend {name} at {address} added");
            self.announce("add", &name);
        }
        Ok(index)
    }

    /// Removes a backend at runtime: it gets no new requests; those in flight finish. It stays
    /// listed, as removed, until [`RETAINED_REMOVED`] later removals; then its slot is reused.
    pub fn remove(&self, name: &str) -> Result<BackendId, ChangeError> {
        let mut inner = self.write();
        let (index, backend) =
            find_in(&inner.list, name).ok_or_else(|| ChangeError::NotFound(name.to_string()))?;
        backend.removed.store(true, Ordering::Relaxed);
        let Inner { list, pools } = &mut *inner;
        if let Some(p) = pools.get_mut(backend.pool) {
            p.members.retain(|&m| m != index);
            p.rebuild(list);
        }
        list.retire(index);
        drop(inner);
        self.removals.fetch_add(1, Ordering::Release);
        info!("backend {name} removed");
        self.announce("remove", name);
        Ok(index)
    }

    /// Drains (no new requests; those in flight finish) or enables a backend.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<BackendId, ChangeError> {
        let (index, backend) = self
            .find(name)
            .ok_or_else(|| ChangeError::NotFound(name.to_string()))?;
        backend.draining.store(draining, Ordering::Relaxed);
        let action = if draining { "drain" } else { "enable" };
        info!("backend {name}: {action}");
        self.announce(action, name);
        Ok(index)
    }

    /// Makes the pools and their backends match `pools` (a reload): new pools are added,
    /// missing ones removed with their backends, policies replaced; within each pool new
    /// backend names are added, missing ones removed, a changed address, TLS, backup flag or
    /// pool is a removal and an addition, a changed weight is applied in place. Backends found
    /// in DNS stay unless their pool goes. Returns the ids removed.
    pub fn reconcile(&self, pools: &[PoolConfig]) -> Vec<BackendId> {
        {
            let mut inner = self.write();
            let Inner {
                list,
                pools: states,
            } = &mut *inner;
            for config in pools {
                match states
                    .iter_mut()
                    .find(|p| p.name == config.name && !p.removed)
                {
                    Some(state) => state.set_policy(config, list),
                    None => {
                        info!("pool {} added", config.name);
                        states.push(PoolState::new(config));
                    }
                }
            }
            for state in states.iter_mut().filter(|p| !p.removed) {
                if !pools.iter().any(|c| c.name == state.name) {
                    info!("pool {} removed", state.name);
                    state.removed = true;
                }
            }
        }
        let mut removed = Vec::new();
        let listed: Vec<(BackendId, Arc<Backend>)> = self
            .read()
            .list
            .iter()
            .filter(|(_, b)| b.state() != BackendState::Removed)
            .map(|(id, b)| (id, Arc::clone(b)))
            .collect();
        for (index, b) in listed {
            let pool = self
                .read()
                .pools
                .get(b.pool)
                .map(|p| (p.removed, p.name.clone()));
            let Some((pool_removed, pool_name)) = pool else {
                continue;
            };
            let keep = if pool_removed {
                false
            } else if b.discovered {
                true
            } else {
                let current = b.config();
                pools
                    .iter()
                    .filter(|p| p.name == pool_name)
                    .flat_map(|p| &p.backends)
                    .any(|c| {
                        c.name == current.name
                            && c.address == current.address
                            && c.tls == current.tls
                            && c.backup == current.backup
                    })
            };
            if !keep && self.remove(&b.name).is_ok() {
                removed.push(index);
            }
        }
        for pool in pools {
            for config in &pool.backends {
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
                            let mut inner = self.write();
                            let Inner { list, pools } = &mut *inner;
                            if let Some(p) = pools.get_mut(b.pool) {
                                p.rebuild(list);
                            }
                        }
                    }
                    None => {
                        // Cannot be a duplicate: the name was just looked up.
                        let _ = self.add(&pool.name, config);
                    }
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

    /// What the health thread probes: every backend not removed, with its pool's checks.
    pub fn probe_targets(&self) -> Vec<ProbeTarget> {
        let inner = self.read();
        inner
            .list
            .iter()
            .filter(|(_, b)| b.state() != BackendState::Removed)
            .filter_map(|(backend, b)| {
                let pool = inner.pools.get(b.pool)?;
                Some(ProbeTarget {
                    backend,
                    address: b.address,
                    tls: b.tls.as_ref().and_then(|t| t.as_ref().ok()).cloned(),
                    check: Arc::clone(&pool.policy.health),
                    h2: pool.policy.protocol == BackendProtocol::H2,
                })
            })
            .collect()
    }

    /// Applies an active health check result, by the rise and fall of the backend's pool.
    pub fn observe_probe(&self, result: &ProbeResult) {
        let Some(backend) = self.get(result.backend) else {
            return;
        };
        if backend.state() == BackendState::Removed {
            // A probe that was under way when its backend was removed.
            return;
        }
        let (rise, fall) = self
            .policy(backend.pool)
            .map_or((1, 1), |p| (p.health.rise, p.health.fall));
        let mut health = backend.lock_health();
        health.last_check = Some(result.at);
        health.last_ok = Some(result.ok);
        health.last_detail.clone_from(&result.detail);
        health.last_latency = result.latency;
        if health.tracker.observe(result.ok, rise, fall) {
            let up = health.tracker.is_up();
            health.last_change = result.at;
            health.flips += 1;
            if up {
                backend.came_up(Instant::now());
            }
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
    pub fn mark_down(&self, index: BackendId, reason: &str) {
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

fn find_in(list: &Slots, name: &str) -> Option<(BackendId, Arc<Backend>)> {
    list.iter()
        .find(|(_, b)| b.name == name && b.state() != BackendState::Removed)
        .map(|(id, b)| (id, Arc::clone(b)))
}

/// The pool `default`'s index in a set built from [`Config::pools_in_effect`], if it has one.
pub fn default_pool(backends: &Backends) -> Option<usize> {
    backends.pool_index(DEFAULT_POOL)
}

#[cfg(test)]
mod tests;
