//! Power of two choices: two allowed backends drawn at random, the less loaded one wins. Nearly
//! least-connections' balance without its scan, and no herd onto one idle backend.

use super::{less_loaded, Candidate};

/// Stateless: the draws come from the thread's own generator.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl PowerOfTwo {
    /// Picks among `n` backends, seen through `view`, `count` (> 0) of them `allowed`.
    pub fn select(
        &self,
        n: usize,
        count: usize,
        view: impl Fn(usize) -> Candidate,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, down, up};
    use super::super::Balancer;
    use crate::config::Algorithm;

    #[test]
    fn power_of_two_never_picks_the_most_loaded_of_three() {
        let b = Balancer::new(Algorithm::PowerOfTwo, false);
        let c = [up(1, 0), up(1, 100), up(1, 50)];
        let picks = counts(&b, &c, &[], 3000);
        // The busiest backend can only win a draw against itself, which is never made.
        assert_eq!(picks[1], 0);
        assert!(picks[0] > picks[2], "{picks:?}");
    }

    #[test]
    fn power_of_two_with_one_candidate_picks_it() {
        let b = Balancer::new(Algorithm::PowerOfTwo, false);
        let c = [down(), up(1, 9)];
        assert_eq!(counts(&b, &c, &[], 50), [0, 50]);
    }
}
