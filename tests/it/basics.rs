//! Smoke tests of the whole path: a request goes through and comes back.

use crate::support::*;

#[test]
fn get_goes_through_round_robin() {
    let b1 = DemoBackend::start("b1");
    let b2 = DemoBackend::start("b2");
    let b3 = DemoBackend::start("b3");
    let proxy = Proxy::start(&[&b1, &b2, &b3]);
    let order: Vec<String> = (0..6)
        .map(|_| {
            let r = get(proxy.addr, "/");
            assert_eq!(r.status, 200);
            r.backend().to_string()
        })
        .collect();
    assert_eq!(order, ["b1", "b2", "b3", "b1", "b2", "b3"]);
}

#[test]
fn with_tcp_defer_accept_a_connection_is_taken_in_with_its_first_bytes() {
    use std::io::Write;
    let b1 = DemoBackend::start("b1");
    let proxy = Proxy::start_with_admin(vec![b1.config()], |c| c.tcp_defer_accept = true);
    let admin = proxy.admin_addr();
    let active = || {
        let doc: serde_json::Value =
            serde_json::from_slice(&get(admin, "/api/state").body).expect("state JSON");
        doc["totals"]["active_connections"]
            .as_u64()
            .expect("active_connections")
    };
    // Connected, nothing sent: the kernel holds it, the balancer has not seen it.
    let mut silent = connect(proxy.addr);
    let r = get(proxy.addr, "/");
    assert_eq!((r.status, r.backend()), (200, "b1"));
    // Once the served one has gone, nothing is open: the silent one was never accepted.
    wait_until("no connection open in the balancer", || active() == 0);
    // Its first bytes bring it in, and it is served like any other.
    silent
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let r = read_response(&mut silent, false);
    assert_eq!((r.status, r.backend()), (200, "b1"));
}
