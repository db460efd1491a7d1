//! `idle_spin`: a busy reactor polls on for a moment before it sleeps.
//!
//! A reactor asleep in `epoll_wait` has to be woken by whoever makes one of its sockets ready,
//! and that side pays for the wake-up. On a virtual machine without guest halt-polling (this
//! project's test machines boot with `haltpoll.guest_halt_poll_ns=0`) it is an
//! inter-processor interrupt and an exit to the hypervisor: microseconds of the waking CPU's
//! time, the CPU that runs the clients or the backends, and as much latency. Under a heavy load
//! of short exchanges (a new connection per request) the reactor runs out of work and sleeps a
//! few microseconds before its next event, about once per request. Polling on for a short window
//! finds that event awake.
//!
//! It spins only while the last short period (20 ms) showed three things: the reactor's own
//! work filled at least half of its time (the spinning counted as idle); more of its idle
//! moments ended within the window than after it; and there were at least a thousand a second
//! of those. The spin then at most doubles the CPU the reactor already uses, and it mostly ends
//! in an event. A light load, whose sleeps are long and cheap to wake from, never pays for it,
//! nor does a busy keep-alive load, whose rare sleeps are long. The guest kernel's `haltpoll`
//! governor does the same for a whole CPU; here it is done by the one thread that knows its
//! events come close together.

use std::time::{Duration, Instant};

/// How long one measure of the reactor's load lasts.
const PERIOD: Duration = Duration::from_millis(20);

/// The reactor spins only when its work took at least this share of the last period, in %.
const BUSY_PERCENT: u128 = 50;

/// The fewest idle moments within the window, per period, that make spinning worth it: a
/// thousand wake-ups a second. A keep-alive load that keeps a reactor busy has a few hundred.
const MIN_SHORT_PER_PERIOD: u32 = 20;

/// Idle moments shorter than this are left out of the count: a sleep and its wake-up take
/// longer here, so the poll call itself covered them, and they neither cost a wake-up worth
/// saving nor tell whether a spin would end in an event. A busy keep-alive load has tens of
/// thousands of them a second and only hundreds of real sleeps, most longer than the window.
const SLEEP_FLOOR: Duration = Duration::from_micros(10);

pub(super) struct IdleSpin {
    /// Whether the last period showed a load worth spinning for (see the module's doc).
    spin: bool,
    period_began: Instant,
    /// Time spent inside polls, sleeping or spinning, since `period_began`.
    polling: Duration,
    /// Idle moments of this period that ended within the window (at least `SLEEP_FLOOR` long),
    /// and those that did not.
    short: u32,
    long: u32,
    /// Since when the reactor has found nothing to do.
    idle_since: Option<Instant>,
    poll_began: Instant,
    /// The poll under way is one the spin made instead of a sleep.
    spinning: bool,
    /// Time spent in such polls since `period_began`.
    spun: Duration,
}

impl IdleSpin {
    pub(super) fn new(now: Instant) -> IdleSpin {
        IdleSpin {
            spin: false,
            period_began: now,
            polling: Duration::ZERO,
            short: 0,
            long: 0,
            idle_since: None,
            poll_began: now,
            spinning: false,
            spun: Duration::ZERO,
        }
    }

    /// The timeout for the next poll: `wanted`, the one the reactor's own work asks for, or
    /// zero while a busy reactor's spin lasts.
    pub(super) fn timeout(
        &mut self,
        wanted: Option<Duration>,
        window: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.poll_began = now;
        self.spinning = false;
        if wanted == Some(Duration::ZERO) {
            return wanted;
        }
        let since = *self.idle_since.get_or_insert(now);
        if self.spin && now.saturating_duration_since(since) < window {
            self.spinning = true;
            return Some(Duration::ZERO);
        }
        wanted
    }

    /// After a poll: whether it brought events. At the end of a period in which the reactor
    /// spun, returns for how long (for `lb_reactor_spin_seconds_total`).
    pub(super) fn polled(
        &mut self,
        events: bool,
        window: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let polled = now.saturating_duration_since(self.poll_began);
        self.polling += polled;
        if self.spinning {
            self.spun += polled;
        }
        if events {
            if let Some(since) = self.idle_since.take() {
                let idle = now.saturating_duration_since(since);
                if idle >= window {
                    self.long += 1;
                } else if idle >= (window / 5).min(SLEEP_FLOOR) {
                    self.short += 1;
                }
            }
        }
        let elapsed = now.saturating_duration_since(self.period_began);
        if elapsed >= PERIOD {
            let work = elapsed.saturating_sub(self.polling);
            let busy = work.as_micros() * 100 >= elapsed.as_micros() * BUSY_PERCENT;
            // A spin that mostly runs out would cost more CPU than the wake-ups it saves, and a
            // few saved wake-ups are not worth a spin's share of the periods in between.
            self.spin = !window.is_zero()
                && busy
                && self.short > self.long
                && self.short >= MIN_SHORT_PER_PERIOD;
            self.period_began = now;
            self.polling = Duration::ZERO;
            self.short = 0;
            self.long = 0;
            let spun = std::mem::take(&mut self.spun);
            return (!spun.is_zero()).then_some(spun);
        }
        None
    }

