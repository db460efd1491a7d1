//! The two shapes of an access log line: `text` (space-separated, the log's historical form)
//! and `json` (one object per line, every field named, the same keys on every line).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::Record;
use crate::http::{push_decimal, push_ip};

/// `2026-12-07T12:00:00.123456Z [INFO] access: 127.0.0.1:5000 "GET / HTTP/1.1" 200 12 b1
/// 0.213ms pool=default`, then the cause, route, TLS, request id and abort marks where they
/// apply.
pub fn text(out: &mut Vec<u8>, stamp: &str, r: &Record) {
    out.extend_from_slice(stamp.as_bytes());
    out.extend_from_slice(b" [INFO] access: ");
    match r.client {
        Some(addr) => push_addr(out, addr),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" \"");
    out.extend_from_slice(r.request_line.unwrap_or("-").as_bytes());
    out.extend_from_slice(b"\" ");
    push_decimal(out, r.status);
    out.push(b' ');
    push_decimal(out, r.bytes_out);
    out.push(b' ');
    out.extend_from_slice(r.backend.unwrap_or("-").as_bytes());
    out.push(b' ');
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
    if r.h2 && r.request_line.is_none() {
        out.extend_from_slice(b" h2");
    }
    if r.aborted {
        out.extend_from_slice(b" aborted");
    }
    out.push(b'\n');
}

/// One JSON object and a newline. Times are milliseconds with microsecond precision; `null`
/// where a time or a name does not apply (no backend was connected, no route matched).
pub fn json(out: &mut Vec<u8>, stamp: &str, r: &Record) {
    let line = JsonLine {
        time: stamp,
        client: r.client.map(Shown),
        method: r.method,
        target: r.target,
        protocol: r.protocol,
        status: r.status,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        backend: r.backend,
        pool: r.pool,
        route: r.route,
        request_id: r.request_id,
        tls: r.tls.map(|(version, suite)| Tls { version, suite }),
        head_ms: r.head.map(Millis),
        connect_ms: r.connect.map(Millis),
        first_byte_ms: r.first_byte.map(Millis),
        total_ms: Millis(r.head.unwrap_or_default() + r.served),
        termination: r.termination,
    };
    // Writing into a Vec fails only if serializing does, which these plain fields cannot.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    client: Option<Shown<SocketAddr>>,
    method: &'a str,
    target: &'a str,
    protocol: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    backend: Option<&'a str>,
    pool: Option<&'a str>,
    route: Option<&'a str>,
    request_id: Option<&'a str>,
    tls: Option<Tls<'a>>,
    head_ms: Option<Millis>,
    connect_ms: Option<Millis>,
    first_byte_ms: Option<Millis>,
    total_ms: Millis,
    termination: &'a str,
}

#[derive(Serialize)]
struct Tls<'a> {
    version: &'a str,
    suite: &'a str,
}

/// A value serialized as the string `Display` makes, written straight into the output.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A duration as milliseconds, to the microsecond.
struct Millis(Duration);

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_micros() as f64 / 1000.0)
    }
}

fn push_all(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
    }
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    if addr.is_ipv6() {
        out.push(b'[');
        push_ip(out, addr.ip());
        out.push(b']');
    } else {
        push_ip(out, addr.ip());
    }
    out.push(b':');
    push_decimal(out, addr.port());
}

/// `d` in milliseconds with three decimals.
fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    push_decimal(out, micros / 1000);
    out.push(b'.');
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
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
            method: "GET",
            target: "/a?b",
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

    const STAMP: &str = "2026-12-07T12:05:19.441258Z";

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
            h2: true,
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
    fn json_lines_name_every_field() {
        let mut out = Vec::new();
        let mut r = record();
        r.request_id = Some("id-\u{1}\"x");
        json(&mut out, STAMP, &r);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], STAMP);
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
    }
}
