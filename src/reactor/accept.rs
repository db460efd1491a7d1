//! Accepting connections from the plain and the TLS listener, within `max_connections`, and
//! backing off when the process runs out of descriptors or memory.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{debug, error, info, warn};
use mio::Interest;

use super::listener::is_resource_exhaustion;
use super::{Reactor, ACCEPT_BACKOFF};
use crate::session::{Connection, Session};
use crate::token;
use crate::transport::Transport;

impl Reactor {
    pub(super) fn accept_pending(&self) -> bool {
        self.listeners.iter().flatten().any(|l| l.pending)
    }

    pub(super) fn accept(&mut self, now: Instant) {
        self.accept_resume_at = None;
        for side in 0..self.listeners.len() {
            self.accept_from(side, now);
            if self.accept_resume_at.is_some() {
                return;
            }
        }
    }

    fn accept_from(&mut self, side: usize, now: Instant) {
        loop {
            let Some(listener) = &mut self.listeners[side] else {
                return;
            };
            if !listener.pending {
                return;
            }
            // Counted over every reactor: the limit is the balancer's.
            if self.totals.active_connections.load(Ordering::Relaxed) >= self.max_connections as u64
            {
                // The kernel backlog holds the rest until a session ends.
                return;
            }
            let tls = listener.tls;
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    self.accept_recovered(now);
                    self.add_session(stream, peer, tls, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Linux takes the descriptor before it looks at the backlog: an empty one
                    // means a descriptor was there.
                    listener.pending = false;
                    self.accept_recovered(now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if is_resource_exhaustion(&e) {
                        if self.accept_failures == 0 {
                            warn!(
                                "accept failed: {e}; retrying every {ACCEPT_BACKOFF:?} \
                                 (and whenever a connection closes) until it succeeds"
                            );
                            self.accept_failing_since = Some(now);
                        } else {
                            debug!("accept failed again: {e}");
                        }
                        self.accept_failures += 1;
                        self.accept_resume_at = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                    // The connection died in the backlog (ECONNABORTED and the like).
                    debug!("accept failed: {e}");
                }
            }
        }
    }

    fn accept_recovered(&mut self, now: Instant) {
        if self.accept_failures > 0 {
            let since = self.accept_failing_since.take().unwrap_or(now);
            info!(
                "accepting again after {} failed attempts over {:.1} s",
                self.accept_failures,
                now.duration_since(since).as_secs_f64()
            );
            self.accept_failures = 0;
        }
    }

    fn add_session(
        &mut self,
        mut stream: mio::net::TcpStream,
        peer: SocketAddr,
        tls: bool,
        now: Instant,
    ) {
        let _ = stream.set_nodelay(true);
        let entry = self.sessions.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token::client(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot register client {peer}: {e}");
            return;
        }
        let transport = match (tls, &self.tls) {
            (false, _) => Transport::Plain(stream),
            (true, Some(acceptor)) => match acceptor.accept(stream) {
                Ok(t) => Transport::Tls(Box::new(t)),
                Err(e) => {
                    error!("cannot start TLS for client {peer}: {e}");
                    return;
                }
            },
            (true, None) => return,
        };
        self.next_session_id += 1;
        let id = self.next_session_id;
        let session = entry.insert(Connection::H1(Session::new(id, slot, transport, peer, now)));
        if self
            .settings
            .proxy_from
            .iter()
            .any(|net| net.contains(&peer.ip()))
        {
            session.expect_proxy_header();
        }
        self.totals
            .active_connections
            .fetch_add(1, Ordering::Relaxed);
        // The request may be in the socket already; its edge came before registration.
        self.drive(slot, now);
    }
}
