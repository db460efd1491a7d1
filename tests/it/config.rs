//! The `lb` binary's configuration as an operator meets it: files, flags, exit codes and the
//! messages that say what to fix.

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::support::*;

/// Runs `lb` with `args` and returns how it ended; a process still running after `PATIENCE`
/// (it accepted a configuration it should not have, and is serving) fails the test.
fn run_lb(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lb");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("lb output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("lb output");
            panic!(
                "lb {args:?} did not exit; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Expects a configuration error: exit status 2, and one `lb: ...` line on stderr.
fn expect_config_error(args: &[&str]) -> String {
    let out = run_lb(args);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "lb {args:?}: {message}");
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(message.starts_with("lb: "), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    message
}

/// The repository's lb.toml, copied beside certificates made for it (its `[tls]` reads
/// `certs/`, which a fresh clone lacks) and with its HTTPS listener on port 0, so that tests can
/// run it next to a running demo and each other.
fn repo_lb_toml() -> String {
    use std::sync::OnceLock;
    static COPY: OnceLock<String> = OnceLock::new();
    COPY.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let dir = std::env::temp_dir().join(format!("lb-repo-toml-{}", std::process::id()));
        let made = Command::new(format!("{root}/scripts/certs.sh"))
            .arg(dir.join("certs"))
            .output()
            .expect("run scripts/certs.sh");
        assert!(made.status.success(), "{}", stderr(&made));
        let text = std::fs::read_to_string(format!("{root}/lb.toml")).expect("read lb.toml");
        let https = "listen = \"127.0.0.1:8443\"";
        assert!(text.contains(https), "lb.toml's [tls] listen moved");
        let copy = dir.join("lb.toml");
        std::fs::write(&copy, text.replace(https, "listen = \"127.0.0.1:0\""))
            .expect("write lb.toml copy");
        copy.to_string_lossy().into_owned()
    })
    .clone()
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let path = temp_file(
        "unknown-key.toml",
        "listen = \"127.0.0.1:0\"\n\n[timeouts]\nconnect = \"1s\"\nconect_retry = \"5s\"\n\n\
         [[backend]]\naddress = \"127.0.0.1:9\"\n",
    );
    let path = path.to_str().expect("utf-8 path");
    // Without --check: the process must refuse to start, not serve with the key ignored.
    let message = expect_config_error(&["--config", path]);
    assert!(message.contains(path), "{message}");
    assert!(
        message.contains("unknown key 'timeouts.conect_retry' on line 5"),
        "{message}"
    );
    // And it lists what would have been valid.
    assert!(message.contains("connect"), "{message}");

    let path = temp_file(
        "unknown-top-key.toml",
        "[[backend]]\naddress = \"127.0.0.1:9\"\nwieght = 2\n",
    );
    let message = expect_config_error(&["--config", path.to_str().expect("utf-8 path")]);
    assert!(message.contains("backend[0].wieght"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn bad_duration_is_named_with_its_key() {
    let path = temp_file(
        "bad-duration.toml",
        "[timeouts]\nclient_idle = \"60s\"\nconnect = \"5x\"\n",
    );
    let message = expect_config_error(&[
        "--config",
        path.to_str().expect("utf-8 path"),
        "--backend",
        "127.0.0.1:9",
    ]);
    assert!(
        message.contains("timeouts.connect = \"5x\" on line 3"),
        "{message}"
    );
    assert!(message.contains("invalid duration"), "{message}");

    let path = temp_file(
        "zero-duration.toml",
        "[timeouts]\nbackend_response = \"0s\"\n",
    );
    let message = expect_config_error(&[
        "--config",
        path.to_str().expect("utf-8 path"),
        "--backend",
        "127.0.0.1:9",
    ]);
    assert!(message.contains("timeouts.backend_response"), "{message}");
}

#[test]
fn check_accepts_the_repository_lb_toml() {
    let path = repo_lb_toml();
    let out = run_lb(&["--config", &path, "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(summary.contains("listen      127.0.0.1:8000"), "{summary}");
    assert!(summary.contains("backends    3"), "{summary}");
    for n in 1..=3 {
        assert!(
            summary.contains(&format!("backend-{n}  127.0.0.1:800{n}  weight 1")),
            "{summary}"
        );
    }
}

#[test]
fn version_prints_the_package_version() {
    for flag in ["--version", "-V"] {
        let out = run_lb(&[flag]);
        assert!(out.status.success(), "{flag}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("lb {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
        assert!(out.stderr.is_empty(), "{flag}: {}", stderr(&out));
    }
}

#[test]
fn check_prints_every_setting_with_its_default() {
    let path = temp_file(
        "check-defaults.toml",
        "[[backend]]\naddress = \"127.0.0.1:9\"\n",
    );
    let out = run_lb(&["--config", path.to_str().expect("utf-8 path"), "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = [
        "listen      127.0.0.1:8000",
        "admin       127.0.0.1:8004",
        "algorithm   round_robin",
        "workers     1",
        "log_level   info",
        "access_log  true (text, to stderr)",
        "request_id  false",
        "tcp_defer_accept false",
        "tcp_smart_accept true",
        "busy_poll   false",
        "idle_spin   50us",
        "retries     2",
        "admin_token unset",
        "proxy_protocol false",
        "health      GET /health every 5s, timeout 1s, rise 2, fall 2, expect 2xx",
        "timeouts    connect 2s, client_header 10s, client_idle 1m, backend_response 30s, \
         backend_idle 30s, tunnel 1h, drain 30s",
        "limits      max_connections 10000, max_header_bytes 32768, max_headers 100, \
         max_target_bytes 8192, pool_max_idle 64",
        "http2       enabled true, h2c false, max_concurrent_streams 100, \
         initial_window_size 65535, max_header_list_size 32768",
        "discovery   resolve_interval 5s, timeout 1s, resolvers those of /etc/resolv.conf",
        "backends    1",
        "  backend-1  127.0.0.1:9  weight 1",
    ];
    assert_eq!(summary, format!("{}\n", expected.join("\n")));

    // What the file sets replaces the default it would have shown, and nothing else moves.
    let path = temp_file(
        "check-values.toml",
        "admin_token = \"s3cret\"\naccess_log_format = \"json\"\naccess_log_path = \"/tmp/a.log\"\n\
         request_id = true\ntcp_defer_accept = true\ntcp_smart_accept = false\nidle_spin = \"0s\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\"]\n\
         [timeouts]\nclient_header = \"30s\"\n[http2]\nh2c = true\nmax_concurrent_streams = 250\n\
         [discovery]\nresolvers = [\"127.0.0.53\"]\n[[backend]]\naddress = \"127.0.0.1:9\"\n",
    );
    let out = run_lb(&["--config", path.to_str().expect("utf-8 path"), "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    for shown in [
        "\nadmin_token set\n",
        "\naccess_log  true (json, to /tmp/a.log)\n",
        "\nrequest_id  true\n",
        "\ntcp_defer_accept true\n",
        "\ntcp_smart_accept false\n",
        "\nidle_spin   0s\n",
        "\nproxy_protocol true, from 10.0.0.0/8\n",
        "connect 2s, client_header 30s, client_idle 1m,",
        "\nhttp2       enabled true, h2c true, max_concurrent_streams 250, initial_window_size 65535,",
        "resolvers 127.0.0.53:53\n",
    ] {
        assert!(summary.contains(shown), "{shown:?} missing from\n{summary}");
    }
    assert!(
        !summary.contains("s3cret"),
        "the token is a secret:\n{summary}"
    );
    assert_eq!(summary.lines().count(), expected.len(), "{summary}");
}

#[test]
fn check_shows_command_line_overrides() {
    let path = repo_lb_toml();
    let out = run_lb(&[
        "--config",
        &path,
        "--check",
        "--listen",
        "127.0.0.1:9000",
        "--backend",
        "web=127.0.0.1:9001",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(summary.contains("listen      127.0.0.1:9000"), "{summary}");
    // --backend replaces every backend of the file.
    assert!(
        summary.contains("backends    1\n  web  127.0.0.1:9001"),
        "{summary}"
    );
}

#[test]
fn missing_backends_and_bad_flags_are_refused() {
    let message = expect_config_error(&[]);
    assert!(message.contains("no backends configured"), "{message}");
    let message = expect_config_error(&["--backend", "web=nowhere"]);
    assert!(message.contains("--backend \"web=nowhere\""), "{message}");
    let message =
        expect_config_error(&["--backend", "a=127.0.0.1:9", "--backend", "a=127.0.0.1:10"]);
    assert!(message.contains("duplicate backend name"), "{message}");
    let message = expect_config_error(&["--config", "/nonexistent/lb.toml"]);
    assert!(message.contains("/nonexistent/lb.toml"), "{message}");
}

#[test]
fn backend_flag_serves_traffic() {
    let b1 = DemoBackend::start("one");
    let b2 = DemoBackend::start("two");
    let proxy = ProxyProcess::start(&[
        "--backend",
        &format!("web={}", b1.addr),
        "--backend",
        &format!("api={}", b2.addr),
    ]);
    let order: Vec<String> = (0..4)
        .map(|_| {
            let resp = get(proxy.addr, "/");
            assert_eq!(resp.status, 200, "{resp:?}");
            resp.backend().to_string()
        })
        .collect();
    assert_eq!(order, ["one", "two", "one", "two"]);
    // The names given on the command line are the ones the proxy logs.
    let mut log = String::new();
    wait_until("an access log line naming backend web", || {
        while let Ok(line) = proxy.output.try_recv() {
            log.push_str(&line);
        }
        log.contains(&format!("backend web at {}", b1.addr))
            && log.contains(&format!("backend api at {}", b2.addr))
            && log.contains("\"GET / HTTP/1.1\" 200 ")
            && log.contains(" web ")
            && log.contains(" api ")
    });
}

#[test]
fn backend_flag_replaces_the_file_backends() {
    let live = DemoBackend::start("live");
    let proxy = ProxyProcess::start(&[
        "--config",
        &repo_lb_toml(),
        "--backend",
        &format!("web={}", live.addr),
    ]);
    // lb.toml's three backends (ports 8001..8003) are gone. (Requests alone would not show it:
    // unreachable backends are skipped.) The startup lines name every backend in use.
    let startup: String = proxy.output.try_iter().collect();
    assert!(
        startup.contains(&format!("backend web at {}", live.addr)),
        "{startup}"
    );
    assert!(!startup.contains("backend-1"), "{startup}");
    for _ in 0..4 {
        let resp = get(proxy.addr, "/");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.backend(), "live");
    }
}
