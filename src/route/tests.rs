//! Routing rules: each match kind, first match wins, shadowed rules found.

use super::*;

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

fn req<'a>(
    host: Option<&'a str>,
    target: &'a str,
    method: &'a str,
    header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
) -> Request<'a> {
    Request::new(
        host.map(str::as_bytes),
        target.as_bytes(),
        method.as_bytes(),
        header,
    )
}

fn host(text: &str) -> Conditions {
    Conditions {
        host: Some(HostMatch::parse(text).unwrap()),
        ..Conditions::default()
    }
}

fn prefix(p: &str) -> Conditions {
    Conditions {
        path: Some(PathMatch::Prefix(p.to_string())),
        ..Conditions::default()
    }
}

#[test]
fn hosts_match_without_case_or_port() {
    let exact = host("API.example.com");
    let wild = host("*.example.com");
    for (h, e, w) in [
        ("api.example.com", true, true),
        ("Api.Example.COM:8443", true, true),
        ("www.example.com", false, true),
        ("a.b.example.com", false, true),
        ("example.com", false, false),
        ("evilexample.com", false, false),
        ("api.example.com.evil", false, false),
    ] {
        let r = req(Some(h), "/", "GET", &no_headers);
        assert_eq!(exact.matches(&r), e, "exact vs {h}");
        assert_eq!(wild.matches(&r), w, "wildcard vs {h}");
    }
    let r = req(None, "/", "GET", &no_headers);
    assert!(!exact.matches(&r), "no Host, no host match");
    assert!(HostMatch::parse("*.").is_err());
    assert!(HostMatch::parse("a..b").is_err());
    assert!(HostMatch::parse("a/b").is_err());
}

#[test]
fn paths_match_by_prefix_or_exactly_ignoring_the_query() {
    let p = prefix("/v1/");
    let exact = Conditions {
        path: Some(PathMatch::Exact("/health".into())),
        ..Conditions::default()
    };
    for (target, pm, em) in [
        ("/v1/users?id=1", true, false),
        ("/v1", false, false),
        ("/v10/x", false, false),
        ("/health", false, true),
        ("/health?x", false, true),
        ("/healthz", false, false),
        ("http://h.example/v1/x?y", true, false),
        ("http://h.example/health", false, true),
    ] {
        let r = req(Some("h"), target, "GET", &no_headers);
        assert_eq!(p.matches(&r), pm, "prefix vs {target}");
        assert_eq!(exact.matches(&r), em, "exact vs {target}");
    }
    assert_eq!(path_of(b"http://h.example"), b"/");
    assert_eq!(path_of(b"http://h.example?q"), b"/");
}

#[test]
fn methods_and_a_header_narrow_a_rule() {
    let canary = |name: &str| (name == "x-canary").then_some(&b"1"[..]);
    let rule = Conditions {
        methods: Some(vec!["GET".into(), "POST".into()]),
        header: Some(("x-canary".into(), "1".into())),
        ..Conditions::default()
    };
    assert!(rule.matches(&req(None, "/", "POST", &canary)));
    assert!(
        !rule.matches(&req(None, "/", "post", &canary)),
        "methods are case-sensitive"
    );
    assert!(!rule.matches(&req(None, "/", "PUT", &canary)));
    assert!(!rule.matches(&req(None, "/", "GET", &no_headers)));
}

#[test]
fn the_first_matching_rule_wins_and_no_match_is_none() {
    let rules = vec![
        Conditions {
            host: Some(HostMatch::parse("api.example.com").unwrap()),
            path: Some(PathMatch::Prefix("/v1/".into())),
            ..Conditions::default()
        },
        host("api.example.com"),
        prefix("/static/"),
    ];
    let at = |h: &'static str, t: &'static str| {
        first_match(&rules, &req(Some(h), t, "GET", &no_headers))
    };
    assert_eq!(at("api.example.com", "/v1/x"), Some(0));
    assert_eq!(at("api.example.com", "/v2/x"), Some(1));
    assert_eq!(at("api.example.com", "/static/a.css"), Some(1));
    assert_eq!(at("www.example.com", "/static/a.css"), Some(2));
    assert_eq!(at("www.example.com", "/"), None);
}

