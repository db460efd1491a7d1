//! The access log's clock: the wall time of the reactor's current turn, formatted as
//! RFC 3339 with microseconds (`2026-12-07T12:00:00.123456Z`) once per turn, not once per line.

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
pub const STAMP_LEN: usize = 27;

pub struct Clock {
    stamp: [u8; STAMP_LEN],
    /// The second the date and time part was formatted for.
    second: u64,
    /// The stamp is the current turn's.
    fresh: bool,
}

impl Default for Clock {
    fn default() -> Clock {
        let mut clock = Clock {
            stamp: *b"1970-01-01T00:00:00.000000Z",
            second: u64::MAX,
            fresh: false,
        };
        clock.set(SystemTime::now());
        clock
    }
}

impl Clock {
    /// A new turn of the reactor: the next stamp asked for reads the time again.
    pub fn tick(&mut self) {
        self.fresh = false;
    }

    /// The current turn's stamp (ASCII).
    pub fn stamp(&mut self) -> &[u8; STAMP_LEN] {
        if !self.fresh {
            self.set(SystemTime::now());
        }
        &self.stamp
    }

    fn set(&mut self, now: SystemTime) {
        self.fresh = true;
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if second != self.second {
            self.second = second;
            write_date_time(&mut self.stamp, second);
        }
        write_digits(&mut self.stamp[20..26], u64::from(since.subsec_micros()));
    }
}

/// Writes `YYYY-MM-DDTHH:MM:SS` for `unix` seconds (UTC) into the front of `out`.
fn write_date_time(out: &mut [u8; STAMP_LEN], unix: u64) {
    let days = unix / 86_400;
    let rest = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    write_digits(&mut out[0..4], year);
    write_digits(&mut out[5..7], month);
    write_digits(&mut out[8..10], day);
    write_digits(&mut out[11..13], rest / 3600);
    write_digits(&mut out[14..16], rest % 3600 / 60);
    write_digits(&mut out[17..19], rest % 60);
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `n` as zero-padded decimal filling `out` exactly.
fn write_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp_at(unix: u64, micros: u32) -> String {
        let mut clock = Clock::default();
        clock.set(UNIX_EPOCH + Duration::new(unix, micros * 1000));
        String::from_utf8_lossy(clock.stamp()).into_owned()
    }

    #[test]
    fn formats_rfc3339_with_microseconds() {
        assert_eq!(stamp_at(0, 0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-07T12:05:19Z
        assert_eq!(
            stamp_at(1_796_645_119, 441_258),
            "2026-12-07T12:05:19.441258Z"
        );
        // A leap day, and the last second of a century leap year.
        assert_eq!(stamp_at(1_709_208_000, 7), "2024-02-29T12:00:00.000007Z");
        assert_eq!(
            stamp_at(978_307_199, 999_999),
            "2000-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn a_turn_keeps_its_stamp_and_the_next_one_reads_the_time() {
        let mut clock = Clock::default();
        clock.set(UNIX_EPOCH + Duration::from_secs(5));
        let first = *clock.stamp();
        assert_eq!(*clock.stamp(), first, "same turn, same stamp");
        clock.tick();
        assert_ne!(*clock.stamp(), first, "a new turn reads the clock");
    }
}
