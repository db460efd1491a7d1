//! Pools of backends at runtime: each pool's policy (algorithm, affinity, slow start, health
//! checks, retries, timeouts) and its members, and how one member is chosen for a request:
//! sticky cookie first, then the pool's algorithm over the primaries, then over the backups,
//! then failing open over every member not draining.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::consistent_hash::Member;
use crate::balance::slow_start;
use crate::balance::{Balancer, Candidate};
use crate::config::{Algorithm, BackendProtocol, HashKey, HealthConfig, PoolConfig, StickyConfig};

use super::{BackendId, Slots};

/// What a pool does with its requests, as configured (top-level values filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    pub algorithm: Algorithm,
    pub hash_key: Option<HashKey>,
    pub sticky: Option<StickyConfig>,
    pub slow_start: Duration,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub backend_response_timeout: Duration,
    pub protocol: BackendProtocol,
    pub health: Arc<HealthConfig>,
}

impl PoolPolicy {
    pub fn of(config: &PoolConfig) -> PoolPolicy {
        PoolPolicy {
            algorithm: config.algorithm,
            hash_key: config.hash_key.clone(),
            sticky: config.sticky.clone(),
            slow_start: config.slow_start,
            retries: config.retries,
            connect_timeout: config.connect_timeout,
            backend_response_timeout: config.backend_response_timeout,
            protocol: config.protocol,
            health: Arc::new(config.health.clone()),
        }
    }

    fn balancer(&self) -> Balancer {
        Balancer::new(self.algorithm, !self.slow_start.is_zero())
    }
}

/// What a request brings to the choice of its backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Affinity {
    /// The hash of the pool's `hash_key` in this request, when it has one.
    pub key: Option<u64>,
    /// The backend id its sticky cookie names, when it sent one.
    pub sticky: Option<u64>,
}

/// One pool at runtime.
#[derive(Debug)]
pub struct PoolState {
    pub name: String,
    pub policy: Arc<PoolPolicy>,
    /// Its backends that are not removed, in the order they joined.
    pub(super) members: Vec<BackendId>,
    balancer: Balancer,
    /// Taken out by a reload: no route leads here any more; the slot stays so that indexes
    /// held by routes and requests in flight stay valid.
    pub removed: bool,
}

/// Which members a pass of the choice may take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Primary,
    Backup,
    /// Nothing up is left: any member not draining, since a stale verdict must not turn into a
    /// certain 503.
    FailOpen,
}

impl PoolState {
    pub(super) fn new(config: &PoolConfig) -> PoolState {
        let policy = PoolPolicy::of(config);
        PoolState {
            name: config.name.clone(),
            balancer: policy.balancer(),
            policy: Arc::new(policy),
            members: Vec::new(),
            removed: false,
        }
    }

    /// A reload's new policy; a new algorithm (or slow start turned on or off, which changes
    /// whether round-robin weighs) starts a new balancer.
    pub(super) fn set_policy(&mut self, config: &PoolConfig, list: &Slots) {
        let policy = PoolPolicy::of(config);
        if *self.policy == policy {
            return;
        }
        let rebalance = policy.algorithm != self.policy.algorithm
            || policy.slow_start.is_zero() != self.policy.slow_start.is_zero();
        self.policy = Arc::new(policy);
        if rebalance {
            self.balancer = self.policy.balancer();
            self.rebuild(list);
        }
    }

    /// The members or their weights changed: the hash ring follows.
    pub(super) fn rebuild(&mut self, list: &Slots) {
        let members: Vec<Member> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(index, &g)| {
                let b = list.get(g)?;
                Some(Member {
                    index,
                    id: &b.name,
                    weight: b.weight(),
                    eligible: true,
                })
            })
            .collect();
        self.balancer.rebuild(&members);
    }

    /// The member for a request, none of `exclude`.
    pub(super) fn choose(
        &self,
        list: &Slots,
        affinity: Affinity,
        exclude: &[BackendId],
        now: Instant,
    ) -> Option<BackendId> {
        let member = |i: usize| list.get(self.members[i]).map(|b| (self.members[i], b));
        if let (Some(id), Some(_)) = (affinity.sticky, &self.policy.sticky) {
            let named = (0..self.members.len())
                .filter_map(member)
                .find(|(_, b)| b.cookie_id == id);
            if let Some((g, b)) = named {
                if b.selectable(false) && !exclude.contains(&g) {
                    return Some(g);
                }
            }
        }
        let ramp = self.policy.slow_start;
        let eligible = |tier: Tier| {
            move |i: usize| {
                let Some((g, b)) = member(i) else {
                    return false;
                };
                let admitted = match tier {
                    Tier::Primary => !b.backup && b.selectable(false),
                    Tier::Backup => b.backup && b.selectable(false),
                    Tier::FailOpen => b.selectable(true),
                };
                admitted && !exclude.contains(&g)
            }
        };
        // Read only by the algorithms that weigh load (eligibility is asked apart).
        let load = |i: usize| {
            let Some((_, b)) = member(i) else {
                return Candidate {
                    eligible: false,
                    weight: 0,
                    in_flight: 0,
                };
            };
            let weight = if ramp.is_zero() {
                b.weight()
            } else {
                let factor = b.up_for(now).map_or(1.0, |up| slow_start::factor(up, ramp));
                slow_start::effective_weight(b.weight(), factor)
            };
            Candidate {
                eligible: true,
                weight,
                in_flight: b.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            }
        };
        let n = self.members.len();
        [Tier::Primary, Tier::Backup, Tier::FailOpen]
            .into_iter()
            .find_map(|tier| {
                self.balancer
                    .select_by(n, eligible(tier), load, affinity.key)
            })
            .map(|i| self.members[i])
    }
}
