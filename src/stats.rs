//! Traffic statistics per backend: a Prometheus-style latency histogram and status counters for
//! `/metrics`, and a one-minute sliding window of latencies for the p50 / p99 the dashboard
//! shows.

use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds of the `lb_request_duration_seconds` histogram buckets (Prometheus' defaults
/// with a finer low end: a proxy on a LAN answers in well under a millisecond).
pub const HISTOGRAM_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Sub-buckets per power of two in the sliding window: 8 keeps a percentile within ~9%.
const SUB_BUCKETS: u32 = 8;
/// Microsecond octaves covered: 2^27 us is over two minutes, past any sane response.
const OCTAVES: u32 = 28;
const WINDOW_BUCKETS: usize = (OCTAVES * SUB_BUCKETS) as usize;
/// Seconds in the sliding window.
const WINDOW_SECONDS: usize = 60;

#[derive(Debug, Clone)]
struct Slot {
    /// The second (since the stats began) this slot holds; older contents are stale.
    second: u64,
    counts: Box<[u32; WINDOW_BUCKETS]>,
}

/// What one backend answered, and how fast.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Cumulative counts per [`HISTOGRAM_BOUNDS`] bucket, plus +Inf at the end.
    pub histogram: [u64; HISTOGRAM_BOUNDS.len() + 1],
    pub duration_sum_seconds: f64,
    pub count: u64,
    /// Responses by status code.
    pub by_code: BTreeMap<u16, u64>,
    window: Vec<Slot>,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            histogram: [0; HISTOGRAM_BOUNDS.len() + 1],
            duration_sum_seconds: 0.0,
            count: 0,
            by_code: BTreeMap::new(),
            window: Vec::new(),
        }
    }
}

fn window_bucket(latency: Duration) -> usize {
    let us = latency.as_micros().clamp(1, (1u128 << OCTAVES) - 1) as u64;
    let octave = 63 - us.leading_zeros();
    // The SUB_BUCKETS bits right below the leading one pick the sub-bucket.
    let sub = if octave >= 3 {
        (us >> (octave - 3)) & u64::from(SUB_BUCKETS - 1)
    } else {
        (us << (3 - octave)) & u64::from(SUB_BUCKETS - 1)
    };
    (octave * SUB_BUCKETS) as usize + sub as usize
}

/// The upper end of a window bucket, in milliseconds.
fn window_bucket_upper_ms(bucket: usize) -> f64 {
    let octave = bucket as u32 / SUB_BUCKETS;
    let sub = bucket as u32 % SUB_BUCKETS;
    let base = (1u64 << octave) as f64;
    base * (1.0 + f64::from(sub + 1) / f64::from(SUB_BUCKETS)) / 1000.0
}

impl Traffic {
    /// Records one response. `second` is whole seconds since a fixed start, for the window.
    pub fn record(&mut self, status: u16, latency: Duration, second: u64) {
        let seconds = latency.as_secs_f64();
        let bucket = HISTOGRAM_BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(HISTOGRAM_BOUNDS.len());
        self.histogram[bucket] += 1;
        self.duration_sum_seconds += seconds;
        self.count += 1;
        *self.by_code.entry(status).or_default() += 1;

        if self.window.is_empty() {
            self.window = (0..WINDOW_SECONDS)
                .map(|_| Slot {
                    second: u64::MAX,
                    counts: Box::new([0; WINDOW_BUCKETS]),
                })
                .collect();
        }
        let slot = &mut self.window[(second % WINDOW_SECONDS as u64) as usize];
        if slot.second != second {
            slot.second = second;
            slot.counts.fill(0);
        }
        slot.counts[window_bucket(latency)] += 1;
    }

