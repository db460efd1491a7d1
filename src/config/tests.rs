use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use log::LevelFilter;

use super::*;

const ONE_BACKEND: &str = "[[backend]]\naddress = \"127.0.0.1:8001\"\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address literal")
}

fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("expected {text:?} to parse: {e}"))
}

fn parse_err(text: &str) -> ConfigError {
    match Config::from_toml_str(text) {
        Ok(cfg) => panic!("expected {text:?} to fail, got {cfg:?}"),
        Err(e) => e,
    }
}

/// The error names `key` and `line`, both structurally and in the message,
/// and the message explains with `fragment`.
fn assert_err(text: &str, key: &str, line: usize, fragment: &str) {
    let e = parse_err(text);
    let shown = e.to_string();
    assert_eq!(e.key(), Some(key), "key of {shown:?}");
    assert_eq!(e.line(), Some(line), "line of {shown:?}");
    assert!(shown.contains(key), "{shown:?} should name {key}");
    assert!(
        shown.contains(&format!("on line {line}")),
        "{shown:?} should give line {line}"
    );
    assert!(
        shown.contains(fragment),
        "{shown:?} should contain {fragment:?}"
    );
}

fn cli(args: &[&str]) -> Cli {
    let argv = std::iter::once("lb").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("flags {args:?}: {e}"))
}

// --- whole files -----------------------------------------------------------

/// The schema as documented, comments and all.
const DOCUMENTED_EXAMPLE: &str = r#"
listen = "127.0.0.1:8000"
admin = "127.0.0.1:8004"        # management API and dashboard
algorithm = "round_robin"       # only "round_robin" for now
workers = 1                     # reactors (later issue); must be >= 1
log_level = "info"              # off|error|warn|info|debug|trace
access_log = true               # one log line per request
busy_poll = false               # true: never sleep in the poller (burns a CPU per worker)

[health]
path = "/health"                # must start with '/'
interval = "5s"
timeout = "1s"
rise = 2                        # >= 1
fall = 2                        # >= 1

[timeouts]
connect = "2s"                  # backend connect
client_header = "10s"
client_idle = "60s"
backend_response = "30s"
backend_idle = "30s"
tunnel = "1h"

[limits]
max_connections = 10000         # client connections; >= 1
max_header_bytes = 32768        # request head size limit (431); >= 1024
max_headers = 100               # header count limit; >= 1
max_target_bytes = 8192         # request target limit (414)
pool_max_idle = 64              # 0 disables reuse

[[backend]]
name = "backend-1"
address = "127.0.0.1:8001"
weight = 1
"#;

#[test]
fn documented_example_parses_to_documented_values() {
    let cfg = parse(DOCUMENTED_EXAMPLE);
    // Spelled out rather than compared to Default, so a wrong constant fails.
    assert_eq!(cfg.listen, addr("127.0.0.1:8000"));
    assert_eq!(cfg.admin, addr("127.0.0.1:8004"));
    assert_eq!(cfg.algorithm, Algorithm::RoundRobin);
    assert_eq!(cfg.workers, 1);
    assert_eq!(cfg.log_level, LevelFilter::Info);
    assert!(cfg.access_log);
    assert!(!cfg.busy_poll);
    assert_eq!(
        cfg.health,
        HealthConfig {
            path: "/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
            expect: StatusSet::successful(),
            grpc: false,
        }
    );
    assert_eq!(
        cfg.timeouts,
        Timeouts {
            connect: Duration::from_secs(2),
            client_header: Duration::from_secs(10),
            client_idle: Duration::from_secs(60),
            backend_response: Duration::from_secs(30),
            backend_idle: Duration::from_secs(30),
            tunnel: Duration::from_secs(3600),
            drain: Duration::from_secs(30),
        }
    );
    assert_eq!(
        cfg.limits,
        Limits {
            max_connections: 10_000,
            max_header_bytes: 32_768,
            max_headers: 100,
            max_target_bytes: 8192,
            pool_max_idle: 64,
        }
    );
    assert_eq!(
        cfg.backends,
        vec![BackendConfig {
            name: "backend-1".into(),
            address: addr("127.0.0.1:8001"),
            weight: 1,
            tls: None,
            backup: false,
        }]
    );
    // The documented values are the defaults.
    let defaults = Config {
        backends: cfg.backends.clone(),
        ..Config::default()
    };
    assert_eq!(cfg, defaults);
}

