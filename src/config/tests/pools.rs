//! `[[pool]]`, `[[route]]` and the policy keys: what a valid file gives, what each pool
//! inherits, and every conflict refused with its key and line.

use super::*;
use crate::route::{HostMatch, PathMatch};

const TWO_SERVICES: &str = include_str!("../../../docs/examples/two-services.toml");

/// A pool `api` of one backend on line 1-5, then `rest` from line 6 on.
fn with_api(rest: &str) -> String {
    format!(
        "[[pool]]\nname = \"api\"\n[[pool.backend]]\nname = \"api-1\"\naddress = \"127.0.0.1:9001\"\n{rest}"
    )
}

#[test]
fn the_worked_example_parses_into_its_pools_and_routes() {
    let cfg = parse(TWO_SERVICES);
    let pools = cfg.pools_in_effect();
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "api", "api-canary", "static"]);
    let api = &pools[1];
    assert_eq!(api.algorithm, Algorithm::LeastConnections);
    assert_eq!(api.health.path, "/healthz");
    assert_eq!(api.health.interval, DEFAULT_HEALTH_INTERVAL);
    assert_eq!(
        api.sticky,
        Some(StickyConfig {
            cookie: "lb_api".into(),
            ttl: Some(Duration::from_secs(3600))
        })
    );
    assert_eq!(api.slow_start, Duration::from_secs(30));
    let backups: Vec<bool> = api.backends.iter().map(|b| b.backup).collect();
    assert_eq!(backups, [false, false, true]);
    assert_eq!(pools[3].algorithm, Algorithm::ConsistentHash);
    assert_eq!(pools[3].hash_key, Some(HashKey::Uri));
    assert_eq!(pools[3].slow_start, Duration::ZERO);

    let routes = &cfg.routes;
    assert_eq!(routes.len(), 4);
    assert_eq!(routes[0].name, "canary");
    assert_eq!(
        routes[0].conditions.header,
        Some(("x-canary".to_string(), "1".to_string()))
    );
    assert_eq!(
        routes[1].conditions.host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
    assert_eq!(
        routes[2].conditions.path,
        Some(PathMatch::Prefix("/static/".into()))
    );
    assert_eq!(
        routes[2].conditions.methods,
        Some(vec!["GET".to_string(), "HEAD".to_string()])
    );
    assert_eq!(
        routes[2].action,
        RouteAction::Forward {
            pool: "static".into(),
            strip_prefix: true
        }
    );
    assert_eq!(
        routes[3].action,
        RouteAction::Redirect {
            location: "https://www.example.com".into(),
            status: 301,
            strip_prefix: false
        }
    );
    let summary = cfg.to_string();
    for shown in [
        "pool        api  algorithm least_connections",
        "api-spare  10.0.0.29:9000  weight 1  backup",
        "sticky      cookie lb_api, ttl 1h",
        "hash_key    uri",
        "canary  host api.example.com, header x-canary: 1  -> pool api-canary",
        "old-site  host old.example.com  -> redirect 301 https://www.example.com",
    ] {
        assert!(summary.contains(shown), "{shown:?} missing from\n{summary}");
    }
}

#[test]
fn the_readme_shows_the_example_file_verbatim() {
    let readme = include_str!("../../../README.md");
    // The file's first lines are a comment about the file itself; the rest is the README's.
    let body: String = TWO_SERVICES
        .lines()
        .skip_while(|l| l.starts_with('#') || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        readme.contains(&body),
        "README.md should hold docs/examples/two-services.toml from `listen` on"
    );
}

