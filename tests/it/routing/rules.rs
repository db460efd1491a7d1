//! Which pool a request goes to, and what the balancer answers itself.

use std::io::Write;

use super::*;

/// Three pools: `api` (a1), `www` (w1), and `default` (d1, the top-level list).
struct Three {
    proxy: Proxy,
    _backends: Vec<DemoBackend>,
}

fn three(routes: Vec<RouteConfig>) -> Three {
    let (a1, w1, d1) = (
        DemoBackend::start("a1"),
        DemoBackend::start("w1"),
        DemoBackend::start("d1"),
    );
    let pools = vec![
        pool("api", vec![a1.config()]),
        pool("www", vec![w1.config()]),
    ];
    let proxy = Proxy::start_with(vec![d1.config()], |c| {
        c.pools = pools;
        c.routes = routes;
    });
    Three {
        proxy,
        _backends: vec![a1, w1, d1],
    }
}

#[test]
fn hosts_match_exactly_or_by_wildcard_in_any_case_and_without_the_port() {
    let t = three(vec![
        to_pool("api", host("api.example.com")),
        to_pool("www", host("*.example.com")),
    ]);
    let addr = t.proxy.addr;
    for (h, want) in [
        ("api.example.com", "a1"),
        ("API.Example.COM:8080", "a1"),
        ("www.example.com", "w1"),
        ("a.b.example.com:443", "w1"),
        // A wildcard needs a label before the suffix.
        ("example.com", "d1"),
        ("api.example.org", "d1"),
    ] {
        assert_eq!(get_as(addr, h, "/", "").backend(), want, "Host: {h}");
    }
    // An absolute-form target names the host too.
    let r = roundtrip(
        addr,
        b"GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.backend(), "a1");
}

#[test]
fn paths_methods_and_headers_match_and_the_first_matching_route_wins() {
    let exact = Conditions {
        path: Some(PathMatch::Exact("/login".into())),
        ..Conditions::default()
    };
    let writes = Conditions {
        path: Some(PathMatch::Prefix("/v1/".into())),
        methods: Some(vec!["POST".into(), "DELETE".into()]),
        ..Conditions::default()
    };
    let canary = Conditions {
        header: Some(("x-canary".into(), "1".into())),
        ..Conditions::default()
    };
    let t = three(vec![
        to_pool("www", exact),
        to_pool("www", writes),
        to_pool("www", canary),
        // Reached only by what the three above leave.
        to_pool("api", prefix("/v1/")),
    ]);
    let addr = t.proxy.addr;
    assert_eq!(get_as(addr, "h", "/login", "").backend(), "w1");
    assert_eq!(
        get_as(addr, "h", "/login/x", "").backend(),
        "d1",
        "exact path only"
    );
    assert_eq!(
        get_as(addr, "h", "/login?next=/", "").backend(),
        "w1",
        "query ignored"
    );
    assert_eq!(
        get_as(addr, "h", "/v1/users", "").backend(),
        "a1",
        "GET is not a write"
    );
    let post = roundtrip(
        addr,
        b"POST /v1/users HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(post.backend(), "w1");
    let lower = roundtrip(
        addr,
        b"post /v1/users HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_ne!(lower.backend(), "w1", "methods are case-sensitive");
    assert_eq!(
        get_as(addr, "h", "/v1/x", "X-Canary: 1\r\n").backend(),
        "w1"
    );
    assert_eq!(
        get_as(addr, "h", "/v1/x", "x-canary:  1 \r\n").backend(),
        "w1"
    );
    assert_eq!(
        get_as(addr, "h", "/v1/x", "X-Canary: 2\r\n").backend(),
        "a1"
    );
    assert_eq!(get_as(addr, "h", "/v2/x", "").backend(), "d1");
    assert_eq!(
        get_as(addr, "h", "/v1", "").backend(),
        "d1",
        "the prefix is /v1/"
    );
}

#[test]
fn strip_prefix_removes_the_matched_prefix_before_forwarding() {
    let mut strip = to_pool("api", prefix("/api"));
    strip.action = RouteAction::Forward {
        pool: "api".into(),
        strip_prefix: true,
    };
    let t = three(vec![strip, to_pool("www", prefix("/echo/"))]);
    let addr = t.proxy.addr;
    for (sent, seen) in [
        ("/api/echo?x=1", "GET /echo?x=1 HTTP/1.1"),
        ("/api", "GET / HTTP/1.1"),
        ("/api?q", "GET /?q HTTP/1.1"),
        ("/apiecho", "GET /echo HTTP/1.1"),
    ] {
        let r = get_as(addr, "h", sent, "");
        if seen.contains("echo") {
            let (head, _) = echo_parts(&r);
            assert!(head.starts_with(seen), "{sent} arrived as {head:?}");
        } else {
            assert_eq!(r.backend(), "a1", "{sent}");
        }
    }
    // Without strip_prefix the path is left alone.
    let (head, _) = echo_parts(&get_as(addr, "h", "/echo/keep", ""));
    assert!(head.starts_with("GET /echo/keep HTTP/1.1"), "{head:?}");
}

#[test]
fn redirect_routes_answer_with_the_location_and_keep_the_connection() {
    let mut moved = to_pool("www", host("old.example.com"));
    moved.action = RouteAction::Redirect {
        location: "https://www.example.com".into(),
        status: 301,
        strip_prefix: false,
    };
    let mut docs = to_pool("www", prefix("/docs/"));
    docs.action = RouteAction::Redirect {
        location: "https://docs.example.com/".into(),
        status: 308,
        strip_prefix: true,
    };
    let t = three(vec![moved, docs]);
    let mut s = connect(t.proxy.addr);
    s.write_all(b"GET /a/b?c=1 HTTP/1.1\r\nHost: old.example.com\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/a/b?c=1")
    );
    assert_eq!(r.header("x-lb-error"), None, "a redirect is no error");
    assert_eq!(r.header("content-length"), Some("0"));
    // The same connection carries the next request.
    s.write_all(b"POST /docs/guide HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://docs.example.com/guide"));
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut s, false).backend(), "d1");
}

