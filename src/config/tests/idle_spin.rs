//! `idle_spin`: on by default, zero turns it off, bounded above, named in its errors.

use super::*;

#[test]
fn idle_spin_defaults_to_50us_and_takes_zero_and_microseconds() {
    assert_eq!(parse(ONE_BACKEND).idle_spin, Duration::from_micros(50));
    let cfg = parse(&format!("idle_spin = \"0s\"\n{ONE_BACKEND}"));
    assert_eq!(cfg.idle_spin, Duration::ZERO);
    let cfg = parse(&format!("idle_spin = \"120us\"\n{ONE_BACKEND}"));
    assert_eq!(cfg.idle_spin, Duration::from_micros(120));
    let cfg = parse(&format!("idle_spin = \"10ms\"\n{ONE_BACKEND}"));
    assert_eq!(cfg.idle_spin, Duration::from_millis(10));
}

#[test]
fn bad_idle_spins_name_the_key_and_line() {
    let text = format!("idle_spin = \"11ms\"\n{ONE_BACKEND}");
    assert_err(&text, "idle_spin", 1, "must be at most 10ms");
    let text = format!("idle_spin = \"soon\"\n{ONE_BACKEND}");
    assert_err(&text, "idle_spin", 1, "invalid duration");
    let text = format!("idle_spin = 50\n{ONE_BACKEND}");
    assert_err(&text, "idle_spin", 1, "a duration string");
}