#[test]
fn a_pool_inherits_what_it_leaves_out() {
    let text = "algorithm = \"least_connections\"\nretries = 5\nsticky = { cookie = \"s\" }\n\
                slow_start = \"10s\"\n[health]\npath = \"/up\"\ninterval = \"2s\"\n\
                [timeouts]\nconnect = \"3s\"\n"
        .to_string()
        + &with_api(
            "[pool.health]\ninterval = \"7s\"\n[pool.timeouts]\nbackend_response = \"9s\"\n",
        );
    let cfg = parse(&text);
    let api = &cfg.pools[0];
    assert_eq!(api.algorithm, Algorithm::LeastConnections);
    assert_eq!(api.retries, 5);
    assert_eq!(api.sticky.as_ref().map(|s| s.cookie.as_str()), Some("s"));
    assert_eq!(api.sticky.as_ref().and_then(|s| s.ttl), None);
    assert_eq!(api.slow_start, Duration::from_secs(10));
    assert_eq!(api.health.path, "/up");
    assert_eq!(api.health.interval, Duration::from_secs(7));
    assert_eq!(api.connect_timeout, Duration::from_secs(3));
    assert_eq!(api.backend_response_timeout, Duration::from_secs(9));
    // Without top-level backends and with a pool, nothing is unrouted-to: 404s.
    assert!(!cfg.has_default_pool());
    assert_eq!(cfg.pools_in_effect().len(), 1);
}

#[test]
fn pool_backends_are_named_after_their_pool_and_may_be_discovered() {
    let text = "[[pool]]\nname = \"img\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n\
                [[pool.backend]]\ndiscover = \"localhost:9002\"\nbackup = true\n";
    let cfg = parse(text);
    let img = &cfg.pools[0];
    assert_eq!(img.backends[0].name, "img-1");
    assert_eq!(img.discover[0].name, "img-2");
    assert_eq!(img.discover[0].pool, "img");
    assert!(img.discover[0].backup);
    // A pool may also stand for `default` when the top level has no backends.
    let cfg =
        parse("[[pool]]\nname = \"default\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n");
    assert!(cfg.has_default_pool());
    assert_eq!(cfg.pools_in_effect()[0].backends[0].name, "default-1");
}

#[test]
fn pool_and_policy_conflicts_name_key_and_line() {
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (
            with_api("[[pool]]\nname = \"api\"\n"),
            "pool[1].name",
            7,
            "duplicate pool name, already used by pool[0] on line 2",
        ),
        (
            format!("{ONE_BACKEND}[[pool]]\nname = \"default\"\n"),
            "pool[0].name",
            4,
            "the pool \"default\" is the top-level [[backend]] list",
        ),
        (
            "[[pool]]\nalgorithm = \"round_robin\"\n".to_string(),
            "pool[0].name",
            1,
            "every [[pool]] needs a name",
        ),
        (
            "[[pool]]\nname = \"a b\"\n".to_string(),
            "pool[0].name",
            2,
            "letters, digits",
        ),
        (
            format!("{ONE_BACKEND}[[pool]]\nname = \"api\"\n[[pool.backend]]\nname = \"backend-1\"\naddress = \"127.0.0.1:9001\"\n"),
            "pool[0].backend[0].name",
            6,
            "duplicate backend name (names are unique across pools), already used by backend[0] on line 1",
        ),
        (
            with_api("[[pool.backend]]\naddress = \"127.0.0.1:9002\"\nweight = 300\n"),
            "pool[0].backend[1].weight",
            8,
            "must be at most 256",
        ),
        (
            "hash_key = \"uri\"\n".to_string(),
            "hash_key",
            1,
            "only means something with algorithm = \"consistent_hash\"",
        ),
        (
            "algorithm = \"consistent_hash\"\n".to_string(),
            "algorithm",
            1,
            "consistent_hash needs hash_key",
        ),
        (
            "algorithm = \"consistent_hash\"\nhash_key = \"header:\"\n".to_string(),
            "hash_key",
            2,
            "is not a hash key",
        ),
        (
            "[[pool]]\nname = \"a\"\nalgorithm = \"consistent_hash\"\n".to_string(),
            "pool[0].algorithm",
            3,
            "consistent_hash needs hash_key",
        ),
        (
            "[[pool]]\nname = \"a\"\nalgorithm = \"consistent_hash\"\nhash_key = \"uri\"\nslow_start = \"5s\"\n"
                .to_string(),
            "pool[0].slow_start",
            5,
            "slow_start does not work with consistent_hash",
        ),
        (
            "slow_start = \"5s\"\n[[pool]]\nname = \"a\"\nalgorithm = \"consistent_hash\"\nhash_key = \"uri\"\n"
                .to_string(),
            "pool[0].algorithm",
            4,
            "set slow_start = \"0s\" in this pool",
        ),
        (
            "sticky = { cookie = \"a b\" }\n".to_string(),
            "sticky.cookie",
            1,
            "must be a cookie name",
        ),
        (
            "sticky = { cookie = \"s\", ttl = \"soon\" }\n".to_string(),
            "sticky.ttl",
            1,
            "",
        ),
        (
            with_api("[pool.health]\npath = \"healthz\"\n"),
            "pool[0].health.path",
            7,
            "must start with '/'",
        ),
        (
            "[[pool]]\nname = \"api\"\nretries = -1\n".to_string(),
            "pool[0].retries",
            3,
            "must be at least 0",
        ),
    ];
    for (text, key, line, fragment) in &cases {
        assert_err(text, key, *line, fragment);
    }
}

