//! Choosing a backend for a request: one pure selection algorithm per file, and the
//! [`Balancer`] that dispatches to the one configured.
//!
//! Selection sees each backend only through a [`Candidate`] (may it take requests, its weight,
//! its requests in flight), skips the ones that may not or that the caller excludes, and does
//! at most a bounded number of passes over the list. Which backends are up, and the fail-open
//! rule when none is, are the caller's business ([`crate::upstream::Backends::pick`]).
//!
//! - [`round_robin`], [`weighted_round_robin`], [`least_connections`], [`power_of_two`],
//!   [`consistent_hash`] (a Ketama ring): the algorithms `algorithm = ...` names.
//! - [`slow_start`]: the weight ramp of a backend back up, applied through [`Candidate::weight`].
//! - [`sticky`]: the opaque cookie value that names a backend.

pub mod consistent_hash;
pub mod least_connections;
pub mod power_of_two;
pub mod round_robin;
pub mod slow_start;
pub mod sticky;
pub mod weighted_round_robin;

use crate::config::Algorithm;

use consistent_hash::{Ketama, Member};
use least_connections::LeastConnections;
use power_of_two::PowerOfTwo;
use round_robin::RoundRobin;
use weighted_round_robin::WeightedRoundRobin;

/// What selection needs to know about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Up and not draining (or, when failing open, not draining).
    pub eligible: bool,
    pub weight: u32,
    pub in_flight: u64,
}

/// The selection state of one algorithm.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    WeightedRoundRobin(WeightedRoundRobin),
    LeastConnections(LeastConnections),
    PowerOfTwo(PowerOfTwo),
    /// The ring, and the turns taken for requests without a key (HAProxy does the same when
    /// the hashed header or cookie is missing).
    ConsistentHash(Ketama, RoundRobin),
}

impl Balancer {
    /// `weighted` makes round-robin weighted: slow start works through weights, which plain
    /// round-robin ignores (smooth weighted round-robin over equal weights is round-robin).
    pub fn new(algorithm: Algorithm, weighted: bool) -> Balancer {
        match algorithm {
            Algorithm::RoundRobin if weighted => {
                Balancer::WeightedRoundRobin(WeightedRoundRobin::default())
            }
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
            Algorithm::WeightedRoundRobin => {
                Balancer::WeightedRoundRobin(WeightedRoundRobin::default())
            }
            Algorithm::LeastConnections => Balancer::LeastConnections(LeastConnections::default()),
            Algorithm::PowerOfTwo => Balancer::PowerOfTwo(PowerOfTwo),
            Algorithm::ConsistentHash => {
                Balancer::ConsistentHash(Ketama::default(), RoundRobin::default())
            }
        }
    }

    /// The backends changed: a ring is rebuilt from `members` (every backend that may take
    /// keys, eligible or not: eligibility is checked at each lookup). Other algorithms keep
    /// no per-backend state that a change invalidates.
    pub fn rebuild(&mut self, members: &[Member]) {
        if let Balancer::ConsistentHash(ring, _) = self {
            *ring = Ketama::new(members);
        }
    }

    /// Picks among `n` backends, seen through `view`, none of those in `exclude`; `key` is the
    /// request's hash for `consistent_hash` (the others ignore it).
    pub fn select(
        &self,
        n: usize,
        view: impl Fn(usize) -> Candidate,
        exclude: &[usize],
        key: Option<u64>,
    ) -> Option<usize> {
        self.select_by(n, |i| view(i).eligible && !exclude.contains(&i), &view, key)
    }

    /// As [`Balancer::select`], with eligibility asked apart from the load: round-robin and
    /// hashing never need a backend's weight or requests in flight, so they are not read.
    pub fn select_by(
        &self,
        n: usize,
        allowed_now: impl Fn(usize) -> bool,
        view: impl Fn(usize) -> Candidate,
        key: Option<u64>,
    ) -> Option<usize> {
        // Each backend is looked at once: up to 64 of them, the answers are kept in a mask that
        // the algorithm reads instead of asking again.
        let small = n <= 64;
        let mut mask = 0u64;
        let count = if small {
            for i in 0..n {
                if allowed_now(i) {
                    mask |= 1 << i;
                }
            }
            mask.count_ones() as usize
        } else {
            (0..n).filter(|&i| allowed_now(i)).count()
        };
        // Counted once here so that no algorithm has to handle an empty choice.
        if count == 0 {
            return None;
        }
        let allowed = |i: usize| {
            if small {
                i < 64 && (mask >> i) & 1 == 1
            } else {
                allowed_now(i)
            }
        };
        match self {
            Balancer::RoundRobin(b) => b.select(n, count, allowed),
            Balancer::WeightedRoundRobin(b) => b.select(n, |i| allowed(i).then(|| view(i).weight)),
            Balancer::LeastConnections(b) => b.select(n, &view, allowed),
            Balancer::PowerOfTwo(b) => b.select(n, count, &view, allowed),
            Balancer::ConsistentHash(ring, turns) => match key {
                Some(key) if !ring.is_empty() => ring
                    .get_allowed(key, |i| i < n && allowed(i))
                    .or_else(|| turns.select(n, count, allowed)),
                _ => turns.select(n, count, allowed),
            },
        }
    }
}

/// Fewer requests in flight per unit of weight; compared by cross-multiplying. Shared by the
/// two load-aware algorithms so that they agree on what "less loaded" means.
fn less_loaded(a: &Candidate, b: &Candidate) -> bool {
    u128::from(a.in_flight) * u128::from(b.weight.max(1))
        < u128::from(b.in_flight) * u128::from(a.weight.max(1))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn up(weight: u32, in_flight: u64) -> Candidate {
        Candidate {
            eligible: true,
            weight,
            in_flight,
        }
    }

    pub(crate) fn down() -> Candidate {
        Candidate {
            eligible: false,
            weight: 1,
            in_flight: 0,
        }
    }

    pub(crate) fn counts(
        b: &Balancer,
        c: &[Candidate],
        exclude: &[usize],
        picks: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; c.len()];
        for _ in 0..picks {
            let i = b.select(c.len(), |i| c[i], exclude, None).expect("a pick");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn every_algorithm_skips_down_and_excluded_backends() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections,
            Algorithm::PowerOfTwo,
            Algorithm::ConsistentHash,
        ] {
            let mut b = Balancer::new(algorithm, false);
            let ids = ["a", "b", "c", "d"];
            let members: Vec<Member> = (0..4)
                .map(|index| Member {
                    index,
                    id: ids[index],
                    weight: 1,
                    eligible: true,
                })
                .collect();
            b.rebuild(&members);
            let c = [down(), up(1, 5), up(3, 0), down()];
            for key in 0..200u64 {
                let key = Some(consistent_hash::hash_key(&key.to_le_bytes()));
                assert_eq!(b.select(4, |i| c[i], &[2], key), Some(1), "{algorithm:?}");
            }
            assert_eq!(b.select(4, |i| c[i], &[1, 2], None), None, "{algorithm:?}");
            assert_eq!(b.select(0, |i| c[i], &[], None), None, "{algorithm:?}");
        }
    }
}
