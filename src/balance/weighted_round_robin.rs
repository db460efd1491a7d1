//! Weighted round-robin: nginx's smooth variant, each backend's share in proportion to its
//! weight, interleaved rather than in bursts.

use std::sync::Mutex;

/// Per backend, nginx's "current weight". A lock rather than atomics: one pick updates every
/// entry, and the entries must move together.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    current: Mutex<Vec<i64>>,
}

impl WeightedRoundRobin {
    /// Picks among `n` backends; `weight` is `None` for one that is not allowed.
    pub fn select(&self, n: usize, weight: impl Fn(usize) -> Option<u32>) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.resize(n, 0);
        smooth_weighted(&mut current, weight)
    }
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
    use super::super::tests::{counts, down, up};
    use super::super::Balancer;
    use crate::config::Algorithm;

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let b = Balancer::new(Algorithm::WeightedRoundRobin, false);
        let c = [up(5, 0), up(1, 0), up(1, 0)];
        let order: Vec<usize> = (0..7)
            .filter_map(|_| b.select(3, |i| c[i], &[], None))
            .collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, &c, &[], 7000), [5000, 1000, 1000]);
    }

    #[test]
    fn weighted_round_robin_redistributes_when_one_is_down() {
        let b = Balancer::new(Algorithm::WeightedRoundRobin, false);
        let c = [up(2, 0), down(), up(1, 0)];
        assert_eq!(counts(&b, &c, &[], 3000), [2000, 0, 1000]);
    }
}
