//! Round-robin: each allowed backend in turn, weights ignored.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The cursor shared by every reactor, so that turns are fair over the whole balancer.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// Picks among `n` backends, `count` (> 0) of them `allowed`.
    pub fn select(&self, n: usize, count: usize, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        // The k-th allowed backend, so each gets exactly its turn even when others are
        // down (scanning forward from a cursor would favour the backend after a gap).
        let k = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..n).filter(|&i| allowed(i)).nth(k)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, down, up};
    use super::super::Balancer;
    use crate::config::Algorithm;

    #[test]
    fn round_robin_is_exact_over_healthy_backends() {
        let b = Balancer::new(Algorithm::RoundRobin, false);
        assert_eq!(counts(&b, &[up(1, 0); 3], &[], 3000), [1000, 1000, 1000]);
        // A down backend in the middle does not shift its share onto its neighbour.
        let c = [up(1, 0), down(), up(1, 0), up(1, 0)];
        assert_eq!(counts(&b, &c, &[], 3000), [1000, 0, 1000, 1000]);
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let b = Balancer::new(Algorithm::RoundRobin, false);
        let c = [up(1, 0); 3];
        let order: Vec<usize> = (0..6)
            .filter_map(|_| b.select(3, |i| c[i], &[], None))
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }
}
