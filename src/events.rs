//! What the reactor tells the management thread: proxied requests, health flips and
//! configuration changes, over one bounded channel.
//!
//! The reactor never blocks on it: a full channel drops the event and counts the drop. Request
//! events are built only while someone listens (a dashboard is connected), so an unwatched
//! balancer pays one atomic load per request for the feature.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Room for bursts between two wake-ups of the management thread.
pub const EVENT_CAPACITY: usize = 8192;

/// One proxied request, as the dashboard's log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEvent {
    pub time: SystemTime,
    pub client: String,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub backend: Option<String>,
    /// The pool it was routed to, and the `[[route]]` that sent it there (none: the default).
    pub pool: Option<String>,
    pub route: Option<String>,
    pub duration_ms: f64,
    pub bytes: u64,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2` (`-` when refused before it was understood).
    pub protocol: &'static str,
    /// With `request_id = true`: its `X-Request-Id`.
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Request(RequestEvent),
    /// A backend went up or down.
    Health {
        time: SystemTime,
        backend: String,
        up: bool,
        reason: String,
    },
    /// An operator changed something: `action` is drain, enable, add or remove.
    Config {
        time: SystemTime,
        action: &'static str,
        backend: String,
    },
}

/// The channel from the reactor (and the health bookkeeping) to the management thread.
#[derive(Debug)]
pub struct EventBus {
    sender: Sender<Event>,
    receiver: Receiver<Event>,
    /// Connected listeners (SSE clients); request events are skipped while there are none.
    listeners: AtomicUsize,
    dropped: AtomicU64,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus::with_capacity(EVENT_CAPACITY)
    }
}

impl EventBus {
    pub fn with_capacity(capacity: usize) -> EventBus {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        EventBus {
            sender,
            receiver,
            listeners: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether building request events is worth it.
    pub fn wants_requests(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Sends without ever blocking; a full channel loses the event and counts it.
    pub fn publish(&self, event: Event) {
        match self.sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The receiver lives as long as the bus itself: cannot happen.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub fn receiver(&self) -> Receiver<Event> {
        self.receiver.clone()
    }

    pub fn add_listener(&self) {
        self.listeners.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove_listener(&self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }

    /// Events lost to full channels so far (here and in the management thread's fan-out).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_event() -> Event {
        Event::Config {
            time: SystemTime::UNIX_EPOCH,
            action: "drain",
            backend: "b".into(),
        }
    }

    #[test]
    fn a_full_bus_drops_and_counts_instead_of_blocking() {
        let bus = EventBus::with_capacity(2);
        for _ in 0..5 {
            bus.publish(config_event());
        }
        assert_eq!(bus.dropped(), 3);
        assert_eq!(bus.receiver().try_iter().count(), 2);
    }

    #[test]
    fn request_events_are_wanted_only_while_someone_listens() {
        let bus = EventBus::default();
        assert!(!bus.wants_requests());
        bus.add_listener();
        assert!(bus.wants_requests());
        bus.remove_listener();
        assert!(!bus.wants_requests());
    }
}