#[test]
fn unknown_keys_in_pools_and_routes_list_the_valid_ones() {
    let e = parse_err(&with_api("[pool.timeouts]\nclient_idle = \"5s\"\n"));
    let shown = e.to_string();
    assert_eq!(e.key(), Some("pool[0].timeouts.client_idle"), "{shown}");
    assert!(
        shown.contains("valid keys in [pool.timeouts] are: connect, backend_response"),
        "{shown}"
    );
    let e = parse_err(&with_api(
        "[[route]]\npool = \"api\"\npath_prefx = \"/a\"\n",
    ));
    let shown = e.to_string();
    assert_eq!(e.key(), Some("route[0].path_prefx"), "{shown}");
    assert!(shown.contains("did you mean 'path_prefix'?"), "{shown}");
    assert!(
        shown.contains("valid keys in [[route]] are: name, host"),
        "{shown}"
    );
    let e = parse_err(&with_api("weigth = 2\n"));
    assert!(
        e.to_string().contains("valid keys in [[pool.backend]]"),
        "{e}"
    );
}

#[test]
fn route_conflicts_name_key_and_line() {
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (
            with_api("[[route]]\npool = \"apj\"\n"),
            "route[0].pool",
            7,
            "no pool is named \"apj\"; the pools are: api",
        ),
        (
            with_api("[[route]]\npool = \"default\"\n"),
            "route[0].pool",
            7,
            "there is no pool \"default\"",
        ),
        (
            with_api("[[route]]\nhost = \"a.example\"\n"),
            "route[0].pool",
            6,
            "a route needs pool = \"NAME\" or redirect",
        ),
        (
            with_api("[[route]]\npool = \"api\"\nredirect = \"https://x.example\"\n"),
            "route[0].redirect",
            8,
            "either pool or redirect, not both",
        ),
        (
            with_api("[[route]]\npath = \"/a\"\npath_prefix = \"/a/\"\npool = \"api\"\n"),
            "route[0].path",
            7,
            "either path_prefix or path, not both",
        ),
        (
            with_api("[[route]]\npath_prefix = \"api/\"\npool = \"api\"\n"),
            "route[0].path_prefix",
            7,
            "must start with '/'",
        ),
        (
            with_api("[[route]]\npath = \"/a?b\"\npool = \"api\"\n"),
            "route[0].path",
            7,
            "'?'",
        ),
        (
            with_api("[[route]]\npath = \"/a\"\nstrip_prefix = true\npool = \"api\"\n"),
            "route[0].strip_prefix",
            8,
            "needs path_prefix",
        ),
        (
            with_api("[[route]]\npool = \"api\"\nstatus = 301\n"),
            "route[0].status",
            8,
            "only means something with redirect",
        ),
        (
            with_api("[[route]]\nredirect = \"https://x.example\"\nstatus = 200\n"),
            "route[0].status",
            8,
            "must be 301, 302, 303, 307 or 308",
        ),
        (
            with_api("[[route]]\nredirect = \"/elsewhere\"\n"),
            "route[0].redirect",
            7,
            "absolute URL",
        ),
        (
            with_api("[[route]]\nredirect = \"https://x.example/?a=1\"\n"),
            "route[0].redirect",
            7,
            "must not hold a query",
        ),
        (
            with_api("[[route]]\nhost = \"bad_host!\"\npool = \"api\"\n"),
            "route[0].host",
            7,
            "is not a host name",
        ),
        (
            with_api("[[route]]\nmethods = [\"get\"]\npool = \"api\"\n"),
            "route[0].methods",
            7,
            "write \"GET\"",
        ),
        (
            with_api("[[route]]\nmethods = []\npool = \"api\"\n"),
            "route[0].methods",
            7,
            "at least one method",
        ),
        (
            with_api("[[route]]\nheader = { name = \"X Y\", value = \"1\" }\npool = \"api\"\n"),
            "route[0].header.name",
            7,
            "must be a header name",
        ),
        (
            with_api("[[route]]\nheader = { name = \"X-Y\" }\npool = \"api\"\n"),
            "route[0].header.value",
            7,
            "missing",
        ),
        (
            with_api("[[route]]\nname = \"r\"\npool = \"api\"\npath = \"/a\"\n[[route]]\nname = \"r\"\npool = \"api\"\npath = \"/b\"\n"),
            "route[1].name",
            11,
            "duplicate route name, already used by route[0] on line 6",
        ),
        (
            with_api("[[route]]\nname = \"all-api\"\npath_prefix = \"/api/\"\npool = \"api\"\n[[route]]\nname = \"v1\"\npath_prefix = \"/api/v1/\"\npool = \"api\"\n"),
            "route[1]",
            10,
            "can never match: route \"all-api\" (route[0], line 6) comes first",
        ),
        (
            with_api("[[route]]\nhost = \"*.example.com\"\npool = \"api\"\n[[route]]\nhost = \"Api.Example.com:8080\"\npool = \"api\"\n"),
            "route[1].host",
            10,
            "is not a host name",
        ),
        (
            with_api("[[route]]\nhost = \"*.example.com\"\npool = \"api\"\n[[route]]\nhost = \"api.example.com\"\nmethods = [\"GET\"]\npool = \"api\"\n"),
            "route[1]",
            9,
            "can never match",
        ),
    ];
    for (text, key, line, fragment) in &cases {
        assert_err(text, key, *line, fragment);
    }
}

