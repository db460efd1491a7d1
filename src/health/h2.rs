//! Health probes over HTTP/2, for `protocol = "h2"` pools: a backend that speaks only HTTP/2
//! (a gRPC server, say) would fail an HTTP/1.1 probe. The probe is one stream on a connection
//! of its own: a GET of the health path judged by its `:status`, or with `grpc = true` a call to
//! the standard gRPC health service (`grpc.health.v1.Health/Check`, every service), which
//! passes when it answers SERVING.

use crate::config::HealthConfig;
use crate::h2::frame::{self, MAX_MAX_FRAME_SIZE};
use crate::h2::hpack::{HeaderDecoder, HeaderEncoder};
use crate::h2::{next_frame, Frame, PREFACE};

const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
/// A gRPC message of an empty `HealthCheckRequest` (every service): no compression, length 0.
const EMPTY_REQUEST: [u8; 5] = [0; 5];
/// `HealthCheckResponse.status` (field 1, varint) = SERVING (1).
const SERVING: [u8; 2] = [0x08, 0x01];

/// The bytes a probe sends: the preface, empty SETTINGS, and its one stream.
pub fn request(check: &HealthConfig, authority: &str, tls: bool) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame::write_settings(&mut out, &[]);
    let scheme: &[u8] = if tls { b"https" } else { b"http" };
    let mut block = Vec::new();
    let mut encoder = HeaderEncoder::default();
    if check.grpc {
        encoder.encode(
            [
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", scheme),
                (b":authority", authority.as_bytes()),
                (b":path", GRPC_HEALTH_PATH.as_bytes()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", b"lb-health"),
            ],
            &mut block,
        );
        frame::write_headers(&mut out, 1, &block, false, frame::MIN_MAX_FRAME_SIZE);
        frame::write_data(&mut out, 1, &EMPTY_REQUEST, true, frame::MIN_MAX_FRAME_SIZE);
    } else {
        encoder.encode(
            [
                (&b":method"[..], &b"GET"[..]),
                (b":scheme", scheme),
                (b":authority", authority.as_bytes()),
                (b":path", check.path.as_bytes()),
                (b"user-agent", b"lb-health"),
            ],
            &mut block,
        );
        frame::write_headers(&mut out, 1, &block, true, frame::MIN_MAX_FRAME_SIZE);
    }
    out
}

/// Whether the backend's SETTINGS (to be acknowledged) have arrived.
pub fn has_settings(response: &[u8]) -> bool {
    let mut at = 0;
    while let Ok(Some((f, n))) = next_frame(&response[at..], MAX_MAX_FRAME_SIZE) {
        if matches!(f, Frame::Settings { ack: false, .. }) {
            return true;
        }
        at += n;
    }
    false
}

/// The verdict on what the backend sent so far (pass or fail, and why), or `None` while it
/// cannot be told yet.
pub fn verdict(response: &[u8], check: &HealthConfig) -> Option<(bool, String)> {
    if response.starts_with(b"HTTP/") {
        return Some((false, "an HTTP/1 answer: not an HTTP/2 server".to_string()));
    }
    let mut decoder = HeaderDecoder::default();
    let mut block: Vec<u8> = Vec::new();
    let mut status = None;
    let mut grpc_status = None;
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        let (f, n) = match next_frame(&response[at..], MAX_MAX_FRAME_SIZE) {
            Ok(Some(x)) => x,
            Ok(None) => return None,
            Err(e) => return Some((false, format!("not HTTP/2: {e}"))),
        };
        at += n;
        let (fragment, end_headers, end_stream) = match f {
            Frame::Headers {
                stream: 1,
                fragment,
                end_headers,
                end_stream,
            } => (fragment, end_headers, end_stream),
            Frame::Continuation {
                stream: 1,
                fragment,
                end_headers,
            } => (fragment, end_headers, false),
            Frame::Data {
                stream: 1,
                data,
                end_stream,
                ..
            } => {
                message.extend_from_slice(data);
                if end_stream {
                    return Some(judge_grpc(status, grpc_status, &message));
                }
                continue;
            }
            Frame::RstStream { stream: 1, code } => {
                return Some((false, format!("stream reset (code {code:#x})")))
            }
            Frame::GoAway { code, .. } => return Some((false, format!("GOAWAY (code {code:#x})"))),
            _ => continue,
        };
        block.extend_from_slice(fragment);
        if !end_headers {
            continue;
        }
        let Ok(list) = decoder.decode(&block, 64 * 1024) else {
            return Some((false, "bad HPACK block".to_string()));
        };
        block.clear();
        for (name, value) in list.iter() {
            let number = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u16>().ok());
            match name {
                b":status" if status.is_none() => status = number,
                b"grpc-status" => grpc_status = number,
                _ => {}
            }
        }
        let Some(code) = status else {
            return Some((false, "no :status".to_string()));
        };
        if (100..200).contains(&code) {
            status = None;
            continue;
        }
        if !check.grpc {
            return Some((check.expect.contains(code), format!("status {code}")));
        }
        if end_stream {
            return Some(judge_grpc(status, grpc_status, &message));
        }
    }
}