    #[cfg(test)]
    fn spins(&self) -> bool {
        self.spin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(50);
    const SLEEP: Option<Duration> = Some(Duration::from_millis(100));

    /// The reactor's loop on a made-up clock.
    struct Sim {
        spin: IdleSpin,
        now: Instant,
    }

    #[derive(Default)]
    struct Tally {
        sleeps: u32,
        spins: u32,
        spun: Duration,
    }

    impl Sim {
        fn new() -> Sim {
            let now = Instant::now();
            Sim {
                spin: IdleSpin::new(now),
                now,
            }
        }

        /// `periods` load periods in which each round works for `work_us` µs, then polls; an
        /// event comes `gap_us` µs after the reactor runs out of work. Returns how many polls
        /// were allowed to sleep, how many spun, and the spinning time reported.
        fn run(&mut self, work_us: u64, gap_us: u64, periods: u32) -> Tally {
            self.run_pattern(&[(work_us, gap_us)], periods)
        }

        /// The same with rounds of (work, gap) taken from `pattern` in turn.
        fn run_pattern(&mut self, pattern: &[(u64, u64)], periods: u32) -> Tally {
            let end = self.now + PERIOD * periods;
            let mut tally = Tally::default();
            for &(work_us, gap_us) in pattern.iter().cycle() {
                if self.now >= end {
                    break;
                }
                self.now += Duration::from_micros(work_us);
                let event_at = self.now + Duration::from_micros(gap_us);
                loop {
                    if self.spin.timeout(SLEEP, WINDOW, self.now) == Some(Duration::ZERO) {
                        tally.spins += 1;
                        // A zero-timeout poll takes a microsecond and finds the event once in.
                        self.now += Duration::from_micros(1);
                        let arrived = self.now >= event_at;
                        tally.spun += self.polled(arrived);
                        if arrived {
                            break;
                        }
                    } else {
                        tally.sleeps += 1;
                        self.now = self.now.max(event_at);
                        tally.spun += self.polled(true);
                        break;
                    }
                }
            }
            tally
        }

        fn polled(&mut self, events: bool) -> Duration {
            self.spin
                .polled(events, WINDOW, self.now)
                .unwrap_or_default()
        }
    }

    #[test]
    fn a_light_load_always_sleeps() {
        let mut sim = Sim::new();
        // 10 µs of work per 200 µs: 5 % busy.
        let tally = sim.run(10, 190, 20);
        assert!(!sim.spin.spins());
        assert_eq!(tally.spins, 0);
        assert_eq!(tally.spun, Duration::ZERO);
        assert!(tally.sleeps > 1000, "{}", tally.sleeps);
    }

    #[test]
    fn a_busy_reactor_finds_its_next_event_awake() {
        let mut sim = Sim::new();
        // 30 µs of work, then an event 20 µs later: 60 % busy, every gap within the window.
        let first = sim.run(30, 20, 1);
        assert!(
            first.sleeps > 0,
            "the first period measures before it spins"
        );
        assert!(sim.spin.spins());
        let tally = sim.run(30, 20, 20);
        assert_eq!(tally.sleeps, 0);
        assert!(tally.spins > 1000, "{}", tally.spins);
        assert!(sim.spin.spins(), "spinning counts as idle, not as work");
        // The reactor spins 20 µs of every 50: 2/5 of the periods reported (all but the last).
        let (run_time, spun) = (PERIOD * 20, tally.spun);
        assert!(
            spun >= run_time * 7 / 20 && spun <= run_time * 2 / 5,
            "{spun:?} spun in {run_time:?}"
        );
    }

    #[test]
    fn a_spin_ends_after_the_window_and_the_reactor_sleeps() {
        let mut sim = Sim::new();
        sim.run(30, 20, 2);
        let spin = &mut sim.spin;
        assert!(spin.spins());
        let now = sim.now + Duration::from_micros(30);
        assert_eq!(spin.timeout(SLEEP, WINDOW, now), Some(Duration::ZERO));
        spin.polled(false, WINDOW, now + Duration::from_micros(1));
        assert_eq!(spin.timeout(SLEEP, WINDOW, now + WINDOW), SLEEP);
        // Work the reactor already has is not delayed either way.
        assert_eq!(
            spin.timeout(Some(Duration::ZERO), WINDOW, now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_busy_reactor_whose_idle_moments_outlast_the_window_sleeps() {
        let mut sim = Sim::new();
        // 150 µs of work, then an event 100 µs later: 60 % busy, as a keep-alive load can be,
        // but a spin would run out every time.
        let tally = sim.run(150, 100, 20);
        assert!(!sim.spin.spins());
        assert_eq!(tally.spins, 0);
        assert_eq!(tally.spun, Duration::ZERO);
    }

    #[test]
    fn idle_moments_too_short_to_sleep_in_do_not_count() {
        let mut sim = Sim::new();
        // A keep-alive load's pattern: thirty 1 µs gaps between batches of work, then a gap
        // longer than the window; 61 % busy. Counted, the short gaps would outvote the long
        // one, and each long one would cost a whole window of spinning.
        let mut pattern = vec![(8, 1); 30];
        pattern.push((0, 120));
        let tally = sim.run_pattern(&pattern, 20);
        assert!(!sim.spin.spins());
        assert_eq!(tally.spins, 0);
    }

    #[test]
    fn the_load_falling_stops_the_spinning() {
        let mut sim = Sim::new();
        sim.run(30, 20, 3);
        assert!(sim.spin.spins());
        sim.run(10, 500, 2);
        assert!(!sim.spin.spins());
        assert_eq!(sim.run(10, 500, 5).spins, 0);
    }

    #[test]
    fn a_zero_window_never_spins() {
        let mut now = Instant::now();
        let mut spin = IdleSpin::new(now);
        for _ in 0..5000 {
            now += Duration::from_micros(30);
            assert_eq!(spin.timeout(SLEEP, Duration::ZERO, now), SLEEP);
            now += Duration::from_micros(5);
            spin.polled(true, Duration::ZERO, now);
        }
        assert!(!spin.spins());
    }
}
