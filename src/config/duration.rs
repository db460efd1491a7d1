//! Human-written durations: `"50us"`, `"250ms"`, `"5s"`, `"1m"`, `"1h"`, `"1.5s"`.

use std::time::Duration;

/// Explanation appended to every rejected duration, so the operator sees the
/// accepted grammar right next to the mistake.
pub(super) const EXPECTED_DURATION: &str =
    "expected a number followed by us, ms, s, m or h, like \"250ms\" or \"5s\"";

/// Finer fractions than a nanosecond cannot be represented by `Duration`;
/// rejecting them beats silently rounding.
const MAX_FRACTION_DIGITS: usize = 9;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses an unsigned integer or decimal followed by `us`, `ms`, `s`, `m` or `h`.
///
/// Zero parses fine; whether zero makes sense is up to the key it is used for.
/// The error is the reason only; callers prefix it with the key.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration, {EXPECTED_DURATION}");

    let unit_at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let nanos_per_unit: u128 = match unit {
        "us" => NANOS_PER_SEC / 1_000_000,
        "ms" => NANOS_PER_SEC / 1000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return Err(invalid()),
    };

    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // "1." and ".5" are accepted by float parsers but read like typos.
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(invalid());
    }
    if fraction.len() > MAX_FRACTION_DIGITS {
        return Err(format!(
            "invalid duration, at most {MAX_FRACTION_DIGITS} decimal places are supported"
        ));
    }

    let too_large = || "duration is too large".to_string();
    // Integer arithmetic keeps "0.1s" exactly 100ms, which f64 would not.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction_nanos = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().map_err(|_| invalid())?;
        let scale = 10u128.pow(fraction.len() as u32);
        digits * nanos_per_unit / scale
    };
    let nanos = whole
        .checked_mul(nanos_per_unit)
        .and_then(|n| n.checked_add(fraction_nanos))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    // The remainder of a division by 1e9 always fits in u32.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, subsec))
}

/// Renders a duration in the same notation the file accepts, so a `--check`
/// summary can be pasted back into a config file.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        if secs != 0 && secs.is_multiple_of(3600) {
            format!("{}h", secs / 3600)
        } else if secs != 0 && secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        }
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else if nanos.is_multiple_of(1000) {
        format!("{}us", d.as_micros())
    } else {
        // Not expressible in whole microseconds: fall back to decimal seconds.
        let fraction = format!("{nanos:09}");
        format!("{secs}.{}s", fraction.trim_end_matches('0'))
    }
}
