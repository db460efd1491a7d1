//! DNS churn through the real binary: a DNS server on loopback whose SRV answer replaces its
//! pods at every lookup, ten thousand backends discovered and lost, while requests go on. The
//! backend table (`lb_backend_slots`) and the process's memory stay flat, and requests keep
//! going to the backends that are there.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

const SRV_NAME: &str = "_http._tcp.churn.test";
/// Pods published, and replaced by new ones, at each lookup.
const PODS_PER_ROUND: usize = 4;
/// Backends added and removed in all.
const CYCLES: usize = 10_000;
const ROUNDS: usize = CYCLES / PODS_PER_ROUND;
/// Rounds before the first measurement: well past the removed backends the table keeps listed.
const WARMUP_ROUNDS: usize = 50;
/// How long the whole churn may take.
const CHURN_PATIENCE: Duration = Duration::from_secs(50);

/// What the DNS server publishes: the stable backends, plus the pods of the current round while
/// churning, or plus the late backend at the end.
struct Script {
    stable: Zone,
    pod_port: u16,
    /// The round the last answer published.
    round: AtomicUsize,
    /// Rounds stop advancing here until the test moves it.
    hold_at: AtomicUsize,
    /// The churn is over: the late backend is published instead of pods.
    settled: AtomicBool,
    late: Zone,
}

impl Script {
    fn answer(&self) -> Zone {
        if self.settled.load(Ordering::SeqCst) {
            return self.late.clone();
        }
        let round = self.round.load(Ordering::SeqCst);
        let round = if round < self.hold_at.load(Ordering::SeqCst) {
            self.round.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            round
        };
        let mut zone = self.stable.clone();
        if round == 0 {
            return zone;
        }
        let targets = zone.srv.get_mut(SRV_NAME).expect("the SRV name");
        for j in 0..PODS_PER_ROUND {
            // A new address each time, as a rescheduled pod gets; nothing listens on it.
            let pod = (round * PODS_PER_ROUND + j) as u32;
            let host = format!("pod-{pod}.churn.test");
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + pod);
            zone.a.insert(host.clone(), vec![ip]);
            targets.push((host, self.pod_port));
        }
        zone
    }
}

fn metric(admin: SocketAddr, name: &str) -> u64 {
    let text = get(admin, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Waits until the DNS answers reach round `round` and lb has applied that round (the
/// discovery thread asks again only once it has).
fn reach_round(script: &Script, dns: &DnsServer, round: usize, mut meanwhile: impl FnMut()) {
    script.hold_at.store(round, Ordering::SeqCst);
    let deadline = Instant::now() + CHURN_PATIENCE;
    while script.round.load(Ordering::SeqCst) < round {
        assert!(
            Instant::now() < deadline,
            "churn stalled at round {}",
            script.round.load(Ordering::SeqCst)
        );
        meanwhile();
    }
    let asked = dns.queries.load(Ordering::SeqCst);
    wait_until("lb to apply the round", || {
        dns.queries.load(Ordering::SeqCst) >= asked + 2
    });
}

#[test]
fn ten_thousand_backends_from_dns_come_and_go_in_a_flat_table_and_flat_memory() {
    let s1 = DemoBackend::start("s1");
    let s2 = DemoBackend::start("s2");
    let s3 = DemoBackend::start("s3");
    let script = Arc::new(Script {
        stable: Zone::srv_of(SRV_NAME, "churn.test", &[&s1, &s2]),
        pod_port: s1.addr.port(),
        round: AtomicUsize::new(0),
        hold_at: AtomicUsize::new(0),
        settled: AtomicBool::new(false),
        late: Zone::srv_of(SRV_NAME, "churn.test", &[&s1, &s2, &s3]),
    });
    let answers = Arc::clone(&script);
    let dns = DnsServer::answering(move || answers.answer());
    let config = format!(
        "[health]\ninterval = \"20ms\"\ntimeout = \"500ms\"\nrise = 1\n\
         [discovery]\nresolve_interval = \"1ms\"\ntimeout = \"500ms\"\nresolvers = [\"{}\"]\n\
         [[backend]]\nname = \"churn\"\ndiscover = \"{SRV_NAME}\"\n",
        dns.addr
    );
    let path = temp_file("churn.toml", &config);
    let proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let admin = proxy.admin_addr();
    let mut client = connect(proxy.addr);
    let mut request = |expected: &[&str]| {
        use std::io::Write;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: churn\r\n\r\n")
            .expect("write");
        let r = read_response(&mut client, false);
        assert_eq!(r.status, 200, "{:?} {}", r.header("x-lb-error"), r.text());
        assert!(expected.contains(&r.backend()), "served by {}", r.backend());
        r.backend().to_string()
    };
    // Until both pass a health check, requests fail open over every backend, pods included.
    let stable = [format!("churn@{}", s1.addr), format!("churn@{}", s2.addr)];
    wait_until("s1 and s2 to come up", || {
        let doc: serde_json::Value =
            serde_json::from_slice(&get(admin, "/api/state").body).expect("state JSON");
        let up = doc["backends"].as_array().map_or(0, |list| {
            list.iter()
                .filter(|b| b["state"] == "up" && stable.iter().any(|s| b["name"] == s.as_str()))
                .count()
        });
        up == 2
    });

    reach_round(&script, &dns, WARMUP_ROUNDS, || {});
    let slots_warm = metric(admin, "lb_backend_slots");
    let rss_warm = proxy.rss_kib();

    let started = Instant::now();
    let mut during = 0;
    reach_round(&script, &dns, ROUNDS, || {
        request(&["s1", "s2"]);
        during += 1;
    });
    let churn_time = started.elapsed();
    let slots_churned = metric(admin, "lb_backend_slots");
    let rss_churned = proxy.rss_kib();
    eprintln!(
        "churn: {} backends added and removed in {churn_time:?} ({during} requests meanwhile); \
         slots {slots_warm} after {} -> {slots_churned} after {CYCLES}; \
         VmRSS {rss_warm} KiB -> {rss_churned} KiB",
        (ROUNDS - WARMUP_ROUNDS) * PODS_PER_ROUND,
        WARMUP_ROUNDS * PODS_PER_ROUND,
    );
    assert_eq!(slots_churned, slots_warm, "the table grew with churn");
    // Two stable backends, the pods of two rounds at once, the removed ones kept listed.
    assert!(
        slots_warm <= (2 + 2 * PODS_PER_ROUND + 16) as u64,
        "{slots_warm}"
    );
    assert!(
        rss_churned <= rss_warm + 2048,
        "VmRSS grew from {rss_warm} KiB to {rss_churned} KiB"
    );

    // The churn ends with a newcomer: requests go to the three that are there, evenly.
    script.settled.store(true, Ordering::SeqCst);
    wait_until("s3 to take requests", || {
        get(proxy.addr, "/").backend() == "s3"
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts.entry(request(&["s1", "s2", "s3"])).or_default() += 1;
    }
    assert_eq!(
        counts,
        HashMap::from([
            ("s1".to_string(), 10),
            ("s2".to_string(), 10),
            ("s3".to_string(), 10)
        ])
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&get(admin, "/api/state").body).expect("state JSON");
    let listed = doc["backends"].as_array().expect("backends");
    let live: Vec<&str> = listed
        .iter()
        .filter(|b| b["state"] != "removed")
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(live.len(), 3, "{live:?}");
    assert!(listed.len() <= 3 + 16, "{} listed", listed.len());
    assert_eq!(metric(admin, "lb_backend_slots"), slots_warm);
}
