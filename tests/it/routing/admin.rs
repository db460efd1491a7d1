//! Pools and routes through the admin API: `/api/state` shows them, `/metrics` labels every
//! backend series with its pool, and backends are added, drained and removed within a pool.

use serde_json::{json, Value};

use super::*;

fn call(admin: std::net::SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    let body = body.unwrap_or_default();
    roundtrip(
        admin,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn state(admin: std::net::SocketAddr) -> Value {
    let r = call(admin, "GET", "/api/state", None);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("state JSON")
}

fn backend<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["backends"]
        .as_array()
        .and_then(|bs| bs.iter().rev().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in {doc}"))
}

#[test]
fn state_metrics_and_changes_follow_the_pools() {
    let (w1, a1, a2, spare) = (
        DemoBackend::start("w1"),
        DemoBackend::start("a1"),
        DemoBackend::start("a2"),
        DemoBackend::start("a-spare"),
    );
    let (wc, ac1, ac2, mut sc) = (w1.config(), a1.config(), a2.config(), spare.config());
    sc.backup = true;
    let proxy = Proxy::start_with_admin(Vec::new(), move |c| {
        c.backends = vec![wc];
        let mut api = pool("api", vec![ac1, ac2, sc]);
        api.algorithm = Algorithm::LeastConnections;
        api.slow_start = Duration::from_secs(30);
        api.sticky = Some(lb::config::StickyConfig {
            cookie: "lb_api".into(),
            ttl: None,
        });
        api.health.path = "/healthz".into();
        c.pools = vec![api];
        let mut route = to_pool("api", host("api.example.com"));
        route.name = "api".into();
        c.routes = vec![route];
    });
    let admin = proxy.admin_addr();

    let doc = state(admin);
    let pools = doc["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 2, "{doc}");
    assert_eq!(pools[0]["name"], "default");
    assert_eq!(pools[0]["backends"], json!(["w1"]));
    let api = &pools[1];
    assert_eq!(api["name"], "api");
    assert_eq!(api["algorithm"], "least_connections");
    assert_eq!(api["sticky"], json!({ "cookie": "lb_api", "ttl_ms": null }));
    assert_eq!(api["slow_start_ms"], 30_000);
    assert_eq!(api["health"]["path"], "/healthz");
    assert_eq!(api["backends"], json!(["a1", "a2", "a-spare"]));
    assert_eq!(api["up"], 3);
    assert_eq!(
        doc["routes"],
        json!([{
            "name": "api", "host": "api.example.com", "path_prefix": null, "path": null,
            "methods": null, "header": null, "pool": "api", "strip_prefix": false
        }])
    );
    assert_eq!(backend(&doc, "a-spare")["pool"], "api");
    assert_eq!(backend(&doc, "a-spare")["backup"], true);
    assert_eq!(backend(&doc, "w1")["pool"], "default");
    assert_eq!(backend(&doc, "w1")["backup"], false);
    // Up since the start: the full share.
    assert_eq!(backend(&doc, "a1")["slow_start_factor"], 1.0);

    // Add within a pool, drain and remove by the pool's path; other pools' names are 404.
    let extra = DemoBackend::start("a3");
    let body = json!({ "name": "a3", "address": extra.addr.to_string() }).to_string();
    let r = call(admin, "POST", "/api/pools/api/backends", Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = state(admin);
    assert_eq!(backend(&doc, "a3")["pool"], "api");
    assert_eq!(
        doc["pools"][1]["backends"],
        json!(["a1", "a2", "a-spare", "a3"])
    );
    let r = call(admin, "POST", "/api/pools/nope/backends", Some(&body));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = call(admin, "POST", "/api/pools/default/backends/a1/drain", None);
    assert_eq!(r.status, 404, "a1 is not in default: {}", r.text());
    let r = call(admin, "POST", "/api/pools/api/backends/a1/drain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend(&state(admin), "a1")["state"], "draining");
    let r = call(admin, "DELETE", "/api/pools/api/backends/a3", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        state(admin)["pools"][1]["backends"],
        json!(["a1", "a2", "a-spare"])
    );

    // Metrics: the pool label on per-backend series, and the pool's member counts.
    for _ in 0..4 {
        assert_eq!(get_as(proxy.addr, "api.example.com", "/", "").status, 200);
    }
    let text = call(admin, "GET", "/metrics", None).text();
    assert!(
        text.contains("lb_backend_up{backend=\"a2\",pool=\"api\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("lb_requests_total{backend=\"a2\",pool=\"api\",code=\"200\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("lb_pool_backends{pool=\"api\",state=\"all\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("lb_pool_backends{pool=\"default\",state=\"up\"} 1"),
        "{text}"
    );

    // A reload's routes are what the state shows.
    let mut after = Config {
        access_log: false,
        backends: vec![w1.config()],
        ..Config::default()
    };
    after.pools = vec![pool("api", vec![a1.config(), a2.config()])];
    let mut r = to_pool("api", prefix("/api/"));
    r.name = "by-path".into();
    after.routes = vec![r];
    proxy.reload(after);
    wait_until("the reloaded routes in the state", || {
        state(admin)["routes"][0]["name"] == "by-path"
    });
    assert_eq!(state(admin)["routes"][0]["path_prefix"], "/api/");
}
