//! Ketama against Maglev, the figures behind the choice in `src/balance/consistent_hash.rs` and
//! docs/BENCHMARKS.md ("Consistent hashing: Ketama vs Maglev"). Maglev lost, so it lives here
//! only, as the baseline (with its unit tests in the history: commit caf5016):
//!
//! ```sh
//! cargo run --release --example consistent_hash
//! ```
//!
//! Build time (median of several builds), lookup time per key (a pre-hashed key; the key's own
//! hash is timed apart), the largest deviation of a backend's share from 1/N over 1,000,000
//! client addresses, and what removing one backend moves (the mean over every backend removed).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lb::balance::consistent_hash::{hash_ip, hash_key, Ketama, Member, MAX_HASH_WEIGHT};
use xxhash_rust::xxh3::xxh3_64_with_seed;

const KEYS: u32 = 1_000_000;

/// Slots in the Maglev table: a prime (the permutations need it), the paper's small size.
const MAGLEV_TABLE_SIZE: usize = 65_537;

trait Table {
    fn build(members: &[Member]) -> Self;
    fn get(&self, key: u64) -> Option<usize>;
    fn bytes(&self) -> usize;
}

struct Ketama160(Ketama);
struct Ketama1000(Ketama);

impl Table for Ketama160 {
    fn build(members: &[Member]) -> Self {
        Ketama160(Ketama::new(members))
    }
    fn get(&self, key: u64) -> Option<usize> {
        self.0.get(key)
    }
    fn bytes(&self) -> usize {
        self.0.len() * 16
    }
}

impl Table for Ketama1000 {
    fn build(members: &[Member]) -> Self {
        Ketama1000(Ketama::with_points(members, 1000))
    }
    fn get(&self, key: u64) -> Option<usize> {
        self.0.get(key)
    }
    fn bytes(&self) -> usize {
        self.0.len() * 16
    }
}

impl Table for Maglev {
    fn build(members: &[Member]) -> Self {
        Maglev::new(members)
    }
    fn get(&self, key: u64) -> Option<usize> {
        Maglev::get(self, key)
    }
    fn bytes(&self) -> usize {
        self.len() * 4
    }
}

fn members(ids: &[String], down: Option<usize>) -> Vec<Member<'_>> {
    ids.iter()
        .enumerate()
        .map(|(index, id)| Member {
            index,
            id,
            weight: 1,
            eligible: Some(index) != down,
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn row<T: Table>(name: &str, n: usize, keys: &[u64]) {
    let ids: Vec<String> = (1..=n).map(|i| format!("backend-{i}")).collect();
    let all = members(&ids, None);
    let builds = (0..9)
        .map(|_| {
            let t = Instant::now();
            black_box(T::build(black_box(&all)));
            t.elapsed()
        })
        .collect();
    let build = median(builds);
    let table = T::build(&all);

    let lookups = (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut sum = 0usize;
            for &k in keys {
                sum = sum.wrapping_add(table.get(black_box(k)).unwrap_or(0));
            }
            black_box(sum);
            t.elapsed()
        })
        .collect();
    let lookup_ns = median(lookups).as_nanos() as f64 / keys.len() as f64;

    let before: Vec<usize> = keys.iter().map(|&k| table.get(k).unwrap_or(0)).collect();
    let mut counts = vec![0usize; n];
    for &b in &before {
        counts[b] += 1;
    }
    let fair = keys.len() as f64 / n as f64;
    let deviation = counts
        .iter()
        .map(|&c| (c as f64 - fair).abs() / fair * 100.0)
        .fold(0.0, f64::max);

    // Every backend removed in turn for small N; ten of them for N = 100.
    let removed: Vec<usize> = (0..n).step_by(n.div_ceil(10)).collect();
    let (mut moved, mut bystanders) = (0.0, 0.0);
    for &gone in &removed {
        let after = T::build(&members(&ids, Some(gone)));
        for (k, &b) in keys.iter().zip(&before) {
            if after.get(*k) != Some(b) {
                moved += 1.0;
                if b != gone {
                    bystanders += 1.0;
                }
            }
        }
    }
    let per_removal = keys.len() as f64 * removed.len() as f64 / 100.0;
    println!(
        "| {name} | {n} | {:.0} | {} | {lookup_ns:.1} | {deviation:.1} | {:.2} | {:.2} |",
        build.as_secs_f64() * 1e6,
        table.bytes() / 1024,
        moved / per_removal,
        bystanders / per_removal,
    );
}

fn main() {
    let keys: Vec<u64> = (0..KEYS)
        .map(|i| hash_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
        .collect();

    let uris: Vec<String> = (0..100_000)
        .map(|i| format!("/api/v1/items/{i}?page=2"))
        .collect();
    let t = Instant::now();
    let mut sum = 0u64;
    for u in &uris {
        sum = sum.wrapping_add(hash_key(black_box(u.as_bytes())));
    }
    black_box(sum);
    let uri_ns = t.elapsed().as_nanos() as f64 / uris.len() as f64;
    let t = Instant::now();
    for i in 0..KEYS {
        sum = sum.wrapping_add(hash_ip(black_box(IpAddr::V4(Ipv4Addr::from(i)))));
    }
    black_box(sum);
    let ip_ns = t.elapsed().as_nanos() as f64 / f64::from(KEYS);
    println!("key hash (xxh3): client_ip {ip_ns:.1} ns, a 25-byte uri {uri_ns:.1} ns");
    println!();
    println!(
        "| table | N | build µs | size KiB | lookup ns/key | max share deviation from 1/N, % \
         | keys moved when one is removed, % | of them between survivors, % |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for n in [3, 10, 100] {
        row::<Ketama160>("Ketama, 160 points", n, &keys);
        row::<Ketama1000>("Ketama, 1000 points", n, &keys);
        row::<Maglev>("Maglev, 65537 slots", n, &keys);
    }
}

/// A Maglev lookup table: each slot names a backend.
#[derive(Debug, Default)]
struct Maglev {
    /// Positions in `backends`: `u32` halves the table's size against `usize`.
    table: Vec<u32>,
    backends: Vec<usize>,
}

impl Maglev {
    fn new(members: &[Member]) -> Maglev {
        Maglev::with_size(members, MAGLEV_TABLE_SIZE).unwrap_or_default()
    }

    /// A table of `size` slots; `None` unless `size` is a prime (below 2^32): with any other
    /// size a backend's permutation may cycle through a part of the table only.
    fn with_size(members: &[Member], size: usize) -> Option<Maglev> {
        if !is_prime(size) || u32::try_from(size).is_err() {
            return None;
        }
        let mut live: Vec<&Member> = members
            .iter()
            .filter(|m| m.eligible && m.weight > 0)
            .collect();
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

    fn len(&self) -> usize {
        self.table.len()
    }

    /// The backend that owns `key`.
    fn get(&self, key: u64) -> Option<usize> {
        let slot = *self
            .table
            .get((key % (self.table.len().max(1) as u64)) as usize)?;
        self.backends.get(slot as usize).copied()
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
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
