//! The backend list: round-robin exactness, failover choices, probes, runtime changes.
use super::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::PoolConfig;

/// The configured backend in slot `slot`: they fill the first slots, in order.
fn id(slot: usize) -> BackendId {
    BackendId::initial(slot)
}

fn backends(n: usize) -> Backends {
    let configs: Vec<BackendConfig> = (0..n)
        .map(|i| BackendConfig {
            name: format!("backend-{}", i + 1),
            address: SocketAddr::from(([127, 0, 0, 1], 8001 + i as u16)),
            weight: 1,
            tls: None,
            backup: false,
        })
        .collect();
    Backends::new(&configs, Algorithm::RoundRobin, &HealthConfig::default())
}

#[test]
fn round_robin_is_exact() {
    let b = backends(3);
    let mut counts = [0; 3];
    for _ in 0..3000 {
        counts[b.pick(&[]).unwrap().slot()] += 1;
    }
    assert_eq!(counts, [1000, 1000, 1000]);
}

#[test]
fn pick_skips_excluded_and_gives_up_after_one_pass() {
    let b = backends(3);
    for _ in 0..10 {
        assert_eq!(b.pick(&[id(0), id(2)]), Some(id(1)));
    }
    assert_eq!(b.pick(&[id(0), id(1), id(2)]), None);
    assert_eq!(backends(0).pick(&[]), None);
}

#[test]
fn down_backends_are_skipped_until_none_is_up() {
    let b = backends(3);
    b.mark_down(id(1), "connection refused");
    assert_eq!(b.get(id(1)).map(|b| b.state()), Some(BackendState::Down));
    for _ in 0..10 {
        assert_ne!(b.pick(&[]), Some(id(1)));
    }
    // The only up ones already failed this request: the down one is tried before giving up.
    assert_eq!(b.pick(&[id(0), id(2)]), Some(id(1)));
    b.mark_down(id(0), "timeout");
    b.mark_down(id(2), "timeout");
    assert!(
        b.pick(&[]).is_some(),
        "fails open when every backend is down"
    );
}

#[test]
fn draining_backends_get_nothing_even_failing_open() {
    let b = backends(2);
    b.get(id(0)).unwrap().set_draining(true);
    b.mark_down(id(1), "timeout");
    assert_eq!(b.pick(&[]), Some(id(1)));
    assert_eq!(b.pick(&[id(1)]), None);
}

#[test]
fn probes_bring_a_backend_back_after_rise_passes() {
    let b = backends(1);
    b.mark_down(id(0), "connection refused");
    let probe = |ok| ProbeResult {
        backend: id(0),
        ok,
        detail: "status 200".into(),
        latency: Duration::from_millis(1),
        at: SystemTime::now(),
    };
    b.observe_probe(&probe(true));
    assert_eq!(b.get(id(0)).unwrap().state(), BackendState::Down);
    b.observe_probe(&probe(true));
    assert_eq!(b.get(id(0)).unwrap().state(), BackendState::Up);
    let health = b.get(id(0)).unwrap().health();
    assert_eq!(health.flips, 2);
    assert_eq!(health.last_ok, Some(true));
}

#[test]
fn runtime_changes_keep_indexes_stable() {
    let b = backends(2);
    let added = b
        .add(
            "default",
            &BackendConfig {
                name: "backend-3".into(),
                address: SocketAddr::from(([127, 0, 0, 1], 9003)),
                weight: 1,
                tls: None,
                backup: false,
            },
        )
        .unwrap();
    assert_eq!(added, id(2));
    assert!(matches!(
        b.add(
            "default",
            &BackendConfig {
                name: "backend-3".into(),
                address: SocketAddr::from(([127, 0, 0, 1], 9004)),
                weight: 1,
                tls: None,
                backup: false,
            }
        ),
        Err(ChangeError::Duplicate(_))
    ));
    assert_eq!(b.remove("backend-1"), Ok(id(0)));
    assert_eq!(b.get(id(0)).unwrap().state(), BackendState::Removed);
    assert_eq!(
        b.remove("backend-1"),
        Err(ChangeError::NotFound("backend-1".into()))
    );
    assert_eq!(b.slots(), 3);
    assert_eq!(b.live_count(), 2);
    for _ in 0..10 {
        assert_ne!(b.pick(&[]), Some(id(0)));
    }
    assert_eq!(b.set_draining("backend-2", true), Ok(id(1)));
    for _ in 0..10 {
        assert_eq!(b.pick(&[]), Some(id(2)));
    }
    assert_eq!(b.set_draining("backend-2", false), Ok(id(1)));
    assert_eq!(b.get(id(1)).unwrap().state(), BackendState::Up);
}

fn config(name: &str, port: u16) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        weight: 1,
        tls: None,
        backup: false,
    }
}

fn two_pools() -> (Vec<PoolConfig>, Backends) {
    let base = Config::default().pools_in_effect().remove(0);
    let mut backup = config("a3", 9003);
    backup.backup = true;
    let pools = vec![
        PoolConfig {
            name: "api".into(),
            backends: vec![config("a1", 9001), config("a2", 9002), backup],
            ..base.clone()
        },
        PoolConfig {
            name: "www".into(),
            backends: vec![config("w1", 9011)],
            ..base
        },
    ];
    let b = Backends::from_pools(&pools, Arc::new(EventBus::default()));
    (pools, b)
}

