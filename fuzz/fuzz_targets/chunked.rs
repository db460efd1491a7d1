//! The chunked body scanner (`BodyScanner::new(BodyKind::Chunked)`), fed the same bytes whole,
//! one byte at a time, and in pieces the input chooses.
//!
//! Input: the first byte `n` gives the number of cuts (`n % 16`), the next `2 * (n % 16)` bytes
//! their positions (u16, little-endian, modulo the body length); the rest is the body.
//!
//! Must never happen, for any bytes:
//! - a panic in `BodyScanner::scan`;
//! - a result (bytes used, done, or the error) that depends on how the body was split;
//! - an unfinished scan that leaves input unused, or a finished one that used more than it had;
//! - a body end other than the one the reference decoder (RFC 9112 §7.1) finds, or a body the
//!   reference finds complete refused for anything but a length limit: where the two disagree,
//!   a backend behind the proxy could read a different message than the proxy forwarded.
#![no_main]

use lb::http::framing::Scanned;
use lb::http::{BodyKind, BodyScanner, FramingError};
use lb_fuzz::chunked_end;
use libfuzzer_sys::fuzz_target;

type Outcome = Result<(usize, bool), FramingError>;

/// Feeds `pieces` in order to one scanner; the total used and whether it finished.
fn feed<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut scanner = BodyScanner::new(BodyKind::Chunked);
    let mut used = 0;
    for piece in pieces {
        let Scanned { used: n, done } = scanner.scan(piece)?;
        assert!(n <= piece.len(), "used more than it was given");
        used += n;
        if done {
            assert!(scanner.is_done());
            return Ok((used, true));
        }
        assert_eq!(n, piece.len(), "an unfinished body left input unused");
    }
    Ok((used, false))
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(n % 16);
    if rest.len() < 2 * cuts {
        return;
    }
    let (positions, body) = rest.split_at(2 * cuts);
    let mut cuts: Vec<usize> = positions
        .chunks(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (body.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(body.len());
    cuts.sort_unstable();
    cuts.dedup();

    let whole = feed(std::iter::once(body));
    let split = feed(cuts.windows(2).map(|w| &body[w[0]..w[1]]));
    let bytewise = feed(body.chunks(1));
    assert_eq!(whole, split, "result depends on the split at {cuts:?}");
    assert_eq!(whole, bytewise, "result differs fed a byte at a time");

    match (whole, chunked_end(body)) {
        (Ok((used, true)), Ok(Some(end))) => assert_eq!(used, end, "body ends elsewhere"),
        (Ok((_, false)), Ok(None)) => {}
        // Limits lb sets on extensions and trailers; the RFC sets none.
        (Err(FramingError::TooLong), _) => {}
        (Err(_), Err(_) | Ok(None)) => {}
        (lb, reference) => panic!("lb {lb:?}, reference {reference:?}"),
    }
});
