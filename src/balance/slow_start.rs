//! Slow start: a backend that comes back up takes a share that grows over `slow_start`, so that
//! a cold cache or JIT is not flattened by its full share at once.
//!
//! [`factor`] is a linear ramp from [`FLOOR`] to 1, like HAProxy's `slowstart`: HAProxy starts
//! at 1/16 of the weight too, but reaches the full weight at 15/16 of the period; here the full
//! weight comes at exactly `slow_start`, which is what the setting reads as. The floor is there
//! because a backend that gets nothing at first also warms nothing up, and its first health
//! checks are not a request mix.
//!
//! [`effective_weight`] turns the factor into the integer weight the weighted algorithms take;
//! every backend's weight must go through it (factor 1 for those not starting), so that the
//! scale cancels out. Round-robin ignores weights, so slow start means nothing to it; the
//! Ketama ring takes it as points ([`super::consistent_hash::Ketama::with_points`] with
//! `KETAMA_POINTS_PER_WEIGHT / WEIGHT_SCALE`), which moves keys only onto the returning backend.
//!
//! When the ramp starts is the caller's business: on a transition from down to up, not at the
//! balancer's own start, when every backend would otherwise be slow together.

use std::time::Duration;

/// The share of its weight a backend gets the moment it is back.
pub const FLOOR: f64 = 1.0 / 16.0;

/// What [`effective_weight`] multiplies weights by: 16 steps per unit of weight, so the floor
/// is one step.
pub const WEIGHT_SCALE: u32 = 16;

/// The fraction of its weight (in `FLOOR..=1`) a backend gets `since_up` after coming back up;
/// 1 when `slow_start` is zero (no slow start).
pub fn factor(since_up: Duration, slow_start: Duration) -> f64 {
    if slow_start.is_zero() || since_up >= slow_start {
        return 1.0;
    }
    let progress = since_up.as_secs_f64() / slow_start.as_secs_f64();
    (FLOOR + (1.0 - FLOOR) * progress).clamp(FLOOR, 1.0)
}

