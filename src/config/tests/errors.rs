//! Bad values, unknown keys and unreadable files: each error names its key and line.

use super::*;

// --- bad values ------------------------------------------------------------

#[test]
fn bad_top_level_values_name_key_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("listen = \"nope\"", "listen", "missing port"),
        ("listen = \"127.0.0.1:99999\"", "listen", "invalid port"),
        ("listen = \"bad host:80\"", "listen", "invalid host name"),
        ("listen = \"::1:80\"", "listen", "brackets"),
        ("listen = 8000", "listen", "expected an address string"),
        ("admin = \":8004\"", "admin", "missing host"),
        ("admin = \"127.0.0.1:8000\"", "admin", "must be different"),
        (
            "algorithm = \"random\"",
            "algorithm",
            "expected one of: round_robin",
        ),
        (
            "algorithm = 1",
            "algorithm",
            "expected a string naming the algorithm",
        ),
        ("workers = 0", "workers", "must be at least 1"),
        ("workers = -3", "workers", "must be at least 1"),
        ("workers = \"2\"", "workers", "expected an integer"),
        ("workers = 1.5", "workers", "expected an integer"),
        (
            "log_level = \"loud\"",
            "log_level",
            "off, error, warn, info, debug, trace",
        ),
        ("log_level = 3", "log_level", "expected a string"),
        (
            "access_log = \"yes\"",
            "access_log",
            "expected true or false",
        ),
    ];
    for (line, key, fragment) in cases {
        // The bad key sits on line 3, after a comment and a blank line.
        let text = format!("# lb\n\n{line}\n{ONE_BACKEND}");
        assert_err(&text, key, 3, fragment);
    }
}

#[test]
fn bad_table_values_name_key_and_line() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "health",
            "path = \"health\"",
            "health.path",
            "must start with '/'",
        ),
        ("health", "path = \"/a b\"", "health.path", "spaces"),
        ("health", "rise = 0", "health.rise", "must be at least 1"),
        ("health", "fall = -1", "health.fall", "must be at least 1"),
        (
            "health",
            "rise = 4294967296",
            "health.rise",
            "must be at most 4294967295",
        ),
        (
            "limits",
            "max_connections = 0",
            "limits.max_connections",
            "at least 1",
        ),
        (
            "limits",
            "max_header_bytes = 512",
            "limits.max_header_bytes",
            "at least 1024",
        ),
        (
            "limits",
            "max_headers = 0",
            "limits.max_headers",
            "at least 1",
        ),
        (
            "limits",
            "max_target_bytes = 8",
            "limits.max_target_bytes",
            "at least 16",
        ),
        (
            "limits",
            "max_target_bytes = 32768",
            "limits.max_target_bytes",
            "less than",
        ),
        (
            "limits",
            "max_header_bytes = 4096",
            "limits.max_header_bytes",
            "greater than",
        ),
        (
            "limits",
            "pool_max_idle = -1",
            "limits.pool_max_idle",
            "at least 0",
        ),
        (
            "limits",
            "max_headers = true",
            "limits.max_headers",
            "expected an integer",
        ),
    ];
    for (table, line, key, fragment) in cases {
        let text = format!("{ONE_BACKEND}\n[{table}]\n{line}\n");
        assert_err(&text, key, 5, fragment);
    }
}

#[test]
fn bad_backend_values_name_index_and_line() {
    let two = |second: &str| format!("{ONE_BACKEND}[[backend]]\n{second}\n");
    // Second backend's table starts on line 3, its first key is line 4.
    assert_err(
        &two("address = \"127.0.0.1\""),
        "backend[1].address",
        4,
        "missing port",
    );
    assert_err(
        &two("address = \"127.0.0.1:0\""),
        "backend[1].address",
        4,
        "port 0",
    );
    assert_err(
        &two("address = 8001"),
        "backend[1].address",
        4,
        "expected an address string",
    );
    assert_err(
        &two("address = \"127.0.0.1:8002\"\nweight = 0"),
        "backend[1].weight",
        5,
        "at least 1",
    );
    assert_err(
        &two("name = \"\"\naddress = \"127.0.0.1:8002\""),
        "backend[1].name",
        4,
        "must not be empty",
    );
    assert_err(
        &two("name = \"web\""),
        "backend[1].address",
        3,
        "missing: give address",
    );
}

#[test]
fn duplicate_backend_names_point_at_both() {
    let text = "[[backend]]\nname = \"web\"\naddress = \"127.0.0.1:8001\"\n\
                [[backend]]\nname = \"web\"\naddress = \"127.0.0.1:8002\"\n";
    assert_err(
        text,
        "backend[1].name",
        5,
        "already used by backend[0] on line 2",
    );

    // A default name can collide with an explicit one.
    let text = "[[backend]]\nname = \"backend-2\"\naddress = \"127.0.0.1:8001\"\n\
                [[backend]]\naddress = \"127.0.0.1:8002\"\n";
    assert_err(
        text,
        "backend[1].name",
        4,
        "default name \"backend-2\" is already used by backend[0] on line 2",
    );
}