    /// Latency percentiles (0.0..=1.0) over the last minute, in milliseconds; `None` without
    /// requests in that minute.
    pub fn percentiles(&self, now_second: u64, quantiles: &[f64]) -> Vec<Option<f64>> {
        let mut merged = [0u64; WINDOW_BUCKETS];
        for slot in &self.window {
            if slot.second <= now_second && now_second - slot.second < WINDOW_SECONDS as u64 {
                for (m, &c) in merged.iter_mut().zip(slot.counts.iter()) {
                    *m += u64::from(c);
                }
            }
        }
        let total: u64 = merged.iter().sum();
        quantiles
            .iter()
            .map(|&q| {
                if total == 0 {
                    return None;
                }
                let rank = ((total as f64) * q).ceil().max(1.0) as u64;
                let mut seen = 0;
                for (bucket, &count) in merged.iter().enumerate() {
                    seen += count;
                    if seen >= rank {
                        return Some(window_bucket_upper_ms(bucket));
                    }
                }
                None
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_at_export_not_here() {
        let mut t = Traffic::default();
        t.record(200, Duration::from_micros(300), 0);
        t.record(200, Duration::from_millis(3), 0);
        t.record(502, Duration::from_secs(30), 0);
        assert_eq!(t.histogram[0], 1);
        assert_eq!(t.histogram[3], 1);
        assert_eq!(t.histogram[HISTOGRAM_BOUNDS.len()], 1);
        assert_eq!(t.count, 3);
        assert_eq!(t.by_code.get(&200), Some(&2));
        assert_eq!(t.by_code.get(&502), Some(&1));
    }

    #[test]
    fn percentiles_are_within_the_bucket_precision() {
        let mut t = Traffic::default();
        for ms in 1..=100 {
            t.record(200, Duration::from_millis(ms), 5);
        }
        let p = t.percentiles(5, &[0.5, 0.99]);
        let (p50, p99) = (p[0].unwrap(), p[1].unwrap());
        assert!((50.0..=56.0).contains(&p50), "p50 {p50}");
        assert!((99.0..=108.0).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn the_window_forgets_after_a_minute() {
        let mut t = Traffic::default();
        t.record(200, Duration::from_millis(10), 100);
        assert!(t.percentiles(159, &[0.5])[0].is_some());
        assert!(t.percentiles(160, &[0.5])[0].is_none());
        // A slot reused a minute later starts from zero.
        t.record(200, Duration::from_millis(1), 160);
        let p50 = t.percentiles(160, &[0.5])[0].unwrap();
        assert!(p50 < 2.0, "{p50}");
    }

    #[test]
    fn window_buckets_grow_monotonically() {
        let mut last = 0;
        for us in [1u64, 2, 3, 7, 8, 9, 100, 1000, 1_000_000, 100_000_000] {
            let b = window_bucket(Duration::from_micros(us));
            assert!(b >= last, "{us}");
            assert!(window_bucket_upper_ms(b) * 1000.0 >= us as f64, "{us}");
            last = b;
        }
    }
}

/// Balancer-wide counters shared by the reactor (which writes them) and the management thread.
#[derive(Debug)]
pub struct Totals {
    pub started: std::time::Instant,
    pub started_at: std::time::SystemTime,
    /// Client connections open now.
    pub active_connections: std::sync::atomic::AtomicU64,
    /// Requests answered (by a backend or by the balancer itself).
    pub requests: std::sync::atomic::AtomicU64,
    /// Answers the balancer made itself (4xx for bad requests, 502/503/504).
    pub answered_by_proxy: std::sync::atomic::AtomicU64,
    /// Statistics of answers that no backend is to blame for (bad requests, no backend).
    pub unattributed: std::sync::Mutex<Traffic>,
    /// A graceful stop is under way (`GET /api/health` says so to an L4 tier).
    pub draining: std::sync::atomic::AtomicBool,
    /// Access log lines lost to a destination that did not keep up (or failed).
    pub access_log_dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Microseconds the reactors spent polling on instead of sleeping (`idle_spin`).
    pub spin_micros: std::sync::atomic::AtomicU64,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            started: std::time::Instant::now(),
            started_at: std::time::SystemTime::now(),
            active_connections: Default::default(),
            requests: Default::default(),
            answered_by_proxy: Default::default(),
            unattributed: Default::default(),
            draining: Default::default(),
            access_log_dropped: Default::default(),
            spin_micros: Default::default(),
        }
    }
}

impl Totals {
    /// Whole seconds since start: the clock of the one-minute latency windows.
    pub fn second(&self, now: std::time::Instant) -> u64 {
        now.duration_since(self.started).as_secs()
    }
}
