//! `[http2]`: defaults, values, and the errors naming the key and line.

use super::{assert_err, parse};
use crate::config::{BackendProtocol, Http2Config};

const BACKEND: &str = "[[backend]]\naddress = \"127.0.0.1:9001\"\n";

#[test]
fn http2_defaults_offer_h2_by_alpn_only_and_follow_the_head_limit() {
    let c = parse(BACKEND);
    assert_eq!(c.http2, Http2Config::default());
    assert!(c.http2.enabled && !c.http2.h2c);
    assert_eq!(c.http2.max_concurrent_streams, 100);
    assert_eq!(c.http2.initial_window_size, 65_535);
    assert_eq!(c.http2.max_header_list_size, 32_768);
    let c = parse(&format!("[limits]\nmax_header_bytes = 65536\n{BACKEND}"));
    assert_eq!(c.http2.max_header_list_size, 65_536);
}

#[test]
fn http2_values_are_taken_and_bad_ones_named() {
    let c = parse(&format!(
        "[http2]\nenabled = false\nh2c = true\nmax_concurrent_streams = 250\n\
         initial_window_size = 1048576\nmax_header_list_size = 8192\n{BACKEND}"
    ));
    assert!(!c.http2.enabled && c.http2.h2c);
    assert_eq!(c.http2.max_concurrent_streams, 250);
    assert_eq!(c.http2.initial_window_size, 1 << 20);
    assert_eq!(c.http2.max_header_list_size, 8192);
    assert_err(
        &format!("[http2]\nmax_concurrent_streams = 0\n{BACKEND}"),
        "http2.max_concurrent_streams",
        2,
        "at least 1",
    );
    assert_err(
        &format!("[http2]\ninitial_window_size = 4294967296\n{BACKEND}"),
        "http2.initial_window_size",
        2,
        "at most",
    );
    assert_err(
        &format!("[http2]\ninitial_window_size = 2147483648\n{BACKEND}"),
        "http2.initial_window_size",
        2,
        "2^31-1",
    );
    assert_err(
        &format!("[http2]\nh2 = true\n{BACKEND}"),
        "http2.h2",
        2,
        "did you mean 'h2c'",
    );
}

#[test]
fn a_pool_speaks_http1_unless_it_says_h2_and_the_grpc_check_needs_h2() {
    let pool = "[[pool]]\nname = \"api\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n";
    let c = parse(pool);
    assert_eq!(c.pools[0].protocol, BackendProtocol::Http1);
    assert!(!c.pools[0].health.grpc);
    let c = parse(
        "[[pool]]\nname = \"grpc\"\nprotocol = \"h2\"\n[pool.health]\ngrpc = true\n\
         [[pool.backend]]\naddress = \"127.0.0.1:9001\"\n",
    );
    assert_eq!(c.pools[0].protocol, BackendProtocol::H2);
    assert!(c.pools[0].health.grpc);
    assert_err(
        "[[pool]]\nname = \"api\"\nprotocol = \"h3\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n",
        "pool[0].protocol",
        3,
        "expected one of: http1, h2",
    );
    assert_err(
        "[[pool]]\nname = \"api\"\n[pool.health]\ngrpc = true\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n",
        "pool[0].health.grpc",
        4,
        "needs protocol = \"h2\"",
    );
    assert_err(
        &format!("[health]\ngrpc = true\n{BACKEND}"),
        "health.grpc",
        2,
        "only in the [pool.health]",
    );
}
