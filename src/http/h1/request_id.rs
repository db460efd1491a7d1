//! Request ids for `request_id = true`: 32 lowercase hex digits, as nginx's `$request_id`.
//!
//! Each thread (each reactor) draws 64 random bits once and then counts; the count goes through
//! a bijection that scrambles it, so ids look random yet two from one thread never collide, and
//! making one costs a few arithmetic operations, no system call and no lock.

use std::cell::Cell;

/// Length of a generated id.
pub const LEN: usize = 32;

thread_local! {
    static STATE: Cell<(u64, u64)> = Cell::new((fastrand::u64(..), 0));
}

/// A new id.
pub fn next() -> [u8; LEN] {
    let (prefix, count) = STATE.with(|s| {
        let (prefix, count) = s.get();
        s.set((prefix, count.wrapping_add(1)));
        (prefix, count)
    });
    let mut id = [0u8; LEN];
    write_hex(&mut id[..16], prefix);
    write_hex(&mut id[16..], scramble(count));
    id
}

/// splitmix64's finalizer: a bijection on u64, so distinct counts give distinct outputs.
fn scramble(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write_hex(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<[u8; LEN]> = (0..10_000).map(|_| next()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert!(id
                .iter()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
