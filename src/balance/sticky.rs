//! Sticky sessions by cookie: the value that names a backend in the cookie the balancer sets.
//!
//! The value is a hash of the pool's and the backend's names, as 16 hex digits: opaque (no
//! address or name leaks to clients), the same across restarts, reloads and every balancer of a
//! fleet (xxh3 is specified, see [`super::consistent_hash::hash_key`]), and different for a
//! same-named backend of another pool.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seeds the hash so that a sticky value never equals a hash-ring position of the same names.
const SEED: u64 = 0x6c62_5f73_7276; // "lb_srv"

/// The identity of backend `backend` of pool `pool` in a sticky cookie.
pub fn backend_id(pool: &str, backend: &str) -> u64 {
    let mut bytes = Vec::with_capacity(pool.len() + backend.len() + 1);
    bytes.extend_from_slice(pool.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(backend.as_bytes());
    xxh3_64_with_seed(&bytes, SEED)
}

/// A cookie value as [`format`] writes it; `None` for anything else (a forged or an old value
/// then simply matches no backend).
pub fn parse(value: &[u8]) -> Option<u64> {
    if value.len() != 16 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// 16 lower-case hex digits.
pub fn format(id: u64) -> String {
    format!("{id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_name_no_address() {
        let id = backend_id("api", "api-1");
        let text = format(id);
        assert_eq!(text.len(), 16);
        assert_eq!(parse(text.as_bytes()), Some(id));
        assert!(!text.contains("api"));
        assert_ne!(id, backend_id("www", "api-1"), "pools are told apart");
        assert_ne!(id, backend_id("api", "api-2"));
        assert_eq!(id, backend_id("api", "api-1"), "stable");
    }

    #[test]
    fn anything_else_names_no_backend() {
        for bad in [
            &b""[..],
            b"xyz",
            b"0123456789abcdeg",
            b"0123456789abcdef0",
            b"+123456789abcdef",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
