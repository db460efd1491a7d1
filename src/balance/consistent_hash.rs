//! Consistent hashing: a key (client address, header, cookie, URI) always goes to the same
//! backend, and a change to the set of backends moves as few keys as it can. A [`Ketama`] ring,
//! pure and built from a list of [`Member`]s, queried with a [`hash_key`] / [`hash_ip`]: 160
//! points per unit of weight (nginx's `hash ... consistent` count), a key belongs to the first
//! point at or after its hash.
//!
//! # Why Ketama and not Maglev
//!
//! Both were built and measured (`cargo run --release --example consistent_hash`, which keeps
//! the Maglev table of 65,537 slots, the paper's permutation fill, as its baseline; the 2-CPU
//! development machine, 1,000,000 client addresses, figures in docs/BENCHMARKS.md):
//!
//! | N = 10 / 100 | build | lookup | size | max share deviation | keys moved, one removed |
//! |---|--:|--:|--:|--:|--:|
//! | Ketama, 160 points | 23 µs / 0.45 ms | 16 / 26 ns | 25 / 250 KiB | 11.8 / 22.4 % | 10.00 / 0.99 % (0 between survivors) |
//! | Maglev, 65,537 slots | 2.2 / 3.5 ms | 3.3 / 3.2 ns | 256 KiB | 0.3 / 2.6 % | 10.24 / 1.59 % (0.24 / 0.58 between survivors) |
//!
//! Maglev balances better and looks up faster, but neither lookup matters next to ~2.6 µs of
//! CPU per proxied request. What decides is how each meets a change, which is what issue #12
//! is about:
//! - A backend going down: skipping it on the ring ([`Ketama::get_allowed`]) is exactly the
//!   ring without it, so health flips need no rebuild and `Balancer::select`'s live view of
//!   eligibility and its retry `exclude` list work as they are. A Maglev table must be rebuilt
//!   (milliseconds, on some thread, then swapped in), and the keys of a skipped slot land
//!   elsewhere than after the rebuild, so they move twice.
//! - Only the lost backend's keys move with Ketama; Maglev also reshuffles 0.2–0.6 % between
//!   survivors, per change.
//! - Slow start ramps a weight over e.g. 30 s: on the ring that adds the returning backend's
//!   points a few at a time and moves keys only onto it; each Maglev step is a rebuild with its
//!   reshuffle.
//!
//! Maglev adds nothing that design can use, so only Ketama is kept. Its cost is balance: with
//! 160 points one backend of 10 gets up to ~12 % more than 1/N (of 100, ~22 %); 1,000 points
//! bring that to 3.6 % (8.7 %) for a 6× larger ring and ~50 % slower lookups
//! ([`Ketama::with_points`]), should issue #12 want it.
//!
//! Members are identified by a stable id (the backend's name, never its slot index, which a
//! reload may change), so a ring built twice from the same set is the same ring, whatever the
//! order of the list. Ids must be unique among the members that take keys.

use std::net::IpAddr;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Points on the [`Ketama`] ring per unit of weight.
pub const KETAMA_POINTS_PER_WEIGHT: u32 = 160;

/// Weights above this count as this much: a weight is only a `u32` in the config, and a ring
/// sized by an unbounded weight would be unbounded too. HAProxy's maximum weight is the same.
pub const MAX_HASH_WEIGHT: u32 = 256;

/// The most points one member gets, whatever the points per weight: 640 KiB of ring.
pub const MAX_POINTS_PER_MEMBER: u32 = KETAMA_POINTS_PER_WEIGHT * MAX_HASH_WEIGHT;

/// One backend as the ring sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The backend's slot in the caller's list: what a lookup returns.
    pub index: usize,
    /// What its positions are derived from: stable across reloads and restarts.
    pub id: &'a str,
    pub weight: u32,
    /// Takes keys; an ineligible member (or one of weight 0) is left off the ring.
    pub eligible: bool,
}

/// The hash of a key's bytes. xxh3 rather than std's `DefaultHasher`: its output is specified
/// and the same on every platform and release, so two balancers (or one before and after an
/// upgrade) send a key to the same backend. std does not promise that `DefaultHasher` stays
/// SipHash-1-3, and its `SipHasher` with fixed keys is deprecated; `xxhash-rust` with only xxh3
/// has no dependencies, and hashes a client address in 2–3 ns, a 25-byte URI in ~7 ns.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The hash of a client address; an IPv4-mapped IPv6 address hashes as the IPv4 one, so that a
/// dual-stack listener does not split one client in two.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => xxh3_64(&v4.octets()),
        IpAddr::V6(v6) => xxh3_64(&v6.octets()),
    }
}

