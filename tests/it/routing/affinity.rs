//! Affinity and shares within a pool: consistent hashing, sticky cookies, slow start, backups.

use std::collections::HashMap;
use std::time::Instant;

use lb::config::{HashKey, StickyConfig};
use lb::upstream::BackendState;

use super::*;

/// A pool `p` that takes every request, health-checked every 50 ms (rise 1, fall 1).
fn only_pool(p: PoolConfig) -> Proxy {
    let mut p = p;
    p.health.interval = Duration::from_millis(50);
    p.health.rise = 1;
    p.health.fall = 1;
    Proxy::start_with_health(Vec::new(), |c| {
        c.pools = vec![p];
        c.routes = vec![to_pool("p", Conditions::default())];
    })
}

fn state(proxy: &Proxy, name: &str) -> BackendState {
    proxy.backends.find(name).expect("backend").1.state()
}

/// Which backend each of `users` lands on.
fn assignment(proxy: &Proxy, users: &[String]) -> HashMap<String, String> {
    users
        .iter()
        .map(|u| {
            let r = get_as(proxy.addr, "h", "/", &format!("X-User: {u}\r\n"));
            assert_eq!(r.status, 200, "{}", r.text());
            (u.clone(), r.backend().to_string())
        })
        .collect()
}

#[test]
fn consistent_hash_moves_only_the_lost_backends_keys_and_moves_them_back() {
    let mut backends: Vec<DemoBackend> = (1..=4)
        .map(|i| DemoBackend::start(&format!("h{i}")))
        .collect();
    let mut p = pool("p", backends.iter().map(|b| b.config()).collect());
    p.algorithm = Algorithm::ConsistentHash;
    p.hash_key = Some(HashKey::Header("x-user".into()));
    let proxy = only_pool(p);
    let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let before = assignment(&proxy, &users);
    assert_eq!(
        assignment(&proxy, &users),
        before,
        "the same key, the same backend"
    );
    let on_h2 = before.values().filter(|b| *b == "h2").count();
    assert!(
        (50..=150).contains(&on_h2),
        "h2 holds about a quarter of 400 keys: {on_h2}"
    );

    let port = backends[1].addr.port();
    backends.remove(1);
    let during = assignment(&proxy, &users);
    let moved: Vec<&String> = users.iter().filter(|u| before[*u] != during[*u]).collect();
    assert_eq!(moved.len(), on_h2, "only h2's keys move");
    assert!(moved.iter().all(|u| before[*u] == "h2"));
    wait_until("h2 marked down", || {
        state(&proxy, "h2") == BackendState::Down
    });

    backends.insert(1, DemoBackend::start_on("h2", port));
    wait_until("h2 back up", || state(&proxy, "h2") == BackendState::Up);
    assert_eq!(
        assignment(&proxy, &users),
        before,
        "its keys came back to h2"
    );
}

#[test]
fn requests_without_the_hash_key_are_spread_in_turn() {
    let backends: Vec<DemoBackend> = (1..=2)
        .map(|i| DemoBackend::start(&format!("h{i}")))
        .collect();
    let mut p = pool("p", backends.iter().map(|b| b.config()).collect());
    p.algorithm = Algorithm::ConsistentHash;
    p.hash_key = Some(HashKey::Cookie("session".into()));
    let proxy = only_pool(p);
    assert_eq!(
        spread(proxy.addr, "h", "/", 10),
        [("h1".to_string(), 5), ("h2".to_string(), 5)]
    );
    let pinned: Vec<String> = (0..5)
        .map(|_| {
            get_as(proxy.addr, "h", "/", "Cookie: a=1; session=abc\r\n")
                .backend()
                .to_string()
        })
        .collect();
    assert!(pinned.iter().all(|b| *b == pinned[0]), "{pinned:?}");
}

/// The `lb_srv` cookie's value in a response's `Set-Cookie`, if it sets one.
fn sticky_cookie(r: &Response) -> Option<String> {
    let set = r.header("set-cookie")?;
    let value = set.strip_prefix("lb_srv=")?.split(';').next()?;
    Some(value.to_string())
}

