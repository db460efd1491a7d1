//! Consistent hashing: a key (client address, header, cookie, URI) always goes to the same
//! backend, and a change to the set of backends moves as few keys as it can. Two structures,
//! both pure and built from a list of [`Member`]s, queried with a [`hash_key`] / [`hash_ip`]:
//!
//! - [`Ketama`]: a ring of 160 points per unit of weight (nginx's `hash ... consistent` and
//!   HAProxy's `hash-type consistent` use the same scheme); a key belongs to the first point at or
//!   after its hash.
//! - [`Maglev`]: Google's Maglev lookup table (NSDI 2016): 65,537 slots filled by each backend in
//!   turn along its own permutation; a key belongs to slot `hash % 65537`.
//!
//! `cargo run --release --example consistent_hash` compares the two (build time, lookup time,
//! balance, movement when a backend is removed).
//!
//! Members are identified by a stable id (the backend's name, never its slot index, which a
//! reload may change), so a table built twice from the same set is the same table, whatever the
//! order of the list. Ids must be unique among the members that take keys.

use std::net::IpAddr;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Points on the [`Ketama`] ring per unit of weight.
pub const KETAMA_POINTS_PER_WEIGHT: u32 = 160;

/// Slots in a [`Maglev`] table: a prime (the permutations need it), and large enough that 100
/// backends still differ in share by ~1 % at most.
pub const MAGLEV_TABLE_SIZE: usize = 65_537;

/// Weights above this count as this much: a weight is only a `u32` in the config, and a ring
/// sized by an unbounded weight would be unbounded too. HAProxy's maximum weight is the same.
pub const MAX_HASH_WEIGHT: u32 = 256;

/// One backend as the hash tables see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The backend's slot in the caller's list: what a lookup returns.
    pub index: usize,
    /// What its positions are derived from: stable across reloads and restarts.
    pub id: &'a str,
    pub weight: u32,
    /// Takes keys; an ineligible member (or one of weight 0) is left out of the table.
    pub eligible: bool,
}