#[test]
fn minimal_file_gets_every_default() {
    let cfg = parse(&format!(
        "listen = \"127.0.0.1:9000\"\n{ONE_BACKEND}[[backend]]\naddress = \"127.0.0.1:8002\"\n"
    ));
    let expected = Config {
        listen: addr("127.0.0.1:9000"),
        backends: vec![
            BackendConfig {
                name: "backend-1".into(),
                address: addr("127.0.0.1:8001"),
                weight: DEFAULT_BACKEND_WEIGHT,
                tls: None,
                backup: false,
            },
            BackendConfig {
                name: "backend-2".into(),
                address: addr("127.0.0.1:8002"),
                weight: DEFAULT_BACKEND_WEIGHT,
                tls: None,
                backup: false,
            },
        ],
        ..Config::default()
    };
    assert_eq!(cfg, expected);
}

#[test]
fn every_key_is_wired_to_its_field() {
    let cfg = parse(
        r#"
listen = "127.0.0.1:7000"
admin = "127.0.0.1:7001"
algorithm = "round_robin"
workers = 4
log_level = "DEBUG"
access_log = false
busy_poll = true
[health]
path = "/ready?full=1"
interval = "2s"
timeout = "250ms"
rise = 3
fall = 5
[timeouts]
connect = "1s"
client_header = "3s"
client_idle = "4s"
backend_response = "5s"
backend_idle = "6s"
tunnel = "7m"
[limits]
max_connections = 11
max_header_bytes = 2048
max_headers = 12
max_target_bytes = 1024
pool_max_idle = 0
[[backend]]
name = "web"
address = "127.0.0.1:7002"
weight = 9
[[backend]]
address = "127.0.0.1:7003"
"#,
    );
    assert_eq!(cfg.listen, addr("127.0.0.1:7000"));
    assert_eq!(cfg.admin, addr("127.0.0.1:7001"));
    assert_eq!(cfg.workers, 4);
    assert_eq!(cfg.log_level, LevelFilter::Debug);
    assert!(!cfg.access_log);
    assert!(cfg.busy_poll);
    assert_eq!(cfg.health.path, "/ready?full=1");
    assert_eq!(cfg.health.interval, Duration::from_secs(2));
    assert_eq!(cfg.health.timeout, Duration::from_millis(250));
    assert_eq!((cfg.health.rise, cfg.health.fall), (3, 5));
    let t = &cfg.timeouts;
    let secs = [
        t.connect,
        t.client_header,
        t.client_idle,
        t.backend_response,
        t.backend_idle,
    ]
    .map(|d| d.as_secs());
    assert_eq!(secs, [1, 3, 4, 5, 6]);
    assert_eq!(t.tunnel, Duration::from_secs(420));
    assert_eq!(
        cfg.limits,
        Limits {
            max_connections: 11,
            max_header_bytes: 2048,
            max_headers: 12,
            max_target_bytes: 1024,
            pool_max_idle: 0,
        }
    );
    assert_eq!(cfg.backends[0].name, "web");
    assert_eq!(cfg.backends[0].weight, 9);
    // Default names count every position, named or not.
    assert_eq!(cfg.backends[1].name, "backend-2");
    assert_eq!(cfg.backends[1].weight, 1);
}

#[test]
fn default_config_has_no_backends() {
    let cfg = Config::default();
    assert!(cfg.backends.is_empty());
    assert_eq!(cfg.listen, DEFAULT_LISTEN);
    assert_eq!(cfg.limits, Limits::default());
}

#[test]
fn host_names_are_resolved_once() {
    let cfg = parse("[[backend]]\naddress = \"localhost:8001\"\n");
    let a = cfg.backends[0].address;
    assert!(a.ip().is_loopback(), "{a}");
    assert_eq!(a.port(), 8001);
}

#[test]
fn ipv6_literals_are_accepted() {
    let cfg = parse("listen = \"[::1]:8000\"\n[[backend]]\naddress = \"[::1]:8001\"\n");
    assert_eq!(cfg.listen, addr("[::1]:8000"));
    assert_eq!(cfg.backends[0].address, addr("[::1]:8001"));
}

