//! The real `lb` binary on a TOML file with `[[pool]]` and `[[route]]` tables: what an operator
//! writes is what routes, the access log names pool and route, and SIGHUP rewires both.

use std::path::PathBuf;

use super::*;

fn config_file(name: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lb-routing-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, body).expect("write config");
    path
}

fn signal(proxy: &ProxyProcess, sig: i32) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    let rc = unsafe { libc::kill(proxy.child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// The file: `www` as the default pool, `api` by host (sticky), `img` by path with the prefix
/// stripped, and a redirect.
fn two_services(www: &DemoBackend, api: &[&DemoBackend], img: &DemoBackend) -> String {
    let mut text = format!(
        "[health]\ninterval = \"200ms\"\nrise = 1\n\
         [[backend]]\nname = \"{}\"\naddress = \"{}\"\n\
         [[pool]]\nname = \"api\"\nalgorithm = \"least_connections\"\n\
         sticky = {{ cookie = \"lb_api\", ttl = \"1h\" }}\n",
        www.name, www.addr
    );
    for b in api {
        text += &format!(
            "[[pool.backend]]\nname = \"{}\"\naddress = \"{}\"\n",
            b.name, b.addr
        );
    }
    text += &format!(
        "[[pool]]\nname = \"img\"\nalgorithm = \"consistent_hash\"\nhash_key = \"uri\"\n\
         [[pool.backend]]\nname = \"{}\"\naddress = \"{}\"\n\
         [[route]]\nname = \"api\"\nhost = \"API.example.com\"\npool = \"api\"\n\
         [[route]]\nname = \"img\"\npath_prefix = \"/img\"\nstrip_prefix = true\n\
         methods = [\"GET\", \"HEAD\"]\npool = \"img\"\n\
         [[route]]\nname = \"old\"\nhost = \"old.example.com\"\n\
         redirect = \"https://www.example.com/\"\nstatus = 301\n",
        img.name, img.addr
    );
    text
}

#[test]
fn a_file_with_pools_and_routes_routes_logs_and_reloads() {
    let www = DemoBackend::start("www-1");
    let (api1, api2) = (DemoBackend::start("api-1"), DemoBackend::start("api-2"));
    let img = DemoBackend::start("img-1");
    let path = config_file("pools", &two_services(&www, &[&api1, &api2], &img));
    let proxy = ProxyProcess::start(&["--config", path.to_str().expect("path")]);
    let addr = proxy.addr;

    // Host in any case with a port; the sticky cookie comes back and is honoured.
    let r = get_as(addr, "api.EXAMPLE.com:8000", "/", "");
    assert_eq!(r.status, 200);
    let first = r.backend().to_string();
    assert!(first.starts_with("api-"), "{first}");
    let cookie = r.header("set-cookie").expect("sticky cookie").to_string();
    assert!(cookie.starts_with("lb_api="), "{cookie}");
    assert!(cookie.contains("Max-Age=3600"), "{cookie}");
    assert!(
        !cookie.contains(&api1.addr.to_string()),
        "the cookie names no address"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    for _ in 0..6 {
        let again = get_as(addr, "api.example.com", "/", &format!("Cookie: {pair}\r\n"));
        assert_eq!(again.backend(), first, "sticky");
    }
    // Path prefix, stripped, for GET only; other methods and paths go to the default pool.
    let (head, _) = echo_parts(&get_as(addr, "h", "/img/echo?size=2", ""));
    assert!(head.starts_with("GET /echo?size=2 HTTP/1.1"), "{head:?}");
    let post = roundtrip(
        addr,
        b"POST /img/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.backend(), "www-1");
    assert_eq!(get_as(addr, "www.example.com", "/", "").backend(), "www-1");
    // The redirect keeps path and query, with no doubled slash.
    let moved = get_as(addr, "old.example.com", "/a/b?c=1", "");
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        Some("https://www.example.com/a/b?c=1")
    );
    // The access log names both.
    let line = proxy.wait_for_log("pool=img route=img");
    assert!(line.contains("GET /img/echo?size=2"), "{line}");

    // SIGHUP: the api route goes, a canary pool comes by header, img changes its prefix.
    let canary = DemoBackend::start("canary-1");
    let text = format!(
        "[health]\ninterval = \"200ms\"\nrise = 1\n\
         [[backend]]\nname = \"www-1\"\naddress = \"{}\"\n\
         [[pool]]\nname = \"canary\"\n[[pool.backend]]\nname = \"canary-1\"\naddress = \"{}\"\n\
         [[pool]]\nname = \"img\"\n[[pool.backend]]\nname = \"img-1\"\naddress = \"{}\"\n\
         [[route]]\nname = \"canary\"\nheader = {{ name = \"X-Canary\", value = \"1\" }}\n\
         pool = \"canary\"\n\
         [[route]]\nname = \"images\"\npath_prefix = \"/images/\"\npool = \"img\"\n",
        www.addr, canary.addr, img.addr
    );
    std::fs::write(&path, text).expect("rewrite config");
    signal(&proxy, libc::SIGHUP);
    proxy.wait_for_log("configuration reloaded");
    wait_until("the canary pool serving", || {
        get_as(addr, "h", "/", "X-Canary: 1\r\n").backend() == "canary-1"
    });
    assert_eq!(get_as(addr, "api.example.com", "/", "").backend(), "www-1");
    assert_eq!(get_as(addr, "h", "/images/", "").backend(), "img-1");
    assert_eq!(get_as(addr, "h", "/img/", "").backend(), "www-1");
    assert_eq!(get_as(addr, "old.example.com", "/", "").status, 200);

    // A file whose route names a pool that does not exist is refused; routing stays.
    std::fs::write(
        &path,
        format!(
            "[[backend]]\naddress = \"{}\"\n[[route]]\nhost = \"x\"\npool = \"nope\"\n",
            www.addr
        ),
    )
    .expect("rewrite config");
    signal(&proxy, libc::SIGHUP);
    let refused = proxy.wait_for_log("configuration refused");
    assert!(refused.contains("route[0].pool"), "{refused}");
    assert_eq!(
        get_as(addr, "h", "/", "X-Canary: 1\r\n").backend(),
        "canary-1"
    );
    let _ = std::fs::remove_file(&path);
}
