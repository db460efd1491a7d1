//! The pool of backend connections: every one in use or idle, the idle ones per backend for
//! reuse, and their expiry.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use crate::token;
use crate::transport::Transport;

/// Who a backend connection serves now.
enum Lease {
    /// The session in this slot is using it.
    Session(usize),
    /// Parked in the pool since `since`.
    Idle { stream: Transport, since: Instant },
}

struct Conn {
    backend: usize,
    lease: Lease,
}

/// Every backend connection, in use or idle, and the idle ones per backend (most recently used
/// last).
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
}

impl Pool {
    pub fn new(backends: usize, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            conns: Slab::new(),
            idle_by_backend: (0..backends).map(|_| VecDeque::new()).collect(),
            max_idle,
            idle_timeout,
        }
    }

    /// Registers a new connection to `backend` for the session in slot `session`; returns
    /// the connection's id.
    pub fn open(
        &mut self,
        stream: &mut TcpStream,
        backend: usize,
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
    pub fn take(&mut self, backend: usize, session: usize) -> Option<(Transport, usize)> {
        let queue = self.idle_by_backend.get_mut(backend)?;
        while let Some(id) = queue.pop_back() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
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
        let Some(backend) = self.conns.get(id).map(|c| c.backend) else {
            return;
        };
        if self.max_idle == 0 {
            self.conns.remove(id);
            return;
        }
        if self.idle_by_backend.len() <= backend {
            // A backend added at runtime.
            self.idle_by_backend.resize_with(backend + 1, VecDeque::new);
        }
        let queue = &mut self.idle_by_backend[backend];
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
        self.conns.try_remove(id);
    }

    /// The session a connection is leased to; `None` while it is idle (or gone).
    pub fn session_of(&self, id: usize) -> Option<usize> {
        match self.conns.get(id)?.lease {
            Lease::Session(slot) => Some(slot),
            Lease::Idle { .. } => None,
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
        let backend = *backend;
        self.conns.remove(id);
        if let Some(queue) = self.idle_by_backend.get_mut(backend) {
            queue.retain(|&k| k != id);
        }
    }

    /// Closes connections idle for longer than the idle timeout.
    pub fn expire(&mut self, now: Instant) {
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
    pub fn forget(&mut self, backend: usize) {
        if let Some(queue) = self.idle_by_backend.get_mut(backend) {
            for id in queue.drain(..) {
                self.conns.try_remove(id);
            }
        }
    }
}