#[test]
fn without_a_default_pool_unmatched_requests_get_404_from_the_balancer() {
    let a1 = DemoBackend::start("a1");
    let proxy = Proxy::start_with(Vec::new(), |c| {
        c.pools = vec![pool("api", vec![a1.config()])];
        c.routes = vec![to_pool("api", prefix("/api/"))];
    });
    assert_eq!(get_as(proxy.addr, "h", "/api/x", "").backend(), "a1");
    let mut s = connect(proxy.addr);
    s.write_all(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-lb-error"), Some("no-route"));
    // A HEAD gets the head alone, and the connection lives on.
    s.write_all(b"HEAD /other HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s, true);
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    s.write_all(b"GET /api/y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut s, false).backend(), "a1");
    let (_, requests) = a1.stats();
    assert_eq!(requests, 2, "404s never reach a backend");
}

#[test]
fn each_pool_balances_with_its_own_algorithm() {
    let (a1, a2, w1, w2) = (
        DemoBackend::start("a1"),
        DemoBackend::start("a2"),
        DemoBackend::start("w1"),
        DemoBackend::start("w2"),
    );
    let weighted = |b: &DemoBackend, w| BackendConfig {
        weight: w,
        ..b.config()
    };
    let mut api = pool("api", vec![weighted(&a1, 3), weighted(&a2, 1)]);
    api.algorithm = Algorithm::WeightedRoundRobin;
    // Plain round-robin ignores the same weights.
    let www = pool("www", vec![weighted(&w1, 3), weighted(&w2, 1)]);
    let proxy = Proxy::start_with(Vec::new(), |c| {
        c.pools = vec![api, www];
        c.routes = vec![to_pool("api", host("api")), to_pool("www", host("www"))];
    });
    assert_eq!(
        spread(proxy.addr, "api", "/", 40),
        [("a1".to_string(), 30), ("a2".to_string(), 10)]
    );
    assert_eq!(
        spread(proxy.addr, "www", "/", 40),
        [("w1".to_string(), 20), ("w2".to_string(), 20)]
    );
}

#[test]
fn each_pool_is_checked_on_its_own_health_path() {
    let (a1, w1) = (DemoBackend::start("a1"), DemoBackend::start("w1"));
    let mut api = pool("api", vec![a1.config()]);
    let mut www = pool("www", vec![w1.config()]);
    for p in [&mut api, &mut www] {
        p.health.interval = Duration::from_millis(50);
        p.health.fall = 1;
    }
    // The demo backend has no such page: 404, a failing check.
    www.health.path = "/healthz".into();
    let proxy = Proxy::start_with_health(Vec::new(), |c| {
        c.pools = vec![api, www];
        c.routes = vec![to_pool("api", host("api")), to_pool("www", host("www"))];
    });
    let state = |name: &str| proxy.backends.find(name).expect("backend").1.state();
    wait_until("w1 to fail its /healthz check", || {
        state("w1") == lb::upstream::BackendState::Down
    });
    let health = proxy.backends.find("w1").expect("w1").1.health();
    assert_eq!(health.last_detail, "status 404");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        state("a1"),
        lb::upstream::BackendState::Up,
        "a1 passes /health"
    );
}

#[test]
fn a_pool_with_every_backend_gone_fails_alone() {
    let (a1, a2, w1) = (
        DemoBackend::start("a1"),
        DemoBackend::start("a2"),
        DemoBackend::start("w1"),
    );
    let proxy = Proxy::start_with(Vec::new(), |c| {
        c.pools = vec![
            pool("api", vec![a1.config(), a2.config()]),
            pool("www", vec![w1.config()]),
        ];
        c.routes = vec![to_pool("api", host("api")), to_pool("www", host("www"))];
    });
    assert_eq!(get_as(proxy.addr, "api", "/", "").status, 200);
    drop(a1);
    drop(a2);
    for _ in 0..5 {
        let r = get_as(proxy.addr, "api", "/", "");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("x-lb-error"), Some("all-backends-unreachable"));
        let r = get_as(proxy.addr, "www", "/", "");
        assert_eq!((r.status, r.backend()), (200, "w1"));
    }
}

#[test]
fn dns_discovery_fills_its_own_pool() {
    use lb::config::{DiscoverConfig, DiscoverTarget, DiscoverySettings};

    let www = DemoBackend::start("www-1");
    let (d1, d2) = (DemoBackend::start("d1"), DemoBackend::start("d2"));
    let srv = "_http._tcp.api.test";
    let zone = |backends: &[&DemoBackend]| Zone::srv_of(srv, "api.test", backends);
    let dns = DnsServer::start(zone(&[&d1, &d2]));
    let (resolver, wc) = (dns.addr, www.config());
    let proxy = Proxy::start_with_health(Vec::new(), move |c| {
        c.backends = vec![wc];
        let mut api = pool("api", Vec::new());
        api.discover = vec![DiscoverConfig {
            name: "api".into(),
            pool: "api".into(),
            backup: false,
            target: DiscoverTarget::Srv(srv.into()),
            weight: 1,
            tls: None,
        }];
        api.health.interval = Duration::from_millis(50);
        api.health.rise = 1;
        c.pools = vec![api];
        c.routes = vec![to_pool("api", host("api.example.com"))];
        c.discovery = DiscoverySettings {
            resolve_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            resolvers: vec![resolver],
        };
        c.health.interval = Duration::from_millis(50);
    });
    let api_index = proxy.backends.pool_index("api").expect("pool api");
    let in_api = |proxy: &Proxy| {
        proxy
            .backends
            .snapshot()
            .iter()
            .filter(|b| b.pool == api_index && b.state() == lb::upstream::BackendState::Up)
            .count()
    };
    wait_until("both published backends up in the pool api", || {
        in_api(&proxy) == 2
    });
    let served = spread(proxy.addr, "api.example.com", "/", 10);
    let names: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["d1", "d2"], "{served:?}");
    // The default pool is not touched by the discovered backends.
    assert_eq!(
        spread(proxy.addr, "www.example.com", "/", 4),
        [("www-1".to_string(), 4)]
    );
    // d2 leaves DNS: it leaves the pool api, and api keeps serving from d1.
    dns.set(zone(&[&d1]));
    wait_until("d2 gone from the pool api", || in_api(&proxy) == 1);
    assert_eq!(
        spread(proxy.addr, "api.example.com", "/", 4),
        [("d1".to_string(), 4)]
    );
}
