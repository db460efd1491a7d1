//! Driving sessions: socket events to the session they belong to, the sessions that yielded or
//! waited for the end of a batch, the timers, and the multiplexed backend connections.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::event::Event;

use super::{Reactor, MUX_ROUNDS};
use crate::session::{Connection, Ctx, Outcome};

impl Reactor {
    /// An event on a session's client socket, or (`backend`) on one of its backend
    /// connections.
    pub(super) fn session_event(
        &mut self,
        slot: usize,
        event: &Event,
        backend: Option<usize>,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        let read_closed = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || read_closed;
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match backend {
            None => session.client_event(readable, writable, read_closed),
            Some(id) => {
                session.backend_event(id, readable, writable, read_closed);
                if session.is_deferred() {
                    return;
                }
                if let Some(id) = session.defer() {
                    self.deferred.push((slot, id));
                    return;
                }
            }
        }
        self.drive(slot, now);
    }

    /// Drives the connections whose backend events waited for the end of the batch.
    pub(super) fn run_deferred(&mut self, now: Instant) {
        let mut deferred = std::mem::take(&mut self.deferred);
        for (slot, id) in deferred.drain(..) {
            match self.sessions.get_mut(slot) {
                Some(session) if session.id() == id => session.undefer(),
                _ => continue,
            }
            self.drive(slot, now);
        }
        self.deferred = deferred;
    }

    pub(super) fn drive(&mut self, slot: usize, now: Instant) {
        self.with_session(slot, now, Connection::drive);
    }

    /// Runs `step` on the session in `slot` with what it may use, then acts on the outcome.
    pub(super) fn with_session(
        &mut self,
        slot: usize,
        now: Instant,
        step: impl FnOnce(&mut Connection, &mut Ctx) -> Outcome,
    ) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        let mut ctx = Ctx {
            now,
            registry: self.poll.registry(),
            backends: &self.backends,
            router: &self.router,
            events: &self.events,
            totals: &self.totals,
            pool: &mut self.pool,
            bufs: &mut self.bufs,
            settings: &self.settings,
            access: &mut self.access,
        };
        let outcome = step(session, &mut ctx);
        self.after(slot, outcome);
    }

    pub(super) fn after(&mut self, slot: usize, outcome: Outcome) {
        match outcome {
            Outcome::Close => {
                if self.sessions.try_remove(slot).is_some() {
                    self.totals
                        .active_connections
                        .fetch_sub(1, Ordering::Relaxed);
                }
                if self.accept_pending() {
                    self.accept(Instant::now());
                }
            }
            Outcome::Yield => {
                if let Some(session) = self.sessions.get(slot) {
                    self.runnable.push_back((slot, session.id()));
                }
                self.arm_timer(slot);
            }
            Outcome::Idle => self.arm_timer(slot),
        }
    }

    /// Queues the session's deadline unless an earlier entry for it is already queued; a later
    /// deadline is found when that entry fires.
    pub(super) fn arm_timer(&mut self, slot: usize) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        let Some(deadline) = session.deadline(&self.settings) else {
            return;
        };
        if session.armed().is_some_and(|armed| armed <= deadline) {
            return;
        }
        session.set_armed(Some(deadline));
        self.timers.push(Reverse((deadline, slot, session.id())));
    }

    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, slot, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(session) = self.sessions.get_mut(slot) else {
                continue;
            };
            if session.id() != id || session.armed() != Some(at) {
                continue;
            }
            session.set_armed(None);
            self.with_session(slot, now, Connection::on_timer);
        }
    }

    /// Drives the multiplexed backend connections with work to do, then the exchanges they
    /// woke, which may give them more; a few rounds, then the rest waits for the next turn.
    pub(super) fn run_muxes(&mut self, now: Instant) {
        for _ in 0..MUX_ROUNDS {
            if !self.pool.has_mux_work() {
                return;
            }
            let mut wakes = std::mem::take(&mut self.wakes);
            self.pool.drive_muxes(now, &mut wakes);
            let mut slots = std::mem::take(&mut self.woken);
            for w in wakes.drain(..) {
                let Some(slot) = self.pool.session_of(w.conn) else {
                    continue;
                };
                if let Some(session) = self.sessions.get_mut(slot) {
                    session.backend_event(w.conn, w.readable, w.writable, false);
                    if !slots.contains(&slot) {
                        slots.push(slot);
                    }
                }
            }
            self.wakes = wakes;
            for &slot in &slots {
                self.drive(slot, now);
            }
            slots.clear();
            self.woken = slots;
        }
    }

    pub(super) fn run_yielded(&mut self, now: Instant) {
        for _ in 0..self.runnable.len() {
            let Some((slot, id)) = self.runnable.pop_front() else {
                break;
            };
            if self.sessions.get(slot).is_some_and(|s| s.id() == id) {
                self.drive(slot, now);
            }
        }
    }

    /// Closes the listeners: new clients go elsewhere (another instance, the kernel's refusal).
    pub(super) fn close_listeners(&mut self) {
        for listener in &mut self.listeners {
            if let Some(mut l) = listener.take() {
                let _ = self.poll.registry().deregister(&mut l.socket);
            }
        }
    }

    /// The reactor returns: connections still open end now (their exchanges logged as cut by
    /// the stop), and the access log's last lines go to the writer.
    pub(super) fn stop(&mut self, now: Instant) {
        // Closing sessions must not accept new ones.
        self.close_listeners();
        let slots: Vec<usize> = self.sessions.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.with_session(slot, now, |c, ctx| {
                c.abort(ctx, "shutdown");
                Outcome::Close
            });
        }
        self.access.finish();
    }
}