#[test]
fn wrongly_shaped_tables_are_explained() {
    assert_err("health = 5\n", "health", 1, "a table: [health]");
    assert_err(
        "[backend]\naddress = \"127.0.0.1:8001\"\n",
        "backend",
        1,
        "double brackets",
    );
    assert_err("backend = [5]\n", "backend[0]", 1, "expected a table");
}

#[test]
fn syntax_errors_give_the_line() {
    let e = parse_err("listen = \"127.0.0.1:8000\"\nworkers = \n");
    assert_eq!(e.key(), None);
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().starts_with("invalid TOML on line 2:"), "{e}");

    let e = parse_err("workers = 1\nworkers = 2\n");
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().contains("duplicate key"), "{e}");
}

// --- unknown keys ----------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    let e = parse_err(&format!(
        "listen = \"127.0.0.1:8000\"\nbogus = 1\n{ONE_BACKEND}"
    ));
    assert_eq!(e.key(), Some("bogus"));
    assert_eq!(e.line(), Some(2));
    let shown = e.to_string();
    assert!(
        shown.starts_with("unknown key 'bogus' on line 2: "),
        "{shown}"
    );
    assert!(
        shown.contains("valid keys at the top level are: listen, admin"),
        "{shown}"
    );
}

#[test]
fn unknown_table_suggests_the_right_one() {
    let e = parse_err(&format!("{ONE_BACKEND}\n[timeout]\nconnect = \"1s\"\n"));
    assert_eq!(e.key(), Some("timeout"));
    assert_eq!(e.line(), Some(4));
    assert!(e.to_string().contains("did you mean 'timeouts'?"), "{e}");

    let e = parse_err("[[backends]]\naddress = \"127.0.0.1:8001\"\n");
    assert!(e.to_string().contains("did you mean 'backend'?"), "{e}");
}

#[test]
fn unknown_keys_in_every_table() {
    let cases = [
        (
            "[health]\nfoo = 1\n",
            "health.foo",
            "in [health] are: path, interval, timeout, rise, fall",
        ),
        (
            "[timeouts]\nfoo = \"1s\"\n",
            "timeouts.foo",
            "in [timeouts] are: connect, client_header",
        ),
        (
            "[limits]\nfoo = 1\n",
            "limits.foo",
            "in [limits] are: max_connections",
        ),
        (
            "[limits]\nmax_conections = 1\n",
            "limits.max_conections",
            "did you mean 'max_connections'?",
        ),
    ];
    for (table, key, fragment) in cases {
        let text = format!("{ONE_BACKEND}\n{table}");
        assert_err(&text, key, 5, fragment);
        assert!(parse_err(&text)
            .to_string()
            .contains(&format!("unknown key '{key}'")));
    }
}

#[test]
fn unknown_keys_inside_backend() {
    let text = format!("{ONE_BACKEND}[[backend]]\nname = \"b\"\nadress = \"127.0.0.1:8002\"\n");
    assert_err(&text, "backend[1].adress", 5, "did you mean 'address'?");
    assert_err(
        &text,
        "backend[1].adress",
        5,
        "valid keys in [[backend]] are: name, address, discover, weight",
    );

    let inline = "backend = [{ address = \"127.0.0.1:8001\", zz = 1 }]\n";
    assert_err(inline, "backend[0].zz", 1, "valid keys in [[backend]]");
}

#[test]
fn unknown_dotted_keys() {
    let text = format!("{ONE_BACKEND}health.intervall = \"5s\"\n");
    // Dotted keys after [[backend]] belong to that backend in TOML.
    assert_err(&text, "backend[0].health", 3, "valid keys in [[backend]]");
    let text = format!("health.intervall = \"5s\"\n{ONE_BACKEND}");
    assert_err(&text, "health.intervall", 1, "did you mean 'interval'?");
}

// --- loading files ---------------------------------------------------------

/// A file in the temp dir, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lb-config-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp config");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_errors_name_the_file() {
    let missing = Path::new("/nonexistent/lb-test.toml");
    let e = Config::load(missing).expect_err("missing file");
    assert_eq!(e.file(), Some(missing));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/lb-test.toml: cannot read config file"),
        "{e}"
    );

    let file = TempFile::new(
        "bad.toml",
        &format!("{ONE_BACKEND}[limits]\nmax_headers = 0\n"),
    );
    let e = Config::load(&file.0).expect_err("bad file");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: limits.max_headers = 0 on line 4",
            file.0.display()
        )),
        "{shown}"
    );
}
