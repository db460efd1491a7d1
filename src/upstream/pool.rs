//! The pool of backend connections: every one in use or idle, the idle ones per backend for
//! reuse (on shelves the other reactors can take from: `idle`), and their expiry; and for
//! `protocol = "h2"` pools, each backend's multiplexed connection and the exchanges' streams on
//! it.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use super::h2::{Mux, Wake};
use super::BackendId;
use crate::token;
use crate::transport::pipe::SharedPipe;
use crate::transport::Transport;
pub use idle::IdleExchange;
use idle::{Parked, Shelves};

mod idle;

/// How many request bytes an exchange may write ahead of its stream's framing.
const STREAM_PIPE_LIMIT: usize = 64 * 1024;

/// Who a backend connection serves now.
enum Lease {
    /// The session in this slot is using it.
    Session(usize),
    /// Parked on the shelves, which hold its socket (or another reactor took it, and this
    /// slot waits for the sweep). `suspect`: an event came while it was idle.
    Parked { suspect: bool },
    /// A multiplexed HTTP/2 connection, shared by the exchanges whose streams it carries.
    Mux(Box<Mux>),
    /// An exchange's stream on the multiplexed connection in slot `mux`, leased to the session
    /// in slot `session`. It has no socket: events come from the connection.
    Stream { session: usize, mux: usize },
}

struct Conn {
    backend: BackendId,
    lease: Lease,
}

/// Every backend connection, in use or idle, and the idle ones per backend (most recently used
/// last).
///
/// A connection is registered with the poll once, when it is opened (or taken from another
/// reactor), under a token naming its slot here; leasing it to a session or parking it changes
/// only this table. That saves the four `epoll_ctl` calls per request that re-registering on
/// every take and put would cost. Closing its socket removes it from the poll.
pub struct Pool {
    conns: Slab<Conn>,
    shelves: Shelves,
    /// Per backend: no connection on its shelf was parked before this (none, when it was last
    /// seen empty), so a sweep can tell that none has expired without looking.
    parked_since: Vec<Option<Instant>>,
    /// Per backend: an event came for one of its idle connections; the sweep looks at them.
    suspects: Vec<bool>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The multiplexed connection new streams to each backend go on.
    mux_by_backend: Vec<Option<usize>>,
    /// Every multiplexed connection, taking streams or going away.
    muxes: Vec<usize>,
    /// Multiplexed connections with work to do, in the order they got it.
    dirty: Vec<usize>,
}