#[test]
fn sticky_cookies_keep_a_client_on_its_backend_until_it_is_gone() {
    let mut backends: Vec<DemoBackend> = (1..=3)
        .map(|i| DemoBackend::start(&format!("s{i}")))
        .collect();
    let mut p = pool("p", backends.iter().map(|b| b.config()).collect());
    p.sticky = Some(StickyConfig {
        cookie: "lb_srv".into(),
        ttl: Some(Duration::from_secs(3600)),
    });
    let proxy = only_pool(p);

    let first = get_as(proxy.addr, "h", "/", "");
    let set = first
        .header("set-cookie")
        .expect("a sticky cookie")
        .to_string();
    assert!(
        set.contains("; Path=/") && set.contains("; HttpOnly"),
        "{set}"
    );
    assert!(set.contains("; Max-Age=3600"), "{set}");
    let value = sticky_cookie(&first).expect("lb_srv");
    let home = first.backend().to_string();
    for b in &backends {
        assert!(
            !value.contains(&b.addr.port().to_string()),
            "no address in {value}"
        );
    }
    assert!(
        !value.contains(&home),
        "the name is not in the cookie either"
    );
    let cookie = format!("Cookie: theme=dark; lb_srv={value}\r\n");
    for _ in 0..10 {
        let r = get_as(proxy.addr, "h", "/", &cookie);
        assert_eq!(r.backend(), home);
        assert_eq!(r.header("set-cookie"), None, "already set");
    }

    // Draining moves the client, with a new cookie.
    proxy.backends.set_draining(&home, true).expect("drain");
    let r = get_as(proxy.addr, "h", "/", &cookie);
    assert_ne!(r.backend(), home);
    let second_home = r.backend().to_string();
    let second = sticky_cookie(&r).expect("a new cookie");
    assert_ne!(second, value);
    proxy.backends.set_draining(&home, false).expect("enable");

    // So does its backend dying; the client is not failed on the way.
    let cookie = format!("Cookie: lb_srv={second}\r\n");
    assert_eq!(get_as(proxy.addr, "h", "/", &cookie).backend(), second_home);
    let dead = backends
        .iter()
        .position(|b| b.name == second_home)
        .expect("its backend");
    backends.remove(dead);
    let r = get_as(proxy.addr, "h", "/", &cookie);
    assert_eq!(r.status, 200);
    assert_ne!(r.backend(), second_home);
    let third = sticky_cookie(&r).expect("a new cookie");
    let third_home = r.backend().to_string();
    for _ in 0..5 {
        let cookie = format!("Cookie: lb_srv={third}\r\n");
        assert_eq!(get_as(proxy.addr, "h", "/", &cookie).backend(), third_home);
    }
    // A forged value names nobody: balanced as if absent.
    let r = get_as(proxy.addr, "h", "/", "Cookie: lb_srv=0123456789abcdef\r\n");
    assert_eq!(r.status, 200);
    assert!(sticky_cookie(&r).is_some());
}

#[test]
fn a_returning_backend_ramps_up_over_slow_start() {
    let mut backends = vec![DemoBackend::start("r1"), DemoBackend::start("r2")];
    let mut p = pool("p", backends.iter().map(|b| b.config()).collect());
    p.slow_start = Duration::from_secs(3);
    let proxy = only_pool(p);
    assert_eq!(
        spread(proxy.addr, "h", "/", 20),
        [("r1".to_string(), 10), ("r2".to_string(), 10)],
        "both at full weight from the start"
    );
    let port = backends[1].addr.port();
    backends.pop();
    wait_until("r2 marked down", || {
        get_as(proxy.addr, "h", "/", "");
        state(&proxy, "r2") == BackendState::Down
    });
    backends.push(DemoBackend::start_on("r2", port));
    wait_until("r2 back up", || state(&proxy, "r2") == BackendState::Up);
    let back = Instant::now();
    // The share of r2 in each half-second window after its return.
    let mut shares = Vec::new();
    while back.elapsed() < Duration::from_secs(4) {
        let window = Instant::now();
        let (mut r2, mut all) = (0, 0);
        while window.elapsed() < Duration::from_millis(500) {
            all += 1;
            if get_as(proxy.addr, "h", "/", "").backend() == "r2" {
                r2 += 1;
            }
        }
        shares.push(f64::from(r2) / f64::from(all));
    }
    // Linear from 1/16 of its weight: its share of two is w / (1 + w).
    assert!(shares[0] < 0.25, "first half-second: {shares:?}");
    assert!(shares[0] > 0.0, "it takes some traffic at once: {shares:?}");
    assert!(shares[2] > shares[0], "growing: {shares:?}");
    let last = shares[shares.len() - 1];
    assert!(
        (0.45..=0.55).contains(&last),
        "full share after 3 s: {shares:?}"
    );
}

#[test]
fn backups_take_traffic_only_while_every_primary_is_down() {
    let mut primary = DemoBackend::start("p1");
    let backup = DemoBackend::start("bk");
    let mut backup_config = backup.config();
    backup_config.backup = true;
    let proxy = only_pool(pool("p", vec![primary.config(), backup_config]));
    assert_eq!(spread(proxy.addr, "h", "/", 10), [("p1".to_string(), 10)]);
    let port = primary.addr.port();
    drop(primary);
    // The first request after the loss is redispatched, not failed.
    assert_eq!(spread(proxy.addr, "h", "/", 10), [("bk".to_string(), 10)]);
    primary = DemoBackend::start_on("p1", port);
    wait_until("p1 back up", || state(&proxy, "p1") == BackendState::Up);
    assert_eq!(spread(proxy.addr, "h", "/", 10), [("p1".to_string(), 10)]);
    drop(primary);
}
