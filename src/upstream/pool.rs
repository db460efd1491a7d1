//! The pool of backend connections: every one in use or idle, the idle ones per backend for
//! reuse, and their expiry; and for `protocol = "h2"` pools, each backend's multiplexed
//! connection and the exchanges' streams on it.

use std::collections::VecDeque;
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

/// How many request bytes an exchange may write ahead of its stream's framing.
const STREAM_PIPE_LIMIT: usize = 64 * 1024;

/// Who a backend connection serves now.
enum Lease {
    /// The session in this slot is using it.
    Session(usize),
    /// Parked in the pool since `since`.
    Idle { stream: Transport, since: Instant },
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
/// The per-backend tables are indexed by slot, and a slot may hold a later backend than the one
/// a connection was opened to (removals reach only the first reactor's pool, and a slot is
/// reused once its backend is forgotten): every lookup compares the whole id, and a connection
/// to a slot's earlier backend is closed when found.
///
/// A connection is registered with the poll once, when it is opened, under a token naming its
/// slot here; leasing it to a session or parking it changes only this table. That saves the
/// four `epoll_ctl` calls per request that re-registering on every take and put would cost.
/// Closing its socket removes it from the poll.
pub struct Pool {
    conns: Slab<Conn>,
    idle_by_backend: Vec<VecDeque<usize>>,
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
    pub fn new(backends: usize, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            conns: Slab::new(),
            idle_by_backend: (0..backends).map(|_| VecDeque::new()).collect(),
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
    /// been closed by the backend's own idle timeout) to `session`.
    pub fn take(&mut self, backend: BackendId, session: usize) -> Option<(Transport, usize)> {
        let queue = self.idle_by_backend.get_mut(backend.slot())?;
        while let Some(id) = queue.pop_back() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if !matches!(conn.lease, Lease::Idle { .. }) {
                // A stale entry: the connection went and its id serves another now.
                continue;
            }
            if conn.backend != backend {
                if conn.backend.slot() == backend.slot() {
                    // Opened to the slot's earlier backend, which is gone.
                    self.conns.remove(id);
                }
                continue;
            }
            if let Lease::Idle { stream, .. } =
                std::mem::replace(&mut conn.lease, Lease::Session(session))
            {
                return Some((stream, id));
            }
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
        let slot = conn.backend.slot();
        if self.max_idle == 0 {
            self.conns.remove(id);
            return;
        }
        if self.idle_by_backend.len() <= slot {
            // A backend added at runtime.
            self.idle_by_backend.resize_with(slot + 1, VecDeque::new);
        }
        let queue = &mut self.idle_by_backend[slot];
        while queue.len() >= self.max_idle {
            match queue.pop_front() {
                Some(oldest) => {
                    self.conns.try_remove(oldest);
                }
                None => break,
            }
        }
        if let Some(conn) = self.conns.get_mut(id) {
            conn.lease = Lease::Idle { stream, since: now };
            queue.push_back(id);
        }
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
        if matches!(
            self.conns.get(id),
            Some(Conn {
                lease: Lease::Session(_) | Lease::Idle { .. },
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
            Lease::Idle { .. } | Lease::Mux(_) => None,
        }
    }

    /// An idle connection became readable: the backend closed it or sent bytes nobody asked
    /// for. Either way it is useless.
    pub fn on_idle_event(&mut self, id: usize) {
        let Some(Conn {
            backend,
            lease: Lease::Idle { stream, .. },
        }) = self.conns.get_mut(id)
        else {
            return;
        };
        if stream.idle_input_is_harmless() {
            return;
        }
        let slot = backend.slot();
        self.conns.remove(id);
        if let Some(queue) = self.idle_by_backend.get_mut(slot) {
            queue.retain(|&k| k != id);
        }
    }

    /// Closes connections idle for longer than the idle timeout, and multiplexed ones stuck
    /// connecting.
    pub fn expire(&mut self, now: Instant) {
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
        for queue in &mut self.idle_by_backend {
            while let Some(&oldest) = queue.front() {
                let expired = match self.conns.get(oldest) {
                    Some(Conn {
                        lease: Lease::Idle { since, .. },
                        ..
                    }) => now.duration_since(*since) >= self.idle_timeout,
                    _ => true,
                };
                if !expired {
                    break;
                }
                queue.pop_front();
                if matches!(
                    self.conns.get(oldest),
                    Some(Conn {
                        lease: Lease::Idle { .. },
                        ..
                    })
                ) {
                    self.conns.remove(oldest);
                }
            }
        }
    }

    /// New limits (a reload); idle connections beyond them go at the next put or sweep.
    pub fn configure(&mut self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle = max_idle;
        self.idle_timeout = idle_timeout;
    }

    /// Closes every idle connection to a backend (it was removed).
    pub fn forget(&mut self, backend: BackendId) {
        let conns = &self.conns;
        let is_to = |id: &usize| conns.get(*id).is_some_and(|c| c.backend == backend);
        // Streams under way on its multiplexed connection finish; no new one goes there.
        if let Some(slot) = self.mux_by_backend.get_mut(backend.slot()) {
            if slot.as_ref().is_some_and(is_to) {
                *slot = None;
            }
        }
        let idle_to = |id: &usize| {
            conns
                .get(*id)
                .is_some_and(|c| c.backend == backend && matches!(c.lease, Lease::Idle { .. }))
        };
        if let Some(queue) = self.idle_by_backend.get_mut(backend.slot()) {
            let (gone, kept): (Vec<usize>, Vec<usize>) = queue.drain(..).partition(idle_to);
            queue.extend(kept);
            for id in gone {
                self.conns.try_remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_parked_for_a_slots_earlier_backend_is_not_lent_to_its_successor() {
        let poll = mio::Poll::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let old = BackendId::initial(3);
        let new = old.successor();
        let mut pool = Pool::new(0, 8, Duration::from_secs(60));
        let now = Instant::now();
        let park = |pool: &mut Pool, backend| {
            let mut stream = TcpStream::connect(addr).unwrap();
            let id = pool.open(&mut stream, backend, 0, poll.registry()).unwrap();
            pool.put(id, Transport::Plain(stream), now);
            id
        };
        park(&mut pool, old);
        assert!(pool.take(new, 1).is_none());
        assert!(pool.take(old, 1).is_none(), "closed when found");
        let fresh = park(&mut pool, new);
        assert_eq!(pool.take(new, 1).map(|(_, id)| id), Some(fresh));

        // Forgetting the old backend leaves the new one's connections alone.
        let fresh = park(&mut pool, new);
        pool.forget(old);
        assert_eq!(pool.take(new, 2).map(|(_, id)| id), Some(fresh));
    }
}
