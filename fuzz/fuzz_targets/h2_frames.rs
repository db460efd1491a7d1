//! The HTTP/2 frame decoder (`lb::h2::next_frame`) over any bytes: a connection's worth of
//! frames, read as a server reads them.
//!
//! Input: the first byte picks our SETTINGS_MAX_FRAME_SIZE (16 KiB to 16 MiB - 1, by powers of
//! two); the rest is the byte stream.
//!
//! Must never happen, for any bytes:
//! - a panic;
//! - a frame that claims more bytes than it was given, or none at all;
//! - a DATA frame whose data is longer than its flow-controlled length, or a frame longer than
//!   the maximum accepted;
//! - a different result for the same stream cut at a different point (a frame is decoded only
//!   once it is whole).
#![no_main]

use lb::h2::frame::{HEADER_LEN, MAX_MAX_FRAME_SIZE, MIN_MAX_FRAME_SIZE};
use lb::h2::{next_frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&pick, stream)) = input.split_first() else {
        return;
    };
    let max = (MIN_MAX_FRAME_SIZE << (pick % 11)).min(MAX_MAX_FRAME_SIZE);
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        match next_frame(rest, max) {
            Ok(Some((frame, used))) => {
                assert!(used >= HEADER_LEN && used <= rest.len(), "used {used} of {}", rest.len());
                assert!(used - HEADER_LEN <= max as usize, "frame over the maximum");
                if let Frame::Data { data, flow_len, .. } = frame {
                    assert!(data.len() <= flow_len as usize);
                }
                // Cut anywhere before its end, the same frame is not yet there.
                assert_eq!(next_frame(&rest[..used - 1], max), Ok(None));
                at += used;
            }
            Ok(None) => {
                // Not whole yet: a longer input would decide; nothing is consumed.
                break;
            }
            Err(_) => break,
        }
    }
});
