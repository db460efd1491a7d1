//! Request heads and their framing, read the way a session reads a client's buffer.
//!
//! Must never happen, for any bytes:
//! - a panic in `find_head_end`, `leading_empty_lines`, `request::check_partial`,
//!   `request::parse` or `BodyScanner::scan`;
//! - a head end that depends on how the bytes arrived (`find_head_end` over growing prefixes
//!   must find what one call over the whole buffer finds), or that httparse places elsewhere;
//! - an accepted head whose framing the strict reference reading calls ambiguous (both
//!   Content-Length and Transfer-Encoding, a coding other than exactly `chunked`, differing
//!   lengths) or reads differently;
//! - a forwarded head (`out`) that does not re-parse to the same method, target and framing,
//!   frames its body more than one way, or carries a hop-by-hop header;
//! - a body end that depends on how the body bytes arrived, or a chunked body end other than
//!   the reference decoder's.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use lb::http::{self, request, BodyScanner, HeadLimits};
use lb_fuzz::{check_forwarded, chunked_end, normalise, strict_framing, Framing, Splits};
use libfuzzer_sys::fuzz_target;

/// Small limits, so the fuzzer reaches them with short inputs.
const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 2048,
    max_headers: 24,
    max_target_bytes: 512,
};
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fuzz_target!(|data: &[u8]| {
    let mut splits = Splits::new(data);
    let mut out = Vec::new();
    let mut pos = 0;
    // At most a few pipelined requests per input: each one is checked like the first.
    for _ in 0..16 {
        let blank = http::leading_empty_lines(&data[pos..]);
        pos += blank;
        let buf = &data[pos..];
        if buf.is_empty() {
            return;
        }

        // The head end, found in one call and across growing prefixes (as bytes arrive).
        let mut searched = 0;
        let whole = http::find_head_end(buf, &mut searched);
        let mut searched = 0;
        let mut len = 0;
        let mut incremental = None;
        while len < buf.len() {
            len = (len + splits.next_size()).min(buf.len());
            incremental = http::find_head_end(&buf[..len], &mut searched);
            if incremental.is_some() {
                break;
            }
            let _ = request::check_partial(&buf[..len], &LIMITS);
        }
        assert_eq!(whole, incremental, "head end depends on the split");
        let Some(end) = whole else {
            let _ = request::check_partial(buf, &LIMITS);
            return;
        };
        assert!(end <= buf.len());

        let parsed = request::parse(buf, &LIMITS, CLIENT, true, &mut out);
        let Ok(Some(req)) = parsed else {
            return;
        };

        // What the reference makes of the same head.
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut reference = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(ref_len)) = reference.parse(buf) else {
            panic!("lb accepted a head httparse alone does not: {req:?}");
        };
        assert_eq!(req.head_len, ref_len);
        assert_eq!(
            req.head_len, end,
            "httparse and find_head_end disagree on the end"
        );
        let ref_framing = strict_framing(reference.headers, reference.version.unwrap())
            .unwrap_or_else(|why| panic!("lb accepted an ambiguous head ({why}): {req:?}"));
        assert_eq!(normalise(ref_framing), Framing::from(req.body));

        // The head for the backend.
        let fwd = check_forwarded(&out)
            .unwrap_or_else(|why| panic!("{why}: {:?}", String::from_utf8_lossy(&out)))
            .expect("forwarded head is complete");
        assert_eq!(fwd.head_len, out.len(), "forwarded head has trailing bytes");
        assert_eq!(Some(fwd.method.as_str()), reference.method);
        assert_eq!(Some(fwd.target.clone()), reference.path.map(lb_fuzz::origin_form));
        assert_eq!(fwd.framing, Framing::from(req.body));

        // The body: whole, in pieces, and against the reference decoder.
        let body = &buf[req.head_len..];
        let whole = BodyScanner::new(req.body).scan(body);
        let mut scanner = BodyScanner::new(req.body);
        let mut used = 0;
        let mut piecewise = Ok((0, scanner.is_done()));
        let mut at = 0;
        while at < body.len() && !scanner.is_done() {
            let n = splits.next_size().min(body.len() - at);
            match scanner.scan(&body[at..at + n]) {
                Ok(s) => {
                    used += s.used;
                    if !s.done {
                        assert_eq!(s.used, n, "an unfinished body left input unused");
                    }
                    piecewise = Ok((used, s.done));
                }
                Err(e) => {
                    piecewise = Err(e);
                    break;
                }
            }
            at += n;
        }
        assert_eq!(
            whole.map(|s| (s.used, s.done)),
            piecewise,
            "body end depends on the split"
        );
        if req.body == lb::http::BodyKind::Chunked {
            match (whole, chunked_end(body)) {
                (Ok(s), Ok(Some(end))) if s.done => assert_eq!(s.used, end),
                (Ok(s), Ok(None)) if !s.done => {}
                (Err(lb::http::FramingError::TooLong), _) => {}
                (Err(_), Err(_) | Ok(None)) => {}
                (lb, reference) => {
                    panic!("chunked body: lb {lb:?}, reference {reference:?}")
                }
            }
        }
        let Ok(s) = whole else { return };
        if !s.done || !req.keep_alive {
            return;
        }
        pos += req.head_len + s.used;
    }
});