#[test]
fn demo_lb_toml_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("lb.toml")).expect("read lb.toml");
    // Its [tls] reads certs/, which a fresh clone lacks: the certificates are made for it
    // elsewhere, as scripts/start.sh makes them.
    let dir = std::env::temp_dir().join(format!("lb-demo-toml-{}", std::process::id()));
    let made = std::process::Command::new(root.join("scripts/certs.sh"))
        .arg(dir.join("certs"))
        .output()
        .expect("run scripts/certs.sh");
    assert!(made.status.success(), "{made:?}");
    let mut cfg = Config::from_toml_str_in(&text, &dir).unwrap_or_else(|e| panic!("{e}"));
    let tls = cfg.tls.take().expect("the demo serves HTTPS");
    assert_eq!(tls.listen, DEFAULT_TLS_LISTEN);
    assert_eq!(tls.min_version, DEFAULT_TLS_MIN_VERSION);
    assert_eq!(tls.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(tls.redirect_http, DEFAULT_TLS_REDIRECT_HTTP);
    assert_eq!(tls.session_cache, DEFAULT_TLS_SESSION_CACHE);
    assert_eq!(tls.session_tickets, DEFAULT_TLS_SESSION_TICKETS);
    assert_eq!(tls.certificates[0].cert, dir.join("certs/ecdsa.crt"));
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["backend-1", "backend-2", "backend-3"]);
    let ports: Vec<u16> = cfg.backends.iter().map(|b| b.address.port()).collect();
    assert_eq!(ports, [8001, 8002, 8003]);
    assert_eq!(cfg.listen, addr("127.0.0.1:8000"));
    assert_eq!(cfg.admin, addr("127.0.0.1:8004"));
    // The demo documents the defaults, so it must not drift from them.
    let defaults = Config {
        backends: cfg.backends.clone(),
        ..Config::default()
    };
    assert_eq!(cfg, defaults);
}

#[test]
fn summary_lists_effective_values() {
    let mut cfg = parse(DOCUMENTED_EXAMPLE);
    cfg.timeouts.connect = Duration::from_millis(1500);
    let summary = cfg.to_string();
    for expected in [
        "listen      127.0.0.1:8000",
        "log_level   info",
        "connect 1500ms",
        "tunnel 1h",
        "client_idle 1m",
        "backend-1  127.0.0.1:8001  weight 1",
        "admin_token unset",
        "proxy_protocol false",
        "http2       enabled true, h2c false, max_concurrent_streams 100, \
         initial_window_size 65535, max_header_list_size 32768",
        "discovery   resolve_interval 5s, timeout 1s, resolvers those of /etc/resolv.conf",
    ] {
        assert!(summary.contains(expected), "{expected:?} not in\n{summary}");
    }
    // Set, they show as set; the admin token only as being there.
    let cfg = parse(&format!(
        "admin_token = \"s3cret\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \
         \"127.0.0.1\"]\n{DOCUMENTED_EXAMPLE}\n[http2]\nh2c = true\n\
         [discovery]\nresolvers = [\"127.0.0.53:53\"]\n"
    ));
    let summary = cfg.to_string();
    for expected in [
        "admin_token set",
        "proxy_protocol true, from 10.0.0.0/8, 127.0.0.1/32",
        "http2       enabled true, h2c true,",
        "resolvers 127.0.0.53:53",
    ] {
        assert!(summary.contains(expected), "{expected:?} not in\n{summary}");
    }
    assert!(!summary.contains("s3cret"), "{summary}");
}

// --- durations -------------------------------------------------------------

