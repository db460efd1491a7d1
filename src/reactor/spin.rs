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
//! It spins only while the reactor's own work fills at least half of its time, measured over
//! short periods with the spinning counted as idle. The spin then at most doubles the CPU the
//! reactor already uses, and a light load, whose sleeps are long and cheap to wake from, never
//! pays for it. This is what the guest kernel's `haltpoll` governor does for a whole CPU,
//! done by the one thread that knows its events come close together.

use std::time::{Duration, Instant};

/// How long one measure of the reactor's load lasts.
const PERIOD: Duration = Duration::from_millis(20);

/// The reactor spins only when its work took at least this share of the last period, in %.
const BUSY_PERCENT: u128 = 50;

pub(super) struct IdleSpin {
    /// The last period's work share reached `BUSY_PERCENT`.
    busy: bool,
    period_began: Instant,
    /// Time spent inside polls, sleeping or spinning, since `period_began`.
    polling: Duration,
    /// Since when the reactor has found nothing to do, while it spins.
    idle_since: Option<Instant>,
    poll_began: Instant,
}

impl IdleSpin {
    pub(super) fn new(now: Instant) -> IdleSpin {
        IdleSpin {
            busy: false,
            period_began: now,
            polling: Duration::ZERO,
            idle_since: None,
            poll_began: now,
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
        if wanted == Some(Duration::ZERO) {
            self.idle_since = None;
            return wanted;
        }
        if self.busy && !window.is_zero() {
            let since = *self.idle_since.get_or_insert(now);
            if now.saturating_duration_since(since) < window {
                return Some(Duration::ZERO);
            }
        }
        self.idle_since = None;
        wanted
    }

    /// After a poll: whether it brought events.
    pub(super) fn polled(&mut self, events: bool, window: Duration, now: Instant) {
        self.polling += now.saturating_duration_since(self.poll_began);
        if events {
            self.idle_since = None;
        }
        let elapsed = now.saturating_duration_since(self.period_began);
        if elapsed >= PERIOD {
            let work = elapsed.saturating_sub(self.polling);
            self.busy =
                !window.is_zero() && work.as_micros() * 100 >= elapsed.as_micros() * BUSY_PERCENT;
            self.period_began = now;
            self.polling = Duration::ZERO;
        }
    }

    #[cfg(test)]
    fn is_busy(&self) -> bool {
        self.busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(50);
    const SLEEP: Option<Duration> = Some(Duration::from_millis(100));

    /// Runs the reactor's loop on a made-up clock for `periods` load periods: each round works
    /// for `work`, then polls; an event comes `gap` after the reactor runs out of work. Returns
    /// how many polls were allowed to sleep and how many spun.
    fn run(
        spin: &mut IdleSpin,
        start: &mut Instant,
        work: Duration,
        gap: Duration,
        periods: u32,
    ) -> (u32, u32) {
        let end = *start + PERIOD * periods;
        let (mut sleeps, mut spins) = (0, 0);
        let mut now = *start;
        while now < end {
            now += work;
            let idle_from = now;
            loop {
                match spin.timeout(SLEEP, WINDOW, now) {
                    Some(Duration::ZERO) => {
                        spins += 1;
                        // A zero-timeout poll takes a microsecond and finds the event once it is in.
                        now += Duration::from_micros(1);
                        let arrived = now >= idle_from + gap;
                        spin.polled(arrived, WINDOW, now);
                        if arrived {
                            break;
                        }
                    }
                    _ => {
                        sleeps += 1;
                        now = now.max(idle_from + gap);
                        spin.polled(true, WINDOW, now);
                        break;
                    }
                }
            }
        }
        *start = now;
        (sleeps, spins)
    }

    #[test]
    fn a_light_load_always_sleeps() {
        let mut start = Instant::now();
        let mut spin = IdleSpin::new(start);
        // 10 µs of work per 200 µs: 5 % busy.
        let (sleeps, spins) = run(
            &mut spin,
            &mut start,
            Duration::from_micros(10),
            Duration::from_micros(190),
            20,
        );
        assert!(!spin.is_busy());
        assert_eq!(spins, 0);
        assert!(sleeps > 1000, "{sleeps}");
    }

    #[test]
    fn a_busy_reactor_finds_its_next_event_awake() {
        let mut start = Instant::now();
        let mut spin = IdleSpin::new(start);
        // 30 µs of work, then an event 20 µs later: 60 % busy, every gap within the window.
        let (first_sleeps, _) = run(
            &mut spin,
            &mut start,
            Duration::from_micros(30),
            Duration::from_micros(20),
            1,
        );
        assert!(
            first_sleeps > 0,
            "the first period measures before it spins"
        );
        assert!(spin.is_busy());
        let (sleeps, spins) = run(
            &mut spin,
            &mut start,
            Duration::from_micros(30),
            Duration::from_micros(20),
            20,
        );
        assert_eq!(sleeps, 0);
        assert!(spins > 1000, "{spins}");
        assert!(spin.is_busy(), "spinning counts as idle, not as work");
    }

    #[test]
    fn a_spin_ends_after_the_window_and_the_reactor_sleeps() {
        let mut start = Instant::now();
        let mut spin = IdleSpin::new(start);
        run(
            &mut spin,
            &mut start,
            Duration::from_micros(30),
            Duration::from_micros(20),
            2,
        );
        assert!(spin.is_busy());
        let now = start + Duration::from_micros(30);
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
    fn the_load_falling_stops_the_spinning() {
        let mut start = Instant::now();
        let mut spin = IdleSpin::new(start);
        run(
            &mut spin,
            &mut start,
            Duration::from_micros(30),
            Duration::from_micros(20),
            3,
        );
        assert!(spin.is_busy());
        run(
            &mut spin,
            &mut start,
            Duration::from_micros(10),
            Duration::from_micros(500),
            2,
        );
        assert!(!spin.is_busy());
        let (_, spins) = run(
            &mut spin,
            &mut start,
            Duration::from_micros(10),
            Duration::from_micros(500),
            5,
        );
        assert_eq!(spins, 0);
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
        assert!(!spin.is_busy());
    }
}
