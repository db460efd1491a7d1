//! Choosing a backend for a request: one pure selection function per algorithm.
//!
//! Selection sees each backend only through a [`Candidate`] (may it take requests, its weight,
//! its requests in flight), skips the ones that may not or that the caller excludes, and does
//! at most a bounded number of passes over the list. Which backends are up, and the fail-open
//! rule when none is, are the caller's business ([`crate::upstream::Backends::pick`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::Algorithm;

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
    RoundRobin {
        next: AtomicUsize,
    },
    /// Per backend, nginx's "current weight".
    WeightedRoundRobin {
        current: Mutex<Vec<i64>>,
    },
    /// A rotating start so that ties do not always go to the first backend.
    LeastConnections {
        next: AtomicUsize,
    },
    PowerOfTwo,
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Balancer {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin {
                next: AtomicUsize::new(0),
            },
            Algorithm::WeightedRoundRobin => Balancer::WeightedRoundRobin {
                current: Mutex::new(Vec::new()),
            },
            Algorithm::LeastConnections => Balancer::LeastConnections {
                next: AtomicUsize::new(0),
            },
            Algorithm::PowerOfTwo => Balancer::PowerOfTwo,
        }
    }

    /// Picks among `n` backends, seen through `view`, none of those in `exclude`.
    pub fn select(
        &self,
        n: usize,
        view: impl Fn(usize) -> Candidate,
        exclude: &[usize],
    ) -> Option<usize> {
        let allowed = |i: usize| view(i).eligible && !exclude.contains(&i);
        let count = (0..n).filter(|&i| allowed(i)).count();
        if count == 0 {
            return None;
        }
        match self {
            Balancer::RoundRobin { next } => {
                // The k-th allowed backend, so each gets exactly its turn even when others are
                // down (scanning forward from a cursor would favour the backend after a gap).
                let k = next.fetch_add(1, Ordering::Relaxed) % count;
                (0..n).filter(|&i| allowed(i)).nth(k)
            }
            Balancer::WeightedRoundRobin { current } => {
                let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                current.resize(n, 0);
                smooth_weighted(&mut current, |i| allowed(i).then(|| view(i).weight))
            }
            Balancer::LeastConnections { next } => {
                let start = next.fetch_add(1, Ordering::Relaxed) % n;
                let mut best: Option<usize> = None;
                for i in (0..n).map(|k| (start + k) % n).filter(|&i| allowed(i)) {
                    if best.is_none_or(|b| less_loaded(&view(i), &view(b))) {
                        best = Some(i);
                    }
                }
                best
            }
            Balancer::PowerOfTwo => {
                let first = fastrand::usize(..count);
                let mut second = fastrand::usize(..count);
                if count > 1 && second == first {
                    second = (first + 1) % count;
                }
                let a = (0..n).filter(|&i| allowed(i)).nth(first)?;
                let b = (0..n).filter(|&i| allowed(i)).nth(second)?;
                Some(if less_loaded(&view(b), &view(a)) {
                    b
                } else {
                    a
                })
            }
        }
    }
}

/// Fewer requests in flight per unit of weight; compared by cross-multiplying.
fn less_loaded(a: &Candidate, b: &Candidate) -> bool {
    u128::from(a.in_flight) * u128::from(b.weight.max(1))
        < u128::from(b.in_flight) * u128::from(a.weight.max(1))
}

/// nginx's smooth weighted round-robin: every allowed backend gains its weight, the richest is
/// picked and pays the total. Over a cycle each gets exactly its weight's share, interleaved.
fn smooth_weighted(current: &mut [i64], weight: impl Fn(usize) -> Option<u32>) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for i in 0..current.len() {
        let Some(w) = weight(i) else {
            continue;
        };
        let w = i64::from(w.max(1));
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(weight: u32, in_flight: u64) -> Candidate {
        Candidate {
            eligible: true,
            weight,
            in_flight,
        }
    }

    fn down() -> Candidate {
        Candidate {
            eligible: false,
            weight: 1,
            in_flight: 0,
        }
    }

    fn counts(b: &Balancer, c: &[Candidate], exclude: &[usize], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; c.len()];
        for _ in 0..picks {
            let i = b.select(c.len(), |i| c[i], exclude).expect("a pick");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_exact_over_healthy_backends() {
        let b = Balancer::new(Algorithm::RoundRobin);
        assert_eq!(counts(&b, &[up(1, 0); 3], &[], 3000), [1000, 1000, 1000]);
        // A down backend in the middle does not shift its share onto its neighbour.
        let c = [up(1, 0), down(), up(1, 0), up(1, 0)];
        assert_eq!(counts(&b, &c, &[], 3000), [1000, 0, 1000, 1000]);
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let b = Balancer::new(Algorithm::RoundRobin);
        let c = [up(1, 0); 3];
        let order: Vec<usize> = (0..6).filter_map(|_| b.select(3, |i| c[i], &[])).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn every_algorithm_skips_down_and_excluded_backends() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections,
            Algorithm::PowerOfTwo,
        ] {
            let b = Balancer::new(algorithm);
            let c = [down(), up(1, 5), up(3, 0), down()];
            for _ in 0..200 {
                assert_eq!(b.select(4, |i| c[i], &[2]), Some(1), "{algorithm:?}");
            }
            assert_eq!(b.select(4, |i| c[i], &[1, 2]), None, "{algorithm:?}");
            assert_eq!(b.select(0, |i| c[i], &[]), None, "{algorithm:?}");
        }
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let b = Balancer::new(Algorithm::WeightedRoundRobin);
        let c = [up(5, 0), up(1, 0), up(1, 0)];
        let order: Vec<usize> = (0..7).filter_map(|_| b.select(3, |i| c[i], &[])).collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, &c, &[], 7000), [5000, 1000, 1000]);
    }

    #[test]
    fn weighted_round_robin_redistributes_when_one_is_down() {
        let b = Balancer::new(Algorithm::WeightedRoundRobin);
        let c = [up(2, 0), down(), up(1, 0)];
        assert_eq!(counts(&b, &c, &[], 3000), [2000, 0, 1000]);
    }

    #[test]
    fn least_connections_prefers_fewest_in_flight_per_weight() {
        let b = Balancer::new(Algorithm::LeastConnections);
        let c = [up(1, 4), up(1, 2), up(1, 3)];
        assert_eq!(counts(&b, &c, &[], 10), [0, 10, 0]);
        // Weight 3 with 5 in flight (5/3) beats weight 1 with 2 (2/1).
        let c = [up(3, 5), up(1, 2)];
        assert_eq!(counts(&b, &c, &[], 10), [10, 0]);
    }

    #[test]
    fn least_connections_spreads_ties() {
        let b = Balancer::new(Algorithm::LeastConnections);
        let c = [up(1, 0); 3];
        assert_eq!(counts(&b, &c, &[], 300), [100, 100, 100]);
    }

    #[test]
    fn power_of_two_never_picks_the_most_loaded_of_three() {
        let b = Balancer::new(Algorithm::PowerOfTwo);
        let c = [up(1, 0), up(1, 100), up(1, 50)];
        let picks = counts(&b, &c, &[], 3000);
        // The busiest backend can only win a draw against itself, which is never made.
        assert_eq!(picks[1], 0);
        assert!(picks[0] > picks[2], "{picks:?}");
    }

    #[test]
    fn power_of_two_with_one_candidate_picks_it() {
        let b = Balancer::new(Algorithm::PowerOfTwo);
        let c = [down(), up(1, 9)];
        assert_eq!(counts(&b, &c, &[], 50), [0, 50]);
    }
}