#[test]
fn narrower_routes_first_are_accepted() {
    let text = with_api(
        "[[route]]\npath_prefix = \"/api/v1/\"\nmethods = [\"GET\"]\npool = \"api\"\n\
         [[route]]\npath_prefix = \"/api/\"\npool = \"api\"\nstrip_prefix = true\n\
         [[route]]\nhost = \"OLD.example.com\"\nredirect = \"https://new.example.com/\"\n",
    );
    let cfg = parse(&text);
    assert_eq!(cfg.routes[0].name, "route[0]");
    assert_eq!(
        cfg.routes[2].conditions.host,
        Some(HostMatch::Exact("old.example.com".into()))
    );
    assert_eq!(
        cfg.routes[2].action,
        RouteAction::Redirect {
            location: "https://new.example.com".into(),
            status: DEFAULT_REDIRECT_STATUS,
            strip_prefix: false
        }
    );
}

#[test]
fn the_command_line_counts_every_pool_and_replaces_the_default_one() {
    // Backends only in a pool: enough to start.
    let mut cfg = parse(&with_api(""));
    cfg.apply(&cli(&[])).expect("a pool's backends count");
    // Nothing anywhere: refused.
    let mut empty = parse("[[pool]]\nname = \"api\"\n");
    let e = empty.apply(&cli(&[])).unwrap_err();
    assert!(e.to_string().contains("no backends configured"), "{e}");
    // --backend replaces a [[pool]] named default.
    let mut cfg =
        parse("[[pool]]\nname = \"default\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n");
    cfg.apply(&cli(&["--backend", "127.0.0.1:9005"]))
        .expect("flag backends");
    assert_eq!(
        cfg.pools_in_effect()[0].backends[0].address,
        addr("127.0.0.1:9005")
    );
    // ... and may not take a name another pool uses.
    let mut cfg = parse(&with_api(""));
    let e = cfg
        .apply(&cli(&["--backend", "api-1=127.0.0.1:9005"]))
        .unwrap_err();
    assert!(e.to_string().contains("already used in a [[pool]]"), "{e}");
}