fn takes_keys(m: &&Member) -> bool {
    m.eligible && m.weight > 0
}

/// A Ketama ring: sorted points, each owned by a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ketama {
    /// (position, backend index), sorted; ties (1 in 2^64) broken by index.
    points: Vec<(u64, usize)>,
}

impl Ketama {
    pub fn new(members: &[Member]) -> Ketama {
        Ketama::with_points(members, KETAMA_POINTS_PER_WEIGHT)
    }

    /// A ring of `per_weight` points per unit of weight: more points, closer shares, a larger
    /// ring (16 bytes a point) and a slower build. Also the way to finer weights: weights scaled
    /// by 16 with 10 points per unit give the same ring as [`Ketama::new`], and a backend in
    /// slow start ([`super::slow_start`]) can then own a fraction of its points.
    pub fn with_points(members: &[Member], per_weight: u32) -> Ketama {
        let mut points = Vec::new();
        for m in members.iter().filter(takes_keys) {
            // Point k of a member depends only on its id and k, so a member's points are the same
            // in every ring it is part of: that is what keeps movement to the minimum.
            let count = per_weight
                .saturating_mul(m.weight)
                .min(MAX_POINTS_PER_MEMBER);
            let id = m.id.as_bytes();
            points.extend((0..count).map(|k| (xxh3_64_with_seed(id, u64::from(k)), m.index)));
        }
        points.sort_unstable();
        Ketama { points }
    }

    /// Points on the ring (0 when no member takes keys).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The backend that owns `key`.
    pub fn get(&self, key: u64) -> Option<usize> {
        self.get_allowed(key, |_| true)
    }

