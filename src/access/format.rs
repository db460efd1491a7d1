//! The two shapes of an access log line: `text` (space-separated, the log's historical form)
//! and `json` (one object per line, every field named, the same keys on every line).

use std::net::SocketAddr;
use std::time::Duration;

use super::Record;
use crate::http::{push_decimal, push_ip};

/// `2026-12-07T12:00:00.123456Z [INFO] access: 127.0.0.1:5000 "GET / HTTP/1.1" 200 12 b1
/// 0.213ms pool=default`, then the cause, route, TLS, request id and abort marks where they
/// apply.
pub fn text(out: &mut Vec<u8>, stamp: &[u8], r: &Record) {
    push_all(out, &[stamp, b" [INFO] access: "]);
    match r.client {
        Some(addr) => push_addr(out, addr),
        None => out.push(b'-'),
    }
    push_all(
        out,
        &[b" \"", r.request_line.unwrap_or("-").as_bytes(), b"\" "],
    );
    push_decimal(out, r.status);
    out.push(b' ');
    push_decimal(out, r.bytes_out);
    push_all(out, &[b" ", r.backend.unwrap_or("-").as_bytes(), b" "]);
    push_millis(out, r.served);
    out.extend_from_slice(b"ms");
    if let Some(cause) = r.cause {
        push_all(out, &[b" ", cause.as_bytes()]);
    }
    if let Some(pool) = r.pool {
        push_all(out, &[b" pool=", pool.as_bytes()]);
    }
    if let Some(route) = r.route {
        push_all(out, &[b" route=", route.as_bytes()]);
    }
    if let Some((version, suite)) = r.tls {
        push_all(out, &[b" tls=", version.as_bytes(), b"/", suite.as_bytes()]);
    }
    if let Some(id) = r.request_id {
        out.extend_from_slice(b" id=");
        push_token(out, id);
    }
    // A refused HTTP/2 stream has no request line to say what the client spoke.
    if r.protocol == "HTTP/2" && r.request_line.is_none() {
        out.extend_from_slice(b" h2");
    }
    if r.aborted {
        out.extend_from_slice(b" aborted");
    }
    out.push(b'\n');
}