#[test]
fn every_duration_form_parses() {
    let cases = [
        ("250ms", Duration::from_millis(250)),
        ("1ms", Duration::from_millis(1)),
        ("5s", Duration::from_secs(5)),
        ("1m", Duration::from_secs(60)),
        ("90m", Duration::from_secs(5400)),
        ("1h", Duration::from_secs(3600)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.1s", Duration::from_millis(100)),
        ("0.5m", Duration::from_secs(30)),
        ("1.25h", Duration::from_secs(4500)),
        ("2.5ms", Duration::from_micros(2500)),
        ("0s", Duration::ZERO),
        ("007s", Duration::from_secs(7)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn durations_parse_in_the_file() {
    let cfg = parse(&format!(
        "[timeouts]\nconnect = \"250ms\"\nclient_header = \"1.5s\"\nclient_idle = \"2m\"\ntunnel = \"3h\"\n{ONE_BACKEND}"
    ));
    assert_eq!(cfg.timeouts.connect, Duration::from_millis(250));
    assert_eq!(cfg.timeouts.client_header, Duration::from_millis(1500));
    assert_eq!(cfg.timeouts.client_idle, Duration::from_secs(120));
    assert_eq!(cfg.timeouts.tunnel, Duration::from_secs(3 * 3600));
}

#[test]
fn malformed_durations_are_rejected() {
    for text in [
        "", "5", "s", "5x", "5S", "5 s", " 5s", "5s ", "-1s", "+1s", "1.5.5s", "1.s", ".5s",
        "1e3ms", "5sec", "5ms5", "1_000s", "١s", "5µs", "5US", "5usec",
    ] {
        let err = parse_duration(text).expect_err(text);
        assert!(err.contains("invalid duration"), "{text:?}: {err}");
    }
    assert!(parse_duration("0.0000000001s").is_err());
    assert!(parse_duration("99999999999999999999999h").is_err());
    assert!(parse_duration("5124095576030432h").is_err());
}

#[test]
fn durations_format_back_to_file_notation() {
    for text in [
        "50us", "250ms", "5s", "1m", "1h", "90s", "1500ms", "0s", "2500us",
    ] {
        let d = parse_duration(text).expect(text);
        assert_eq!(format_duration(d), text);
    }
    assert_eq!(format_duration(Duration::from_nanos(2500)), "0.0000025s");
}

#[test]
fn bad_duration_message_matches_the_documented_form() {
    let mut text = String::from(ONE_BACKEND); // lines 1-2
    text.push_str("\n\n\n\n\n\n\n\n[timeouts]\n"); // through line 11
    text.push_str("connect = \"5x\"\n"); // line 12
    assert_eq!(
        parse_err(&text).to_string(),
        "timeouts.connect = \"5x\" on line 12: invalid duration, expected a number \
         followed by us, ms, s, m or h, like \"250ms\" or \"5s\""
    );
}

#[test]
fn zero_durations_are_rejected_for_every_key() {
    let keys = [
        ("health", "interval"),
        ("health", "timeout"),
        ("timeouts", "connect"),
        ("timeouts", "client_header"),
        ("timeouts", "client_idle"),
        ("timeouts", "backend_response"),
        ("timeouts", "backend_idle"),
        ("timeouts", "tunnel"),
    ];
    for (table, key) in keys {
        let text = format!("{ONE_BACKEND}[{table}]\n{key} = \"0ms\"\n");
        assert_err(
            &text,
            &format!("{table}.{key}"),
            4,
            "must be greater than zero",
        );
        let text = format!("{ONE_BACKEND}[{table}]\n{key} = \"soon\"\n");
        assert_err(&text, &format!("{table}.{key}"), 4, "invalid duration");
        let text = format!("{ONE_BACKEND}[{table}]\n{key} = 5\n");
        assert_err(
            &text,
            &format!("{table}.{key}"),
            4,
            "expected a duration string",
        );
    }
}

#[test]
fn health_expect_and_retries() {
    let cfg = Config::from_toml_str(
        "retries = 0\n[health]\nexpect = \"2xx, 301-302, 404\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    assert_eq!(cfg.retries, 0);
    let e = &cfg.health.expect;
    assert!(
        e.contains(200) && e.contains(299) && e.contains(301) && e.contains(302) && e.contains(404)
    );
    assert!(!e.contains(300) && !e.contains(303) && !e.contains(500));
    assert_eq!(e.to_string(), "2xx, 301-302, 404");
    assert_eq!(Config::default().retries, DEFAULT_RETRIES);
    for bad in ["6xx", "abc", "200-100", "99", "2xx,", "20x"] {
        let text = format!("[health]\nexpect = \"{bad}\"\n");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("health.expect") && err.contains("line 2"),
            "{bad}: {err}"
        );
    }
    let err = Config::from_toml_str("retries = -1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("retries"), "{err}");
}

#[test]
fn admin_beyond_loopback_needs_a_token() {
    let err = Config::from_toml_str("admin = \"0.0.0.0:8004\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin") && err.contains("admin_token") && err.contains("line 1"),
        "{err}"
    );
    let cfg =
        Config::from_toml_str("admin = \"0.0.0.0:8004\"\nadmin_token = \"s3cret\"\n").unwrap();
    assert_eq!(cfg.admin_token.as_deref(), Some("s3cret"));
    let err = Config::from_toml_str("admin_token = \"a b\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin_token"), "{err}");
    let mut cfg = Config::from_toml_str("[[backend]]\naddress = \"127.0.0.1:1\"\n").unwrap();
    let cli = Cli::parse_from(["lb", "--admin", "0.0.0.0:9999"]);
    let err = cfg.apply(&cli).unwrap_err().to_string();
    assert!(err.contains("--admin"), "{err}");
}

#[test]
fn proxy_protocol_needs_its_trusted_sources() {
    let err = Config::from_toml_str("proxy_protocol = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("proxy_protocol_from"), "{err}");
    let cfg = Config::from_toml_str(
        "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.1\", \"::1\"]\n",
    )
    .unwrap();
    assert_eq!(cfg.proxy_protocol_from.len(), 3);
    let cfg = Config::from_toml_str("proxy_protocol_from = [\"10.0.0.0/8\"]\n").unwrap();
    assert!(
        cfg.proxy_protocol_from.is_empty(),
        "off unless proxy_protocol = true"
    );
    let err = Config::from_toml_str("proxy_protocol = true\nproxy_protocol_from = [\"nope\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("proxy_protocol_from") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn discover_entries_and_discovery_settings() {
    let cfg = Config::from_toml_str(
        "[discovery]\nresolve_interval = \"2s\"\nresolvers = [\"127.0.0.1:5353\", \"10.0.0.2\"]\n\
         [[backend]]\nname = \"api\"\ndiscover = \"api.internal:8080\"\ntls = true\n\
         [[backend]]\nname = \"web\"\ndiscover = \"_http._tcp.web.service.consul\"\nweight = 2\n",
    )
    .unwrap();
    assert!(cfg.backends.is_empty());
    assert_eq!(cfg.discover.len(), 2);
    assert_eq!(
        cfg.discover[0].target,
        DiscoverTarget::Host {
            host: "api.internal".into(),
            port: 8080
        }
    );
    assert_eq!(
        cfg.discover[1].target,
        DiscoverTarget::Srv("_http._tcp.web.service.consul".into())
    );
    assert_eq!(cfg.discover[1].weight, 2);
    assert_eq!(cfg.discovery.resolve_interval, Duration::from_secs(2));
    assert_eq!(
        cfg.discovery.resolvers,
        [
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
            "10.0.0.2:53".parse().unwrap()
        ]
    );
    let summary = cfg.to_string();
    for shown in [
        "discovery   resolve_interval 2s, timeout 1s, resolvers 127.0.0.1:5353, 10.0.0.2:53",
        "api  discover api.internal:8080 every 2s  weight 1  tls api.internal",
        "web  discover SRV _http._tcp.web.service.consul every 2s  weight 2",
    ] {
        assert!(summary.contains(shown), "{shown:?} missing from\n{summary}");
    }
    for (bad, key) in [
        (
            "[[backend]]\ndiscover = \"api.internal\"\n",
            "backend[0].discover",
        ),
        (
            "[[backend]]\ndiscover = \"api..internal:80\"\n",
            "backend[0].discover",
        ),
        ("[[backend]]\ndiscover = \"a:0\"\n", "backend[0].discover"),
        (
            "[[backend]]\naddress = \"127.0.0.1:1\"\ndiscover = \"a:1\"\n",
            "backend[0].discover",
        ),
        (
            "[discovery]\nresolvers = [\"nope\"]\n",
            "discovery.resolvers",
        ),
    ] {
        let err = Config::from_toml_str(bad).unwrap_err().to_string();
        assert!(err.contains(key), "{bad:?}: {err}");
    }
}

mod cli;
mod errors;
mod http2;
mod idle_spin;
mod pools;
mod tls;