#[test]
fn a_rule_behind_a_broader_one_is_found() {
    let catch_all = Conditions::default();
    assert_eq!(
        first_shadowed(&[catch_all.clone(), prefix("/a")]),
        Some((1, 0))
    );
    assert_eq!(
        first_shadowed(&[prefix("/a/"), prefix("/a/b")]),
        Some((1, 0))
    );
    assert_eq!(first_shadowed(&[prefix("/a/b"), prefix("/a/")]), None);
    assert_eq!(
        first_shadowed(&[host("*.example.com"), host("api.example.com")]),
        Some((1, 0))
    );
    assert_eq!(
        first_shadowed(&[host("api.example.com"), host("*.example.com")]),
        None
    );
    let get_only = Conditions {
        methods: Some(vec!["GET".into()]),
        ..Conditions::default()
    };
    let get_post = Conditions {
        methods: Some(vec!["GET".into(), "POST".into()]),
        ..Conditions::default()
    };
    assert_eq!(
        first_shadowed(&[get_post.clone(), get_only.clone()]),
        Some((1, 0))
    );
    assert_eq!(first_shadowed(&[get_only, get_post]), None);
    // A narrower first rule leaves the broader one something.
    assert_eq!(first_shadowed(&[prefix("/a"), catch_all]), None);
}

/// `cargo test --release --lib route::tests::twenty_rules_per_request -- --ignored --nocapture`
/// prints the cost of finding the last of twenty rules (the worst case: every rule is tried):
/// 101 ns on this project's machine, about 1 % of what lb spends on a keep-alive request.
#[test]
#[ignore]
fn twenty_rules_per_request() {
    let mut rules: Vec<Conditions> = (0..19)
        .map(|i| Conditions {
            host: Some(HostMatch::parse(&format!("svc{i}.example.com")).unwrap()),
            path: Some(PathMatch::Prefix(format!("/v{i}/"))),
            ..Conditions::default()
        })
        .collect();
    rules.push(host("*.example.com"));
    let headers = |name: &str| (name == "x-canary").then_some(&b"0"[..]);
    let request = req(
        Some("www.example.com:8443"),
        "/index.html?x=1",
        "GET",
        &headers,
    );
    let rounds = 1_000_000u32;
    let started = std::time::Instant::now();
    let mut found = 0;
    for _ in 0..rounds {
        found += first_match(std::hint::black_box(&rules), &request).unwrap_or(0);
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    assert_eq!(found, 19 * rounds as usize);
    eprintln!("20 rules, the last one matching: {ns:.1} ns per request");
}

/// The bitmask index decides as the rules do one by one, over every combination of conditions
/// on a small alphabet of hosts, paths, methods and headers.
#[test]
fn the_index_agrees_with_trying_each_rule() {
    let hosts = [
        None,
        Some("a.example"),
        Some("*.example"),
        Some("b.example"),
    ];
    let paths = [
        None,
        Some(PathMatch::Prefix("/api/".into())),
        Some(PathMatch::Exact("/api/x".into())),
        Some(PathMatch::Prefix("/".into())),
    ];
    let methods = [
        None,
        Some(vec!["GET".to_string()]),
        Some(vec!["POST".into(), "PUT".into()]),
    ];
    let headers = [
        None,
        Some(("x-c".to_string(), "1".to_string())),
        Some(("x-d".into(), "2".into())),
    ];
    let mut all = Vec::new();
    for h in &hosts {
        for p in &paths {
            for m in &methods {
                for x in &headers {
                    all.push(Conditions {
                        host: h.map(|h| HostMatch::parse(h).unwrap()),
                        path: p.clone(),
                        methods: m.clone(),
                        header: x.clone(),
                    });
                }
            }
        }
    }
    fn with_c(name: &str) -> Option<&'static [u8]> {
        (name == "x-c").then_some(&b"1"[..])
    }
    fn with_d(name: &str) -> Option<&'static [u8]> {
        (name == "x-d").then_some(&b"2"[..])
    }
    type Lookup = fn(&str) -> Option<&'static [u8]>;
    let lookups: [Lookup; 3] = [no_headers, with_c, with_d];
    // Rule sets: sliding windows of 20 over every combination, in two orders.
    let mut reversed = all.clone();
    reversed.reverse();
    let mut checked = 0;
    for set in [&all, &reversed] {
        for start in (0..set.len().saturating_sub(20)).step_by(3) {
            let rules = &set[start..start + 20];
            let index = index::Index::build(rules).expect("20 rules are indexed");
            for host in [
                None,
                Some("a.example"),
                Some("B.EXAMPLE:80"),
                Some("c.example"),
                Some("x"),
            ] {
                for target in [
                    "/",
                    "/api/x",
                    "/api/y?q",
                    "/other",
                    "http://a.example/api/x",
                ] {
                    for method in ["GET", "POST", "DELETE"] {
                        for lookup in lookups {
                            let r = req(host, target, method, &lookup);
                            assert_eq!(
                                index.first_match(&r),
                                first_match(rules, &r),
                                "{host:?} {target} {method} over rules {start}.."
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
    assert!(
        index::Index::build(&all[..65]).is_none(),
        "more than 64 rules: not indexed"
    );
}