/// One JSON object and a newline, the same keys on every line. Times are milliseconds to the
/// microsecond; `null` where a time or a name does not apply (no backend was connected, no route
/// matched).
///
/// Written by hand rather than through serde's derive: that cost three times the rest of the
/// line, mostly in escaping strings byte by byte that in practice never need it. Strings that do
/// need escaping still go through serde_json.
pub fn json(out: &mut Vec<u8>, stamp: &[u8], r: &Record) {
    let (method, target) = super::method_and_target(r.request_line);
    push_all(out, &[b"{\"time\":\"", stamp, b"\",\"client\":"]);
    match r.client {
        Some(addr) => {
            out.push(b'"');
            push_addr(out, addr);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    // Method, protocol, TLS names and termination are tokens or our own names: nothing in them
    // needs escaping.
    push_all(out, &[b",\"method\":\"", method.as_bytes(), b"\""]);
    out.extend_from_slice(b",\"target\":");
    push_json_str(out, target);
    push_all(out, &[b",\"protocol\":\"", r.protocol.as_bytes(), b"\""]);
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, r.status);
    out.extend_from_slice(b",\"bytes_in\":");
    push_decimal(out, r.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    push_decimal(out, r.bytes_out);
    for (key, value) in [
        (&b",\"backend\":"[..], r.backend),
        (b",\"pool\":", r.pool),
        (b",\"route\":", r.route),
        (b",\"request_id\":", r.request_id),
    ] {
        out.extend_from_slice(key);
        push_json_opt(out, value);
    }
    out.extend_from_slice(b",\"tls\":");
    match r.tls {
        Some((version, suite)) => {
            push_all(
                out,
                &[
                    b"{\"version\":\"",
                    version.as_bytes(),
                    b"\",\"suite\":\"",
                    suite.as_bytes(),
                    b"\"}",
                ],
            );
        }
        None => out.extend_from_slice(b"null"),
    }
    for (key, value) in [
        (&b",\"head_ms\":"[..], r.head),
        (b",\"connect_ms\":", r.connect),
        (b",\"first_byte_ms\":", r.first_byte),
        (
            b",\"total_ms\":",
            Some(r.head.unwrap_or_default() + r.served),
        ),
    ] {
        out.extend_from_slice(key);
        match value {
            Some(d) => push_millis(out, d),
            None => out.extend_from_slice(b"null"),
        }
    }
    push_all(
        out,
        &[b",\"termination\":\"", r.termination.as_bytes(), b"\"}\n"],
    );
}

fn push_json_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => push_json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Bytes a JSON string cannot hold as they are: control characters, `"` and `\\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// `value` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, value: &str) {
    let plain = !value.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]);
    if plain {
        push_all(out, &[b"\"", value.as_bytes(), b"\""]);
    } else if serde_json::to_writer(&mut *out, value).is_err() {
        // Serializing a string into a Vec cannot fail; should it, the line stays valid JSON.
        out.extend_from_slice(b"null");
    }
}

fn push_all(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
    }
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            // Every line has one: digits by hand cost a third of the general formatting.
            let [a, b, c, d] = v4.ip().octets();
            push_octet(out, a);
            for octet in [b, c, d] {
                out.push(b'.');
                push_octet(out, octet);
            }
        }
        SocketAddr::V6(_) => {
            out.push(b'[');
            push_ip(out, addr.ip());
            out.push(b']');
        }
    }
    out.push(b':');
    push_decimal(out, addr.port());
}

fn push_octet(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.extend_from_slice(&[b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10]);
    } else if n >= 10 {
        out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    } else {
        out.push(b'0' + n);
    }
}

/// `d` in milliseconds with three decimals.
fn push_millis(out: &mut Vec<u8>, d: Duration) {
    // In u64: `as_micros` is a u128, whose division is a call into the runtime.
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()));
    push_decimal(out, micros / 1000);
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// A client-chosen value as one space-free field: anything but visible ASCII becomes `_`, so a
/// line always splits into the same fields.
fn push_token(out: &mut Vec<u8>, value: &str) {
    out.extend(value.bytes().map(|b| {
        if b.is_ascii_graphic() && b != b'"' {
            b
        } else {
            b'_'
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            client: Some("127.0.0.1:5000".parse().unwrap()),
            request_line: Some("GET /a?b HTTP/1.1"),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 78,
            bytes_out: 185,
            backend: Some("b1"),
            pool: Some("default"),
            head: Some(Duration::from_micros(120)),
            connect: Some(Duration::ZERO),
            first_byte: Some(Duration::from_micros(450)),
            served: Duration::from_micros(1_570),
            termination: "ok",
            ..Record::default()
        }
    }

    const STAMP: &[u8] = b"2026-12-07T12:05:19.441258Z";
    const STAMP_STR: &str = "2026-12-07T12:05:19.441258Z";

    #[test]
    fn text_lines_keep_their_historical_fields() {
        let mut out = Vec::new();
        text(&mut out, STAMP, &record());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-07T12:05:19.441258Z [INFO] access: 127.0.0.1:5000 \"GET /a?b HTTP/1.1\" \
             200 185 b1 1.570ms pool=default\n"
        );
        let refused = Record {
            client: Some("[::1]:7".parse().unwrap()),
            status: 400,
            cause: Some("bad-request"),
            request_id: Some("a b\"c"),
            tls: Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
            protocol: "HTTP/2",
            ..Record::default()
        };
        let mut out = Vec::new();
        text(&mut out, STAMP, &refused);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-07T12:05:19.441258Z [INFO] access: [::1]:7 \"-\" 400 0 - 0.000ms \
             bad-request tls=TLSv1.3/TLS13_AES_128_GCM_SHA256 id=a_b_c h2\n"
        );
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        for (micros, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (999, "0.999"),
            (1_000, "1.000"),
            (23_281, "23.281"),
            (u64::MAX, "18446744073709551.615"),
        ] {
            let mut out = Vec::new();
            push_millis(&mut out, Duration::from_micros(micros));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn addresses_read_as_std_writes_them() {
        for addr in [
            "0.9.10.99:0",
            "100.255.1.200:65535",
            "255.255.255.255:65535",
            "0.0.0.0:1",
            "[::1]:443",
            "[2001:db8::7]:8080",
        ] {
            let a: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            push_addr(&mut out, a);
            assert_eq!(String::from_utf8(out).unwrap(), a.to_string());
        }
    }

    #[test]
    fn json_lines_name_every_field() {
        let mut out = Vec::new();
        let mut r = record();
        r.request_id = Some("id-\u{1}\"x");
        json(&mut out, STAMP, &r);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], STAMP_STR);
        assert_eq!(v["client"], "127.0.0.1:5000");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/a?b");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_in"], 78);
        assert_eq!(v["bytes_out"], 185);
        assert_eq!(v["backend"], "b1");
        assert_eq!(v["pool"], "default");
        assert!(v["route"].is_null());
        assert_eq!(
            v["request_id"], "id-\u{1}\"x",
            "escaped, and read back whole"
        );
        assert!(v["tls"].is_null());
        assert_eq!(v["head_ms"], 0.12);
        assert_eq!(v["connect_ms"], 0.0);
        assert_eq!(v["first_byte_ms"], 0.45);
        assert_eq!(v["total_ms"], 1.69);
        assert_eq!(v["termination"], "ok");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(v["tls"].is_null());
        let refused = Record {
            status: 400,
            protocol: "HTTP/2",
            tls: Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
            termination: "bad-request",
            ..Record::default()
        };
        let mut out = Vec::new();
        json(&mut out, STAMP, &refused);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["method"], "-");
        assert_eq!(v["target"], "-");
        assert!(v["client"].is_null() && v["backend"].is_null() && v["head_ms"].is_null());
        assert_eq!(v["tls"]["version"], "TLSv1.3");
        assert_eq!(v["total_ms"], 0.0);
    }
}
