//! Command-line flags over the file: what they replace, and the errors that name the flag.

use super::*;

// --- command line ----------------------------------------------------------

#[test]
fn flags_replace_backends_and_listen() {
    let mut cfg = parse(DOCUMENTED_EXAMPLE);
    cfg.apply(&cli(&[
        "--listen",
        "127.0.0.1:9100",
        "--backend",
        "web=127.0.0.1:9000",
        "--backend",
        "127.0.0.1:9001",
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, addr("127.0.0.1:9100"));
    assert_eq!(
        cfg.backends,
        vec![
            BackendConfig {
                name: "web".into(),
                address: addr("127.0.0.1:9000"),
                weight: 1,
                tls: None,
                backup: false,
            },
            BackendConfig {
                name: "backend-2".into(),
                address: addr("127.0.0.1:9001"),
                weight: 1,
                tls: None,
                backup: false,
            },
        ]
    );
    // Untouched keys keep the file's values.
    assert_eq!(cfg.admin, addr("127.0.0.1:8004"));
}

#[test]
fn named_backend_flag() {
    let mut cfg = Config::default();
    cfg.apply(&cli(&["--backend", "web=127.0.0.1:9000"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.backends.len(), 1);
    assert_eq!(cfg.backends[0].name, "web");
    assert_eq!(cfg.backends[0].address, addr("127.0.0.1:9000"));
}

#[test]
fn plain_backend_flag_gets_default_name() {
    let mut cfg = Config::default();
    cfg.apply(&cli(&["--backend", "127.0.0.1:9000"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.backends.len(), 1);
    assert_eq!(cfg.backends[0].name, "backend-1");
    assert_eq!(cfg.backends[0].address, addr("127.0.0.1:9000"));
    assert_eq!(cfg.backends[0].weight, DEFAULT_BACKEND_WEIGHT);
}

#[test]
fn no_backend_flags_keep_the_files_backends() {
    let mut cfg = parse(DOCUMENTED_EXAMPLE);
    let before = cfg.backends.clone();
    cfg.apply(&cli(&["--log-level", "trace", "--admin", "127.0.0.1:9999"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.backends, before);
    assert_eq!(cfg.log_level, LevelFilter::Trace);
    assert_eq!(cfg.admin, addr("127.0.0.1:9999"));
}

#[test]
fn bad_flags_name_the_flag() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--listen", "nowhere"], "--listen", "missing port"),
        (&["--admin", "127.0.0.1:x"], "--admin", "invalid port"),
        (&["--log-level", "loud"], "--log-level", "unknown log level"),
        (&["--backend", "127.0.0.1"], "--backend", "missing port"),
        (
            &["--backend", "=127.0.0.1:9000"],
            "--backend",
            "must not be empty",
        ),
        (&["--backend", "web=127.0.0.1:0"], "--backend", "port 0"),
        (
            &[
                "--backend",
                "a=127.0.0.1:9000",
                "--backend",
                "a=127.0.0.1:9001",
            ],
            "--backend",
            "duplicate backend name \"a\"",
        ),
        (
            &[
                "--backend",
                "127.0.0.1:9000",
                "--backend",
                "backend-1=127.0.0.1:9001",
            ],
            "--backend",
            "duplicate backend name \"backend-1\"",
        ),
        (
            &["--listen", "127.0.0.1:8004"],
            "--listen",
            "must be different",
        ),
    ];
    for (args, flag, fragment) in cases {
        let mut cfg = parse(DOCUMENTED_EXAMPLE);
        let before = cfg.clone();
        let e = cfg.apply(&cli(args)).expect_err(&format!("{args:?}"));
        let shown = e.to_string();
        assert_eq!(e.key(), Some(*flag), "{shown}");
        assert!(shown.starts_with(flag), "{shown}");
        assert!(
            shown.contains(fragment),
            "{shown:?} should contain {fragment:?}"
        );
        assert_eq!(cfg, before, "a failed apply must not change the config");
    }
}

#[test]
fn some_backend_is_required_after_overrides() {
    let mut cfg = Config::default();
    let e = cfg.apply(&cli(&[])).expect_err("no backends anywhere");
    assert_eq!(e.key(), Some("backend"));
    assert!(e.to_string().contains("--backend"), "{e}");
    // A file without backends is fine as long as flags supply them.
    let mut cfg = parse("listen = \"127.0.0.1:8000\"\n");
    cfg.apply(&cli(&["--backend", "127.0.0.1:9000"]))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn cli_parses_every_flag() {
    let parsed = cli(&[
        "--config",
        "lb.toml",
        "--listen",
        "127.0.0.1:1",
        "--admin",
        "127.0.0.1:2",
        "--log-level",
        "warn",
        "--backend",
        "a=127.0.0.1:3",
        "--check",
    ]);
    assert_eq!(parsed.config.as_deref(), Some(Path::new("lb.toml")));
    assert_eq!(parsed.listen.as_deref(), Some("127.0.0.1:1"));
    assert_eq!(parsed.admin.as_deref(), Some("127.0.0.1:2"));
    assert_eq!(parsed.log_level.as_deref(), Some("warn"));
    assert_eq!(parsed.backend, ["a=127.0.0.1:3"]);
    assert!(parsed.check);
    assert_eq!(cli(&[]), Cli::default());
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