fn judge_grpc(status: Option<u16>, grpc_status: Option<u16>, message: &[u8]) -> (bool, String) {
    match (status, grpc_status) {
        (Some(200), Some(0)) => {}
        (Some(200), Some(g)) => return (false, format!("grpc-status {g}")),
        (Some(200), None) => return (false, "no grpc-status".to_string()),
        (s, _) => return (false, format!("status {}", s.unwrap_or(0))),
    }
    // One message: a 5-byte prefix, then HealthCheckResponse.
    match message.get(5..) {
        Some(body) if body == SERVING => (true, "SERVING".to_string()),
        Some(_) => (false, "not SERVING".to_string()),
        None => (false, "no health message".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(fields: &[(&str, &str)], body: Option<&[u8]>, trailers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_settings(&mut out, &[]);
        let mut enc = HeaderEncoder::default();
        let mut block = Vec::new();
        enc.encode(
            fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut block,
        );
        let only_head = body.is_none() && trailers.is_empty();
        frame::write_headers(&mut out, 1, &block, only_head, 16_384);
        if let Some(b) = body {
            frame::write_data(&mut out, 1, b, trailers.is_empty(), 16_384);
        }
        if !trailers.is_empty() {
            let mut block = Vec::new();
            enc.encode(
                trailers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
                &mut block,
            );
            frame::write_headers(&mut out, 1, &block, true, 16_384);
        }
        out
    }

    #[test]
    fn a_get_probe_is_judged_by_its_status() {
        let check = HealthConfig::default();
        let req = request(&check, "127.0.0.1:1", false);
        assert!(req.starts_with(PREFACE));
        let ok = answer(&[(":status", "200")], None, &[]);
        assert_eq!(verdict(&ok, &check), Some((true, "status 200".into())));
        assert_eq!(verdict(&ok[..ok.len() - 1], &check), None);
        let bad = answer(&[(":status", "503")], None, &[]);
        assert_eq!(verdict(&bad, &check), Some((false, "status 503".into())));
        assert!(verdict(b"HTTP/1.1 200 OK\r\n\r\n", &check).is_some_and(|v| !v.0));
    }

    #[test]
    fn a_grpc_probe_passes_only_when_serving() {
        let check = HealthConfig {
            grpc: true,
            ..HealthConfig::default()
        };
        let head = [(":status", "200"), ("content-type", "application/grpc")];
        let serving = answer(
            &head,
            Some(b"\0\0\0\0\x02\x08\x01"),
            &[("grpc-status", "0")],
        );
        assert_eq!(verdict(&serving, &check), Some((true, "SERVING".into())));
        let not = answer(
            &head,
            Some(b"\0\0\0\0\x02\x08\x02"),
            &[("grpc-status", "0")],
        );
        assert_eq!(verdict(&not, &check), Some((false, "not SERVING".into())));
        let missing = answer(&[(":status", "200"), ("grpc-status", "12")], None, &[]);
        assert_eq!(
            verdict(&missing, &check),
            Some((false, "grpc-status 12".into()))
        );
    }
}