    /// The first backend clockwise from `key` that is `allowed`. Skipping a backend here gives
    /// exactly what a ring built without it would, so health changes and retry exclusions need
    /// no rebuild; the walk is over the whole ring at worst (nothing allowed), so callers that
    /// know nothing is should not ask.
    pub fn get_allowed(&self, key: u64, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        let start = self.points.partition_point(|&(p, _)| p < key);
        (0..len)
            .map(|k| self.points[(start + k) % len].1)
            .find(|&i| allowed(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("backend-{i}")).collect()
    }

    fn members<'a>(ids: &'a [String], weights: &[u32], down: &[usize]) -> Vec<Member<'a>> {
        ids.iter()
            .enumerate()
            .map(|(index, id)| Member {
                index,
                id,
                weight: weights.get(index).copied().unwrap_or(1),
                eligible: !down.contains(&index),
            })
            .collect()
    }

    /// 100,000 client addresses, 10.0.0.0 onwards, as `hash_key = "client_ip"` would see them.
    fn keys() -> Vec<u64> {
        (0..100_000u32)
            .map(|i| hash_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .collect()
    }

    fn assign(ring: &Ketama, keys: &[u64]) -> Vec<usize> {
        keys.iter()
            .map(|&k| ring.get(k).expect("a backend"))
            .collect()
    }

    fn shares(assigned: &[usize], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &i in assigned {
            counts[i] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / assigned.len() as f64)
            .collect()
    }

    /// The largest |share − expected| / expected, in %.
    fn max_deviation(shares: &[f64], expected: &[f64]) -> f64 {
        shares
            .iter()
            .zip(expected)
            .map(|(s, e)| (s - e).abs() / e * 100.0)
            .fold(0.0, f64::max)
    }

    fn percents(shares: &[f64]) -> Vec<String> {
        shares.iter().map(|s| format!("{:.1}", s * 100.0)).collect()
    }

    #[test]
    fn each_backend_gets_about_one_nth_of_the_keys() {
        let keys = keys();
        // Measured: 5.1, 5.0 and 11.1 % (the module doc has why that is the price of Ketama).
        for (n, bound) in [(3, 7.0), (5, 7.0), (10, 13.0)] {
            let ids = ids(n);
            let s = shares(&assign(&Ketama::new(&members(&ids, &[], &[])), &keys), n);
            let dev = max_deviation(&s, &vec![1.0 / n as f64; n]);
            println!(
                "N={n}: shares % {:?}, max deviation from 1/N {dev:.1} %",
                percents(&s)
            );
            assert!(dev < bound, "N={n}: {dev:.1} %");
        }
    }

    #[test]
    fn removing_one_moves_only_its_keys_and_returning_moves_them_back() {
        let keys = keys();
        for n in [3, 5, 10] {
            let ids = ids(n);
            let before = assign(&Ketama::new(&members(&ids, &[], &[])), &keys);
            let mut moved_pct = Vec::new();
            for gone in 0..n {
                let after = assign(&Ketama::new(&members(&ids, &[], &[gone])), &keys);
                let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
                let owned = before.iter().filter(|&&b| b == gone).count();
                // Exactly the removed backend's keys move, each to its points' successors.
                assert_eq!(moved, owned, "N={n}, removed {gone}");
                assert!(after.iter().all(|&a| a != gone), "N={n}");
                let share = moved as f64 / keys.len() as f64;
                assert!(
                    (share - 1.0 / n as f64).abs() < 0.15 / n as f64,
                    "N={n}: {share}"
                );
                moved_pct.push(format!("{:.1}", share * 100.0));
                let back = assign(&Ketama::new(&members(&ids, &[], &[])), &keys);
                assert_eq!(back, before, "N={n}: every key moves back");
            }
            println!(
                "N={n}: keys moved when backend i is removed, % {moved_pct:?} (1/N = {:.1} %), \
                 0 between survivors; all move back when it returns",
                100.0 / n as f64
            );
        }
    }

    #[test]
    fn adding_one_takes_keys_only_for_itself() {
        let keys = keys();
        let ids = ids(6);
        let five = assign(&Ketama::new(&members(&ids[..5], &[], &[])), &keys);
        let six = assign(&Ketama::new(&members(&ids, &[], &[])), &keys);
        let moved: Vec<_> = five.iter().zip(&six).filter(|(a, b)| a != b).collect();
        assert!(moved.iter().all(|(_, &b)| b == 5));
        let share = moved.len() as f64 / keys.len() as f64;
        println!(
            "5 → 6 backends: {:.1} % of keys move, all to the new one",
            share * 100.0
        );
        assert!((share - 1.0 / 6.0).abs() < 0.02, "{share}");
    }

    #[test]
    fn weighted_shares_follow_the_weights() {
        let keys = keys();
        let ids = ids(4);
        let weights = [1, 2, 3, 4];
        let expected: Vec<f64> = weights.iter().map(|&w| f64::from(w) / 10.0).collect();
        let s = shares(
            &assign(&Ketama::new(&members(&ids, &weights, &[])), &keys),
            4,
        );
        let dev = max_deviation(&s, &expected);
        println!(
            "weights 1:2:3:4: shares % {:?} (10/20/30/40), max deviation {dev:.1} %",
            percents(&s)
        );
        assert!(dev < 10.0, "{dev:.1} %");
    }

    #[test]
    fn skipping_a_backend_is_the_ring_without_it() {
        let keys = keys();
        let ids = ids(5);
        let all = Ketama::new(&members(&ids, &[], &[]));
        let without = Ketama::new(&members(&ids, &[], &[2]));
        for &k in &keys[..10_000] {
            assert_eq!(all.get_allowed(k, |i| i != 2), without.get(k));
        }
        assert_eq!(all.get_allowed(keys[0], |_| false), None);
    }

    #[test]
    fn the_ring_does_not_depend_on_the_order_of_the_list() {
        let ids = ids(6);
        let forward = members(&ids, &[1, 2, 1, 3, 1, 1], &[]);
        let mut reversed = forward.clone();
        reversed.reverse();
        assert_eq!(Ketama::new(&forward), Ketama::new(&reversed));
    }

    #[test]
    fn nothing_to_choose_gives_none_and_weights_are_capped() {
        let ids = ids(3);
        for m in [
            Vec::new(),
            members(&ids, &[], &[0, 1, 2]),
            members(&ids, &[0, 0, 0], &[]),
        ] {
            let ring = Ketama::new(&m);
            assert!(ring.is_empty());
            assert_eq!(ring.get(42), None);
        }
        let ring = Ketama::new(&members(&ids, &[u32::MAX, 1, 1], &[]));
        assert_eq!(
            ring.len() as u32,
            KETAMA_POINTS_PER_WEIGHT * (MAX_HASH_WEIGHT + 2)
        );
    }

    #[test]
    fn keys_hash_the_same_everywhere() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(hash_ip(v4), hash_ip(mapped));
        assert_ne!(hash_ip(v4), hash_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        // xxh3's specified output: a change of hash function would remap every key.
        assert_eq!(hash_key(b""), 0x2d06_8005_38d3_94c2);
    }
}
