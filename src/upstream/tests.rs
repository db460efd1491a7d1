//! The backend list: round-robin exactness, failover choices, probes, runtime changes.
use super::*;
use std::net::SocketAddr;
use std::time::Duration;

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
        counts[b.pick(&[]).unwrap()] += 1;
    }
    assert_eq!(counts, [1000, 1000, 1000]);
}

#[test]
fn pick_skips_excluded_and_gives_up_after_one_pass() {
    let b = backends(3);
    for _ in 0..10 {
        assert_eq!(b.pick(&[0, 2]), Some(1));
    }
    assert_eq!(b.pick(&[0, 1, 2]), None);
    assert_eq!(backends(0).pick(&[]), None);
}

#[test]
fn down_backends_are_skipped_until_none_is_up() {
    let b = backends(3);
    b.mark_down(1, "connection refused");
    assert_eq!(b.get(1).map(|b| b.state()), Some(BackendState::Down));
    for _ in 0..10 {
        assert_ne!(b.pick(&[]), Some(1));
    }
    // The only up ones already failed this request: the down one is tried before giving up.
    assert_eq!(b.pick(&[0, 2]), Some(1));
    b.mark_down(0, "timeout");
    b.mark_down(2, "timeout");
    assert!(
        b.pick(&[]).is_some(),
        "fails open when every backend is down"
    );
}

#[test]
fn draining_backends_get_nothing_even_failing_open() {
    let b = backends(2);
    b.get(0).unwrap().set_draining(true);
    b.mark_down(1, "timeout");
    assert_eq!(b.pick(&[]), Some(1));
    assert_eq!(b.pick(&[1]), None);
}

#[test]
fn probes_bring_a_backend_back_after_rise_passes() {
    let b = backends(1);
    b.mark_down(0, "connection refused");
    let probe = |ok| ProbeResult {
        backend: 0,
        ok,
        detail: "status 200".into(),
        latency: Duration::from_millis(1),
        at: SystemTime::now(),
    };
    b.observe_probe(&probe(true));
    assert_eq!(b.get(0).unwrap().state(), BackendState::Down);
    b.observe_probe(&probe(true));
    assert_eq!(b.get(0).unwrap().state(), BackendState::Up);
    let health = b.get(0).unwrap().health();
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
    assert_eq!(added, 2);
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
    assert_eq!(b.remove("backend-1"), Ok(0));
    assert_eq!(b.get(0).unwrap().state(), BackendState::Removed);
    assert_eq!(
        b.remove("backend-1"),
        Err(ChangeError::NotFound("backend-1".into()))
    );
    assert_eq!(b.len(), 3);
    assert_eq!(b.live_count(), 2);
    for _ in 0..10 {
        assert_ne!(b.pick(&[]), Some(0));
    }
    assert_eq!(b.set_draining("backend-2", true), Ok(1));
    for _ in 0..10 {
        assert_eq!(b.pick(&[]), Some(2));
    }
    assert_eq!(b.set_draining("backend-2", false), Ok(1));
    assert_eq!(b.get(1).unwrap().state(), BackendState::Up);
}