/// `weight × WEIGHT_SCALE × factor`, rounded up, at least 1 for a weight above 0: what the
/// weighted algorithms should see. Saturates rather than wrapping for huge weights.
pub fn effective_weight(weight: u32, factor: f64) -> u32 {
    if weight == 0 {
        return 0;
    }
    let full = u64::from(weight) * u64::from(WEIGHT_SCALE);
    // A NaN factor (never made by `factor`) casts to 0, hence the floor of 1.
    let scaled = (full as f64 * factor.clamp(0.0, 1.0)).ceil() as u64;
    u32::try_from(scaled.clamp(1, full)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::consistent_hash::{hash_ip, Ketama, Member, KETAMA_POINTS_PER_WEIGHT};
    use super::super::{Balancer, Candidate};
    use super::*;
    use crate::config::Algorithm;
    use std::net::{IpAddr, Ipv4Addr};

    const SLOW_START: Duration = Duration::from_secs(30);

    fn at(percent: u64) -> Duration {
        SLOW_START * percent as u32 / 100
    }

    #[test]
    fn the_factor_ramps_linearly_from_the_floor() {
        assert_eq!(factor(Duration::ZERO, SLOW_START), FLOOR);
        assert!((factor(at(50), SLOW_START) - (FLOOR + (1.0 - FLOOR) / 2.0)).abs() < 1e-9);
        assert_eq!(factor(SLOW_START, SLOW_START), 1.0);
        assert_eq!(factor(SLOW_START * 10, SLOW_START), 1.0);
        assert_eq!(factor(Duration::ZERO, Duration::ZERO), 1.0);
        let mut last = 0.0;
        for ms in (0..=30_000).step_by(500) {
            let f = factor(Duration::from_millis(ms), SLOW_START);
            assert!(f >= last && (FLOOR..=1.0).contains(&f), "{ms} ms: {f}");
            last = f;
        }
    }

    #[test]
    fn effective_weights_keep_the_scale_and_a_floor() {
        assert_eq!(effective_weight(1, 1.0), WEIGHT_SCALE);
        assert_eq!(effective_weight(3, 1.0), 3 * WEIGHT_SCALE);
        assert_eq!(effective_weight(1, FLOOR), 1);
        assert_eq!(effective_weight(1, 0.0), 1);
        assert_eq!(effective_weight(1, f64::NAN), 1);
        assert_eq!(effective_weight(2, 0.5), WEIGHT_SCALE);
        assert_eq!(effective_weight(0, 1.0), 0);
        assert_eq!(effective_weight(u32::MAX, 1.0), u32::MAX);
    }

    /// The returning backend's expected share: its factor against two full ones.
    fn expected_share(f: f64) -> f64 {
        f / (2.0 + f)
    }

    #[test]
    fn one_of_three_returning_takes_a_growing_share() {
        let b = Balancer::new(Algorithm::WeightedRoundRobin, false);
        println!("1 of 3 backends back up, slow_start = 30s, weighted_round_robin:");
        for percent in [0, 25, 50, 75, 100] {
            let f = factor(at(percent), SLOW_START);
            let c = [
                effective_weight(1, 1.0),
                effective_weight(1, 1.0),
                effective_weight(1, f),
            ]
            .map(|weight| Candidate {
                eligible: true,
                weight,
                in_flight: 0,
            });
            let picks = 33_000;
            let got = (0..picks)
                .filter(|_| b.select(3, |i| c[i], &[], None) == Some(2))
                .count() as f64
                / f64::from(picks);
            println!(
                "  at {percent:>3} % ({:>4.1} s): factor {f:.3}, weight {:>2} of 16, share {:.1} % \
                 (expected {:.1} %)",
                at(percent).as_secs_f64(),
                c[2].weight,
                got * 100.0,
                expected_share(f) * 100.0
            );
            // The integer weight rounds the factor up by at most 1/16.
            assert!(got >= expected_share(f) - 0.005, "{percent} %: {got}");
            assert!(
                got <= expected_share(f + 1.0 / 16.0) + 0.005,
                "{percent} %: {got}"
            );
        }
    }

    #[test]
    fn on_the_ring_slow_start_moves_keys_only_onto_the_returning_backend() {
        let keys: Vec<u64> = (0..100_000u32)
            .map(|i| hash_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let ids = ["backend-1", "backend-2", "backend-3"];
        let per_weight = KETAMA_POINTS_PER_WEIGHT / WEIGHT_SCALE;
        let ring = |f: f64| {
            let members: Vec<Member> = ids
                .iter()
                .enumerate()
                .map(|(index, id)| Member {
                    index,
                    id,
                    weight: effective_weight(1, if index == 2 { f } else { 1.0 }),
                    eligible: true,
                })
                .collect();
            Ketama::with_points(&members, per_weight)
        };
        // Full weight through the scale is the ring Ketama::new builds.
        let full: Vec<Member> = ids
            .iter()
            .enumerate()
            .map(|(index, id)| Member {
                index,
                id,
                weight: 1,
                eligible: true,
            })
            .collect();
        assert_eq!(ring(1.0), Ketama::new(&full));

        println!("1 of 3 backends back up, slow_start = 30s, consistent_hash (Ketama):");
        let mut before: Option<Vec<Option<usize>>> = None;
        for percent in [0, 25, 50, 75, 100] {
            let r = ring(factor(at(percent), SLOW_START));
            let now: Vec<Option<usize>> = keys.iter().map(|&k| r.get(k)).collect();
            let share = now.iter().filter(|&&b| b == Some(2)).count() as f64 / 1e5;
            println!("  at {percent:>3} %: share {:.1} %", share * 100.0);
            if let Some(before) = &before {
                assert!(before
                    .iter()
                    .zip(&now)
                    .all(|(b, n)| b == n || *n == Some(2)));
            }
            before = Some(now);
        }
    }
}