impl Pool {
    pub fn new(shelves: Shelves, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            conns: Slab::new(),
            shelves,
            parked_since: Vec::new(),
            suspects: Vec::new(),
            max_idle,
            idle_timeout,
            mux_by_backend: Vec::new(),
            muxes: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// Leases a stream on `backend`'s multiplexed connection to `session`, opening the
    /// connection with `connect` (a connect under way) when none takes streams. Returns the
    /// lease's id, the exchange's pipe, and whether the connection was already there.
    pub fn open_stream(
        &mut self,
        backend: BackendId,
        session: usize,
        registry: &Registry,
        now: Instant,
        connect_timeout: Duration,
        connect: impl FnOnce() -> io::Result<Transport>,
    ) -> io::Result<(usize, SharedPipe, bool)> {
        let existing = self
            .mux_by_backend
            .get(backend.slot())
            .copied()
            .flatten()
            .filter(|&id| self.conns.get(id).is_some_and(|c| c.backend == backend))
            .filter(|&id| self.mux(id).is_some_and(|m| m.takes_streams()));
        let (mux_id, reused) = match existing {
            Some(id) => (id, true),
            None => {
                let mut transport = connect()?;
                let entry = self.conns.vacant_entry();
                let id = entry.key();
                registry.register(
                    transport.socket_mut()?,
                    token::backend(id),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                entry.insert(Conn {
                    backend,
                    lease: Lease::Mux(Box::new(Mux::new(backend, transport, now, connect_timeout))),
                });
                let slot = backend.slot();
                if self.mux_by_backend.len() <= slot {
                    self.mux_by_backend.resize(slot + 1, None);
                }
                self.mux_by_backend[slot] = Some(id);
                self.muxes.push(id);
                (id, false)
            }
        };
        let pipe = SharedPipe::new(STREAM_PIPE_LIMIT);
        let id = self.conns.insert(Conn {
            backend,
            lease: Lease::Stream {
                session,
                mux: mux_id,
            },
        });
        if let Some(m) = self.mux_mut(mux_id) {
            m.add_stream(id, pipe.clone());
        }
        self.queue(mux_id);
        Ok((id, pipe, reused))
    }

    fn mux(&self, id: usize) -> Option<&Mux> {
        match &self.conns.get(id)?.lease {
            Lease::Mux(m) => Some(m),
            _ => None,
        }
    }

    fn mux_mut(&mut self, id: usize) -> Option<&mut Mux> {
        match &mut self.conns.get_mut(id)?.lease {
            Lease::Mux(m) => Some(m),
            _ => None,
        }
    }

    /// Queues a multiplexed connection for a drive, once.
    fn queue(&mut self, mux: usize) {
        if let Some(m) = self.mux_mut(mux) {
            if !m.queued {
                m.queued = true;
                self.dirty.push(mux);
            }
        }
    }

    /// The exchange on stream lease `id` wrote to its pipe or read from it.
    pub fn poke(&mut self, id: usize) {
        if let Some(Conn {
            lease: Lease::Stream { mux, .. },
            ..
        }) = self.conns.get(id)
        {
            let mux = *mux;
            self.queue(mux);
        }
    }

    /// An event on a multiplexed connection's socket; false if `id` is not one.
    pub fn mux_event(&mut self, id: usize, readable: bool, writable: bool, closed: bool) -> bool {
        let Some(m) = self.mux_mut(id) else {
            return false;
        };
        m.ready.record(readable, writable, closed);
        self.queue(id);
        true
    }

    /// Whether some multiplexed connection has work to do.
    pub fn has_mux_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Drives the multiplexed connections that have work; the exchanges to wake go to `wakes`.
    pub fn drive_muxes(&mut self, now: Instant, wakes: &mut Vec<Wake>) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(m) = self.mux_mut(id) else {
                continue;
            };
            m.queued = false;
            let again = m.drive(now, wakes);
            if m.is_dead() && m.stream_count() == 0 {
                self.drop_mux(id);
            } else if again {
                self.queue(id);
            }
        }
    }

    fn drop_mux(&mut self, id: usize) {
        let Some(conn) = self.conns.try_remove(id) else {
            return;
        };
        self.muxes.retain(|&m| m != id);
        if let Some(slot) = self.mux_by_backend.get_mut(conn.backend.slot()) {
            if *slot == Some(id) {
                *slot = None;
            }
        }
    }