#[test]
fn each_pool_picks_among_its_own_primaries_then_its_backups() {
    let (_, b) = two_pools();
    let now = Instant::now();
    let pick = |pool, exclude: &[BackendId]| b.choose(pool, Affinity::default(), exclude, now);
    let mut seen = [0; 4];
    for _ in 0..100 {
        seen[pick(0, &[]).unwrap().slot()] += 1;
    }
    assert_eq!(
        seen,
        [50, 50, 0, 0],
        "the backup waits; www's backend is not api's"
    );
    assert_eq!(pick(1, &[]), Some(id(3)));
    b.mark_down(id(0), "refused");
    assert_eq!(pick(0, &[]), Some(id(1)));
    assert_eq!(
        pick(0, &[id(1)]),
        Some(id(2)),
        "every primary out: the backup"
    );
    b.mark_down(id(1), "refused");
    assert_eq!(pick(0, &[]), Some(id(2)));
    b.mark_down(id(2), "refused");
    assert!(pick(0, &[]).is_some(), "all down: fails open");
    assert_eq!(pick(1, &[]), Some(id(3)), "the other pool is untouched");
    assert_eq!(b.live_count_in(0), 3);
    assert_eq!(
        b.choose(7, Affinity::default(), &[], now),
        None,
        "no such pool"
    );
}

#[test]
fn a_sticky_cookie_wins_while_its_backend_may_take_requests() {
    let (mut pools, b) = two_pools();
    pools[0].sticky = Some(crate::config::StickyConfig {
        cookie: "lb_srv".into(),
        ttl: None,
    });
    b.reconcile(&pools);
    let now = Instant::now();
    let a2 = b.get(id(1)).unwrap().cookie_id;
    let sticky = Affinity {
        key: None,
        sticky: Some(a2),
    };
    for _ in 0..10 {
        assert_eq!(b.choose(0, sticky, &[], now), Some(id(1)));
    }
    // A backend of another pool is not reached by its id.
    let w1 = Affinity {
        key: None,
        sticky: Some(b.get(id(3)).unwrap().cookie_id),
    };
    assert_ne!(b.choose(0, w1, &[], now), Some(id(3)));
    b.set_draining("a2", true).unwrap();
    assert_eq!(b.choose(0, sticky, &[], now), Some(id(0)));
    b.set_draining("a2", false).unwrap();
    assert_eq!(
        b.choose(0, sticky, &[id(1)], now),
        Some(id(0)),
        "a retry goes elsewhere"
    );
}

#[test]
fn reconcile_adds_moves_and_removes_pools_and_their_backends() {
    let (mut pools, b) = two_pools();
    // a2 moves to www, www gains w2, api loses its backup; then a new pool replaces api.
    let a2 = pools[0].backends.remove(1);
    pools[0].backends.pop();
    pools[1].backends.push(a2);
    pools[1].backends.push(config("w2", 9012));
    let removed = b.reconcile(&pools);
    assert_eq!(removed, vec![id(1), id(2)]);
    let www = b.pool_index("www").unwrap();
    assert_eq!(b.find("a2").unwrap().1.pool, www);
    assert_eq!(b.live_count_in(www), 3);
    pools.remove(0);
    pools.push(PoolConfig {
        name: "new".into(),
        backends: vec![config("n1", 9021)],
        ..pools[0].clone()
    });
    let removed = b.reconcile(&pools);
    assert_eq!(removed, vec![id(0)], "a1 went with its pool");
    assert_eq!(b.pool_index("api"), None);
    let new = b.pool_index("new").unwrap();
    assert_eq!(new, 2, "pool indexes are never reused");
    assert_eq!(
        b.choose(new, Affinity::default(), &[], Instant::now()),
        b.find("n1").map(|(i, _)| i)
    );
}

#[test]
fn churn_reuses_removed_backends_slots_and_old_ids_reach_nothing() {
    let b = backends(2);
    let pod = |i: u32| config(&format!("pod-{i}"), 10_000 + (i % 50_000) as u16);
    let first = b.add("default", &pod(0)).unwrap();
    b.remove("pod-0").unwrap();
    let mut slots_after_warmup = 0;
    for i in 1..=10_000 {
        let id = b.add("default", &pod(i)).unwrap();
        assert_eq!(b.get(id).map(|p| p.name.clone()), Some(format!("pod-{i}")));
        b.remove(&format!("pod-{i}")).unwrap();
        if i == 100 {
            slots_after_warmup = b.slots();
        }
    }
    assert_eq!(b.slots(), slots_after_warmup);
    assert_eq!(b.slots(), 2 + RETAINED_REMOVED + 1);
    assert!(b.get(first).is_none(), "an old id finds nothing");
    assert!(
        b.in_slot(first.slot()).is_some(),
        "though its slot holds another backend now"
    );
    let listed = b.snapshot();
    assert_eq!(listed.len(), 2 + RETAINED_REMOVED);
    assert_eq!(listed[2].name, format!("pod-{}", 10_001 - RETAINED_REMOVED));
    assert!(listed[2..]
        .iter()
        .all(|p| p.state() == BackendState::Removed));
    let mut counts = [0; 2];
    for _ in 0..100 {
        counts[b.pick(&[]).unwrap().slot()] += 1;
    }
    assert_eq!(counts, [50, 50], "only the configured two take requests");
    assert_eq!(b.probe_targets().len(), 2);
}
