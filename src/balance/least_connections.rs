//! Least connections: the allowed backend with the fewest requests in flight per unit of
//! weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{less_loaded, Candidate};

/// A rotating start so that ties do not always go to the first backend.
#[derive(Debug, Default)]
pub struct LeastConnections {
    next: AtomicUsize,
}

impl LeastConnections {
    /// Picks among `n` backends, seen through `view`, only those `allowed`.
    pub fn select(
        &self,
        n: usize,
        view: impl Fn(usize) -> Candidate,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<usize> = None;
        for i in (0..n).map(|k| (start + k) % n).filter(|&i| allowed(i)) {
            if best.is_none_or(|b| less_loaded(&view(i), &view(b))) {
                best = Some(i);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, up};
    use super::super::Balancer;
    use crate::config::Algorithm;

    #[test]
    fn least_connections_prefers_fewest_in_flight_per_weight() {
        let b = Balancer::new(Algorithm::LeastConnections, false);
        let c = [up(1, 4), up(1, 2), up(1, 3)];
        assert_eq!(counts(&b, &c, &[], 10), [0, 10, 0]);
        // Weight 3 with 5 in flight (5/3) beats weight 1 with 2 (2/1).
        let c = [up(3, 5), up(1, 2)];
        assert_eq!(counts(&b, &c, &[], 10), [10, 0]);
    }

    #[test]
    fn least_connections_spreads_ties() {
        let b = Balancer::new(Algorithm::LeastConnections, false);
        let c = [up(1, 0); 3];
        assert_eq!(counts(&b, &c, &[], 300), [100, 100, 100]);
    }
}