    /// Registers a new connection to `backend` for the session in slot `session`; returns
    /// the connection's id.
    pub fn open(
        &mut self,
        stream: &mut TcpStream,
        backend: BackendId,
        session: usize,
        registry: &Registry,
    ) -> io::Result<usize> {
        let entry = self.conns.vacant_entry();
        let id = entry.key();
        registry.register(
            stream,
            token::backend(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Conn {
            backend,
            lease: Lease::Session(session),
        });
        Ok(id)
    }

    /// Leases the most recently parked connection to `backend` (the one least likely to have
    /// been closed by the backend's own idle timeout) to `session`; with none here, the oldest
    /// idle one of another reactor, registered with `registry` (the caller's poll).
    pub fn take(
        &mut self,
        backend: BackendId,
        session: usize,
        registry: &Registry,
        now: Instant,
    ) -> Option<(Transport, usize)> {
        let slot = backend.slot();
        while let Some(mut p) = self.shelves.pop(slot) {
            let Some(conn) = self.conns.get_mut(p.slot) else {
                continue;
            };
            let Lease::Parked { suspect } = conn.lease else {
                continue;
            };
            let dead = suspect && !p.stream.idle_input_is_harmless();
            // Opened to the slot's earlier backend, which is gone: closed when found.
            let earlier = p.backend != backend;
            if dead || earlier || now.duration_since(p.since) >= self.idle_timeout {
                self.conns.remove(p.slot);
                continue;
            }
            conn.lease = Lease::Session(session);
            return Some((p.stream, p.slot));
        }
        // Before a new connection, one that another reactor is not using: with N reactors the
        // backend then sees about as many connections as with one.
        while let Some(mut p) = self.shelves.take_from_others(slot) {
            // Its owner's poll would have told it of a close, but not this poll: look.
            if p.backend != backend
                || now.duration_since(p.since) >= self.idle_timeout
                || !p.stream.idle_input_is_harmless()
            {
                continue;
            }
            let entry = self.conns.vacant_entry();
            let id = entry.key();
            let Ok(socket) = p.stream.socket_mut() else {
                continue;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if registry
                .register(socket, token::backend(id), interest)
                .is_err()
            {
                continue;
            }
            entry.insert(Conn {
                backend,
                lease: Lease::Session(session),
            });
            return Some((p.stream, id));
        }
        None
    }

    /// Parks a connection whose last exchange ended cleanly.
    pub fn put(&mut self, id: usize, stream: Transport, now: Instant) {
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        if matches!(conn.lease, Lease::Stream { .. }) {
            // A stream is not kept: the next exchange opens its own on the same connection.
            return self.release(id);
        }
        let backend = conn.backend;
        let slot = backend.slot();
        if !self.make_room(slot) {
            self.conns.remove(id);
            return;
        }
        if let Some(conn) = self.conns.get_mut(id) {
            conn.lease = Lease::Parked { suspect: false };
            if self.parked_since.len() <= slot {
                // A backend added at runtime.
                self.parked_since.resize(slot + 1, None);
            }
            self.parked_since[slot].get_or_insert(now);
            self.shelves.push(
                slot,
                Parked {
                    slot: id,
                    backend,
                    stream,
                    since: now,
                },
            );
        }
    }

    /// Whether one more idle connection to `backend` may be kept, closing this reactor's
    /// oldest ones if that makes room. `max_idle` bounds the whole process: each reactor may
    /// always keep its share of it, and more only while the others leave room.
    fn make_room(&mut self, backend: usize) -> bool {
        if self.max_idle == 0 {
            return false;
        }
        let share = self.shelves.share(self.max_idle);
        let mut local = self.shelves.len(backend);
        if local < share {
            return true;
        }
        // Past its share: a rare case, worth counting every reactor's.
        let mut total = self.shelves.total(backend);
        while total >= self.max_idle && local >= share {
            let Some(oldest) = self.shelves.oldest(backend) else {
                break;
            };
            self.conns.try_remove(oldest.slot);
            local -= 1;
            total -= 1;
        }
        total < self.max_idle || local < share
    }

    /// Forgets a connection its session closes (dropping its socket takes it off the poll).
    pub fn release(&mut self, id: usize) {
        if let Some(Conn {
            lease: Lease::Stream { mux, .. },
            ..
        }) = self.conns.get(id)
        {
            let mux = *mux;
            self.conns.remove(id);
            if let Some(m) = self.mux_mut(mux) {
                m.release_stream(id);
            }
            return self.queue(mux);
        }
        // A parked one's slot goes with its socket, off the shelf: never while it is there.
        if matches!(
            self.conns.get(id),
            Some(Conn {
                lease: Lease::Session(_),
                ..
            })
        ) {
            self.conns.remove(id);
        }
    }

    /// The session a connection is leased to; `None` while it is idle (or gone).
    pub fn session_of(&self, id: usize) -> Option<usize> {
        match self.conns.get(id)?.lease {
            Lease::Session(slot) | Lease::Stream { session: slot, .. } => Some(slot),
            Lease::Parked { .. } | Lease::Mux(_) => None,
        }
    }

    /// An idle connection became readable: the backend closed it, or sent bytes nobody asked
    /// for. Its socket is on the shelf, out of reach here: it is looked at before it is used,
    /// and by the next sweep.
    pub fn on_idle_event(&mut self, id: usize) {
        let Some(Conn {
            backend,
            lease: Lease::Parked { suspect },
        }) = self.conns.get_mut(id)
        else {
            return;
        };
        *suspect = true;
        let slot = backend.slot();
        if self.suspects.len() <= slot {
            self.suspects.resize(slot + 1, false);
        }
        self.suspects[slot] = true;
    }

    /// Frees the slots of connections other reactors took; closes connections idle for longer
    /// than the idle timeout, closed by their backend, or past a lowered `max_idle`, and
    /// multiplexed ones stuck connecting.
    pub fn expire(&mut self, now: Instant) {
        // Every event fetched before those connections left this poll has been handled.
        let taken: Vec<usize> = self.shelves.taken().collect();
        for slot in taken {
            if matches!(
                self.conns.get(slot),
                Some(Conn {
                    lease: Lease::Parked { .. },
                    ..
                })
            ) {
                self.conns.remove(slot);
            }
        }
        for id in self.muxes.clone() {
            let idle = self.idle_timeout;
            let Some(m) = self.mux_mut(id) else {
                continue;
            };
            if m.expire(now, idle) {
                self.drop_mux(id);
            } else if m.is_dead() {
                // Its streams failed: their exchanges must hear of it.
                self.queue(id);
            }
        }
        for backend in 0..self.shelves.backends() {
            self.sweep_shelf(backend, now);
        }
    }

    /// Goes through `backend`'s shelf when something on it may have to go; a shelf is
    /// emptied and refilled in order, so for that moment other reactors find it empty.
    fn sweep_shelf(&mut self, backend: usize, now: Instant) {
        let len = self.shelves.len(backend);
        let since = self.parked_since.get(backend).copied().flatten();
        let suspect = self.suspects.get(backend).copied().unwrap_or(false);
        if let Some(s) = self.suspects.get_mut(backend) {
            *s = false;
        }
        if len == 0 {
            if let Some(s) = self.parked_since.get_mut(backend) {
                *s = None;
            }
            return;
        }
        let stale = since.is_none_or(|t| now.duration_since(t) >= self.idle_timeout);
        let share = self.shelves.share(self.max_idle);
        let others = if len > share {
            self.shelves.total(backend).saturating_sub(len)
        } else {
            0
        };
        let over = len > share && others + len > self.max_idle;
        if !(stale || suspect || over) {
            return;
        }
        let mut kept = Vec::with_capacity(len);
        for mut p in self.shelves.drain(backend) {
            let suspect = matches!(
                self.conns.get(p.slot),
                Some(Conn {
                    lease: Lease::Parked { suspect: true },
                    ..
                })
            );
            if now.duration_since(p.since) >= self.idle_timeout
                || (suspect && !p.stream.idle_input_is_harmless())
            {
                self.conns.try_remove(p.slot);
            } else {
                if let Some(conn) = self.conns.get_mut(p.slot) {
                    conn.lease = Lease::Parked { suspect: false };
                }
                kept.push(p);
            }
        }
        // Oldest first: the excess over the bound goes from the front.
        let excess = if kept.len() > share {
            (others + kept.len())
                .saturating_sub(self.max_idle)
                .min(kept.len() - share)
        } else {
            0
        };
        for p in kept.drain(..excess) {
            self.conns.try_remove(p.slot);
        }
        if let Some(s) = self.parked_since.get_mut(backend) {
            *s = kept.first().map(|p| p.since);
        }
        self.shelves.restore(backend, kept);
    }

    /// New limits (a reload); idle connections beyond them go at the next put or sweep.
    pub fn configure(&mut self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle = max_idle;
        self.idle_timeout = idle_timeout;
    }

    /// Closes every idle connection to a backend (it was removed).
    pub fn forget(&mut self, backend: BackendId) {
        self.forget_in(backend.slot(), |id| id == backend);
    }

    /// Closes the idle connections to every backend that is no longer live: another reactor
    /// removed it, and this one only sees the removal in the shared table.
    pub fn forget_gone(&mut self, is_live: impl Fn(BackendId) -> bool) {
        let slots = self.shelves.backends().max(self.mux_by_backend.len());
        for slot in 0..slots {
            self.forget_in(slot, |id| !is_live(id));
        }
    }

    fn forget_in(&mut self, slot: usize, gone: impl Fn(BackendId) -> bool) {
        let conns = &self.conns;
        // Streams under way on its multiplexed connection finish; no new one goes there.
        if let Some(mux) = self.mux_by_backend.get_mut(slot) {
            if mux.is_some_and(|id| conns.get(id).is_some_and(|c| gone(c.backend))) {
                *mux = None;
            }
        }
        if self.shelves.len(slot) == 0 {
            return;
        }
        // The slot's shelf may hold a later backend's connections too: those stay.
        let (dropped, kept): (Vec<Parked>, Vec<Parked>) = self
            .shelves
            .drain(slot)
            .into_iter()
            .partition(|p| gone(p.backend));
        for p in dropped {
            self.conns.try_remove(p.slot);
        }
        self.shelves.restore(slot, kept);
    }
}

#[cfg(test)]
mod tests;
