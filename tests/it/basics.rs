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
