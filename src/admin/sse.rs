//! Server-Sent Events for `GET /api/events`: one hub thread takes events off the reactor's
//! bounded channel, formats each once, and hands it to every listener's own bounded queue.
//!
//! A listener that cannot keep up loses events (counted) instead of slowing anyone: the hub
//! never blocks on a listener, and the reactor never blocks on the hub. Each listener's thread
//! also sends a `stats` event every second and gets the recent health and config events when
//! it connects, so a dashboard opened late still shows the timeline. A graceful stop ends every
//! stream (the client sees its response end) and the hub thread.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::json;

use super::http::CORS;
use super::{state, Admin};
use crate::events::Event;
use crate::threads::Worker;

/// Events a listener may have queued before new ones are dropped for it.
const LISTENER_QUEUE: usize = 1024;
/// Health and config events replayed to a new listener.
const HISTORY: usize = 100;
const STATS_EVERY: Duration = Duration::from_secs(1);

type Frame = Arc<String>;

#[derive(Clone)]
pub struct Hub {
    admin: Arc<Admin>,
    listeners: Arc<Mutex<Vec<Sender<Frame>>>>,
    history: Arc<Mutex<VecDeque<Frame>>>,
    /// Tells the hub thread to stop.
    stop: Sender<()>,
    /// Set (under the listeners' lock) once stopped: no stream starts after that.
    stopped: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data is a list of senders or frames: usable whatever panicked while it was held.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Starts the hub thread, which runs until [`Hub::stop`].
    pub fn start(admin: Arc<Admin>) -> std::io::Result<(Hub, Worker)> {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let hub = Hub {
            admin,
            listeners: Arc::default(),
            history: Arc::default(),
            stop,
            stopped: Arc::default(),
        };
        let pump = hub.clone();
        let events = hub.admin.events.receiver();
        let worker = Worker::spawn("admin-events", move || pump.run(&events, &stopped))?;
        Ok((hub, worker))
    }

    /// Stops the hub thread and ends every stream: each listener's thread finds its queue
    /// closed and returns, which closes its connection.
    pub fn stop(&self) {
        let _ = self.stop.try_send(());
        let mut listeners = lock(&self.listeners);
        self.stopped.store(true, Ordering::SeqCst);
        listeners.clear();
    }

    fn run(&self, events: &Receiver<Event>, stopped: &Receiver<()>) {
        loop {
            let event = crossbeam_channel::select! {
                recv(events) -> event => match event {
                    Ok(event) => event,
                    Err(_) => return,
                },
                recv(stopped) -> _ => return,
            };
            let (frame, keep) = format(&event);
            let frame = Arc::new(frame);
            let mut listeners = lock(&self.listeners);
            if keep {
                let mut history = lock(&self.history);
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(Arc::clone(&frame));
            }
            let mut dropped = 0;
            listeners.retain(|l| match l.try_send(Arc::clone(&frame)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
            if dropped > 0 {
                self.admin.events.count_dropped(dropped);
            }
        }
    }

    /// Streams events to one client until it goes away.
    pub fn serve(&self, mut stream: TcpStream) {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
             {CORS}Connection: keep-alive\r\n\r\nretry: 1000\n\n"
        );
        // Listening starts before the client hears it is connected, so nothing that happens
        // after its request is answered can be missed.
        let (sender, queue) = crossbeam_channel::bounded(LISTENER_QUEUE);
        let backlog: Vec<Frame> = {
            // Taken under the listeners' lock, which the hub holds while it delivers: an event
            // is either in the history copy or queued for this listener, never both or neither.
            let mut listeners = lock(&self.listeners);
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let backlog = lock(&self.history).iter().cloned().collect();
            listeners.push(sender);
            backlog
        };
        self.admin.events.add_listener();
        if stream.write_all(head.as_bytes()).is_ok() {
            let _ = self.stream_to(&mut stream, &queue, backlog);
        }
        self.admin.events.remove_listener();
    }

    fn stream_to(
        &self,
        stream: &mut TcpStream,
        queue: &Receiver<Frame>,
        backlog: Vec<Frame>,
    ) -> std::io::Result<()> {
        for frame in backlog {
            stream.write_all(frame.as_bytes())?;
        }
        let mut next_stats = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_stats {
                let doc = state::document(&self.admin);
                stream.write_all(format!("event: stats\ndata: {doc}\n\n").as_bytes())?;
                next_stats = now + STATS_EVERY;
            }
            match queue.recv_timeout(next_stats.saturating_duration_since(Instant::now())) {
                Ok(frame) => {
                    // Batch what is queued already into one write.
                    let mut batch = String::from(frame.as_str());
                    while let Ok(more) = queue.try_recv() {
                        batch.push_str(&more);
                        if batch.len() > 64 * 1024 {
                            break;
                        }
                    }
                    stream.write_all(batch.as_bytes())?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }
}

/// The SSE frame for an event, and whether new listeners should be shown it again.
fn format(event: &Event) -> (String, bool) {
    match event {
        Event::Request(r) => {
            let data = json!({
                "time_ms": state::epoch_ms(r.time),
                "client": r.client,
                "method": r.method,
                "target": r.target,
                "status": r.status,
                "backend": r.backend,
                "pool": r.pool,
                "route": r.route,
                "duration_ms": (r.duration_ms * 1000.0).round() / 1000.0,
                "protocol": r.protocol,
                "bytes": r.bytes,
                "request_id": r.request_id,
            });
            (format!("event: request\ndata: {data}\n\n"), false)
        }
        Event::Health {
            time,
            backend,
            up,
            reason,
        } => {
            let data = json!({
                "time_ms": state::epoch_ms(*time),
                "backend": backend,
                "state": if *up { "up" } else { "down" },
                "reason": reason,
            });
            (format!("event: health\ndata: {data}\n\n"), true)
        }
        Event::Config {
            time,
            action,
            backend,
        } => {
            let data = json!({
                "time_ms": state::epoch_ms(*time),
                "action": action,
                "backend": backend,
            });
            (format!("event: config\ndata: {data}\n\n"), true)
        }
    }
}