/// The hash of a key's bytes. xxh3 rather than std's `DefaultHasher`: its output is specified
/// and the same on every platform and release, so two balancers (or one before and after an
/// upgrade) send a key to the same backend; SipHash's would be too with fixed keys, but std does
/// not promise that `DefaultHasher` stays SipHash-1-3, and xxh3 is ~3× faster on short keys.
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
    /// ring (16 bytes a point) and a slower build.
    pub fn with_points(members: &[Member], per_weight: u32) -> Ketama {
        let mut points = Vec::new();
        for m in members.iter().filter(takes_keys) {
            // Point k of a member depends only on its id and k, so a member's points are the same
            // in every ring it is part of: that is what keeps movement to the minimum.
            let count = per_weight.saturating_mul(m.weight.min(MAX_HASH_WEIGHT));
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

/// A Maglev lookup table: each slot names a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maglev {
    /// Positions in `backends`: `u32` halves the table's size against `usize`.
    table: Vec<u32>,
    backends: Vec<usize>,
}

impl Maglev {
    pub fn new(members: &[Member]) -> Maglev {
        Maglev::with_size(members, MAGLEV_TABLE_SIZE).unwrap_or_default()
    }

    /// A table of `size` slots; `None` unless `size` is a prime (below 2^32): with any other
    /// size a backend's permutation may cycle through a part of the table only.
    pub fn with_size(members: &[Member], size: usize) -> Option<Maglev> {
        if !is_prime(size) || u32::try_from(size).is_err() {
            return None;
        }
        let mut live: Vec<&Member> = members.iter().filter(takes_keys).collect();
        // The fill is in turns, so the order of the turns must not depend on the caller's list.
        live.sort_by(|a, b| a.id.cmp(b.id).then(a.index.cmp(&b.index)));
        // More members than slots: the rest could never own one.
        live.truncate(size);
        if live.is_empty() {
            return Some(Maglev::default());
        }
        // Weights 2:2:2 fill as 1:1:1 would; each turn claims `weight` slots.
        let divisor = live.iter().fold(0, |g, m| gcd(g, m.weight)).max(1);
        let turns: Vec<u32> = live
            .iter()
            .map(|m| (m.weight / divisor).clamp(1, MAX_HASH_WEIGHT))
            .collect();
        let m = size as u64;
        let mut next: Vec<u64> = Vec::with_capacity(live.len());
        let mut skip: Vec<u64> = Vec::with_capacity(live.len());
        for member in &live {
            let id = member.id.as_bytes();
            next.push(xxh3_64_with_seed(id, 0) % m);
            skip.push(xxh3_64_with_seed(id, 1) % (m - 1) + 1);
        }
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; size];
        let mut filled = 0;
        'fill: loop {
            for (k, &turns) in turns.iter().enumerate() {
                for _ in 0..turns {
                    // `skip` is below the prime `size`, so the walk visits every slot within
                    // `size` steps and finds the empty one that `filled < size` promises.
                    loop {
                        let slot = next[k] as usize;
                        next[k] = (next[k] + skip[k]) % m;
                        if table[slot] == EMPTY {
                            table[slot] = k as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == size {
                        break 'fill;
                    }
                }
            }
        }
        let backends = live.iter().map(|m| m.index).collect();
        Some(Maglev { table, backends })
    }

    /// Slots in the table (0 when no member takes keys).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The backend that owns `key`.
    pub fn get(&self, key: u64) -> Option<usize> {
        self.get_allowed(key, |_| true)
    }

    /// The backend of `key`'s slot, or of the next slot whose backend is `allowed`. Unlike
    /// Ketama's walk, this is not what a table rebuilt without the skipped backends would say:
    /// fine for a retry, but a backend that goes down calls for a rebuild.
    pub fn get_allowed(&self, key: u64, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.table.len();
        let start = (key % (len.max(1) as u64)) as usize;
        (0..len)
            .filter_map(|k| self.backends.get(self.table[(start + k) % len] as usize))
            .copied()
            .find(|&i| allowed(i))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Ketama,
        Maglev,
    }

    const KINDS: [Kind; 2] = [Kind::Ketama, Kind::Maglev];

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

    fn assign(kind: Kind, members: &[Member], keys: &[u64]) -> Vec<usize> {
        let get: Box<dyn Fn(u64) -> Option<usize>> = match kind {
            Kind::Ketama => {
                let t = Ketama::new(members);
                Box::new(move |k| t.get(k))
            }
            Kind::Maglev => {
                let t = Maglev::new(members);
                Box::new(move |k| t.get(k))
            }
        };
        keys.iter().map(|&k| get(k).expect("a backend")).collect()
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

    #[test]
    fn each_backend_gets_about_one_nth_of_the_keys() {
        let keys = keys();
        for kind in KINDS {
            for n in [3, 5, 10] {
                let ids = ids(n);
                let s = shares(&assign(kind, &members(&ids, &[], &[]), &keys), n);
                let dev = max_deviation(&s, &vec![1.0 / n as f64; n]);
                let pct: Vec<String> = s.iter().map(|s| format!("{:.1}", s * 100.0)).collect();
                println!("{kind:?} N={n}: shares % {pct:?}, max deviation from 1/N {dev:.1} %");
                let bound = match kind {
                    Kind::Ketama => 15.0,
                    Kind::Maglev => 2.0,
                };
                assert!(dev < bound, "{kind:?} N={n}: {dev:.1} %");
            }
        }
    }

    #[test]
    fn removing_one_moves_its_keys_and_returning_moves_them_back() {
        let keys = keys();
        for kind in KINDS {
            for n in [3, 5, 10] {
                let ids = ids(n);
                let before = assign(kind, &members(&ids, &[], &[]), &keys);
                let mut worst_moved: f64 = 0.0;
                let mut worst_bystanders: f64 = 0.0;
                for gone in 0..n {
                    let after = assign(kind, &members(&ids, &[], &[gone]), &keys);
                    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
                    let bystanders = before
                        .iter()
                        .zip(&after)
                        .filter(|(b, a)| b != a && **b != gone)
                        .count();
                    assert!(after.iter().all(|&a| a != gone), "{kind:?} N={n}");
                    worst_moved = worst_moved.max(moved as f64 / keys.len() as f64);
                    worst_bystanders = worst_bystanders.max(bystanders as f64 / keys.len() as f64);
                    match kind {
                        // Only the removed backend's keys move, to wherever its points' successors
                        // are.
                        Kind::Ketama => assert_eq!(bystanders, 0, "N={n}, removed {gone}"),
                        // Maglev's rebuild also reshuffles a few slots between survivors.
                        Kind::Maglev => assert!(
                            bystanders * 100 < keys.len() * 3,
                            "N={n}, removed {gone}: {bystanders}"
                        ),
                    }
                    let back = assign(kind, &members(&ids, &[], &[]), &keys);
                    assert_eq!(back, before, "{kind:?} N={n}: every key moves back");
                }
                println!(
                    "{kind:?} N={n}: one backend removed moves at most {:.1} % of keys \
                     (1/N = {:.1} %), {:.2} % of them between survivors; all move back",
                    worst_moved * 100.0,
                    100.0 / n as f64,
                    worst_bystanders * 100.0
                );
                assert!(worst_moved < 1.0 / n as f64 * 1.3, "{kind:?} N={n}");
            }
        }
    }

    #[test]
    fn weighted_shares_follow_the_weights() {
        let keys = keys();
        let ids = ids(4);
        let weights = [1, 2, 3, 4];
        let expected: Vec<f64> = weights.iter().map(|&w| f64::from(w) / 10.0).collect();
        for kind in KINDS {
            let s = shares(&assign(kind, &members(&ids, &weights, &[]), &keys), 4);
            let dev = max_deviation(&s, &expected);
            let pct: Vec<String> = s.iter().map(|s| format!("{:.1}", s * 100.0)).collect();
            println!("{kind:?} weights 1:2:3:4: shares % {pct:?} (10/20/30/40), max deviation {dev:.1} %");
            assert!(dev < 12.0, "{kind:?}: {dev:.1} %");
        }
    }

    #[test]
    fn ketama_skipping_a_backend_is_the_ring_without_it() {
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
    fn maglev_skipping_a_backend_gives_another_allowed_one() {
        let ids = ids(5);
        let t = Maglev::new(&members(&ids, &[], &[]));
        for &k in &keys()[..10_000] {
            let first = t.get(k).expect("a backend");
            let other = t.get_allowed(k, |i| i != first).expect("another");
            assert_ne!(other, first);
        }
        assert_eq!(t.get_allowed(1, |_| false), None);
    }

    #[test]
    fn tables_do_not_depend_on_the_order_of_the_list() {
        let ids = ids(6);
        let forward = members(&ids, &[1, 2, 1, 3, 1, 1], &[]);
        let mut reversed = forward.clone();
        reversed.reverse();
        assert_eq!(Ketama::new(&forward), Ketama::new(&reversed));
        assert_eq!(Maglev::new(&forward), Maglev::new(&reversed));
    }

    #[test]
    fn nothing_to_choose_gives_none_and_weights_are_capped() {
        let ids = ids(3);
        for m in [
            Vec::new(),
            members(&ids, &[], &[0, 1, 2]),
            members(&ids, &[0, 0, 0], &[]),
        ] {
            assert_eq!(Ketama::new(&m).get(42), None);
            assert!(Maglev::new(&m).is_empty());
            assert_eq!(Maglev::new(&m).get(42), None);
        }
        let huge = members(&ids, &[u32::MAX, 1, 1], &[]);
        let ring = Ketama::new(&huge);
        assert_eq!(
            ring.len() as u32,
            KETAMA_POINTS_PER_WEIGHT * (MAX_HASH_WEIGHT + 2)
        );
        assert_eq!(Maglev::new(&huge).len(), MAGLEV_TABLE_SIZE);
        // Equal weights fill as weight 1 would.
        assert_eq!(
            Maglev::new(&members(&ids, &[7, 7, 7], &[])),
            Maglev::new(&members(&ids, &[], &[]))
        );
    }

    #[test]
    fn maglev_needs_a_prime_size() {
        let three = ids(3);
        let m = members(&three, &[], &[]);
        assert!(Maglev::with_size(&m, 65_536).is_none());
        assert!(Maglev::with_size(&m, 1).is_none());
        let small = Maglev::with_size(&m, 7).expect("7 is prime");
        assert_eq!(small.len(), 7);
        // More members than slots: the table is still full and every slot valid.
        let many = ids(20);
        let t = Maglev::with_size(&members(&many, &[], &[]), 13).expect("13 is prime");
        assert!((0..13).all(|k| t.get(k).is_some()));
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
