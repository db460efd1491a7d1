//! A client connection as the reactor keeps it: HTTP/1 until the client shows it speaks
//! HTTP/2 (ALPN `h2`, or the h2c preface), then an HTTP/2 connection over the same transport.

use std::time::Instant;

use super::h2::H2Session;
use super::{Ctx, Outcome, Session, Settings};

// Inline: most connections stay HTTP/1, and the slab then holds them without a box each.
#[allow(clippy::large_enum_variant)]
pub enum Connection {
    H1(Session),
    H2(Box<H2Session>),
    /// Only while one becomes the other.
    Switching,
}

impl Connection {
    pub fn id(&self) -> u64 {
        match self {
            Connection::H1(s) => s.id,
            Connection::H2(s) => s.id,
            Connection::Switching => 0,
        }
    }

    pub fn armed(&self) -> Option<Instant> {
        match self {
            Connection::H1(s) => s.armed,
            Connection::H2(s) => s.armed,
            Connection::Switching => None,
        }
    }

    pub fn set_armed(&mut self, at: Option<Instant>) {
        match self {
            Connection::H1(s) => s.armed = at,
            Connection::H2(s) => s.armed = at,
            Connection::Switching => {}
        }
    }

    pub fn expect_proxy_header(&mut self) {
        if let Connection::H1(s) = self {
            s.expect_proxy_header();
        }
    }

    pub fn client_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        match self {
            Connection::H1(s) => s.client_event(readable, writable, read_closed),
            Connection::H2(s) => s.client_event(readable, writable, read_closed),
            Connection::Switching => {}
        }
    }

    /// After a backend event: whether driving the connection can wait until the reactor has
    /// taken in the whole batch of events, and it was not waiting yet. An HTTP/2 connection
    /// then frames every stream's answer that came in the batch and writes them to the client
    /// together (one TLS record and one system call instead of one per stream).
    pub fn defer(&mut self) -> Option<u64> {
        match self {
            Connection::H2(s) if !s.deferred => {
                s.deferred = true;
                Some(s.id)
            }
            _ => None,
        }
    }

    /// Whether the connection waits to be driven after the batch (see [`Connection::defer`]).
    pub fn is_deferred(&self) -> bool {
        matches!(self, Connection::H2(s) if s.deferred)
    }

    /// Ends the wait, before the drive.
    pub fn undefer(&mut self) {
        if let Connection::H2(s) = self {
            s.deferred = false;
        }
    }

    /// An event on the backend connection `id` of the pool's table.
    pub fn backend_event(&mut self, id: usize, readable: bool, writable: bool, closed: bool) {
        match self {
            Connection::H1(s) => s.backend_event(readable, writable, closed),
            Connection::H2(s) => s.backend_event(id, readable, writable, closed),
            Connection::Switching => {}
        }
    }

    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        match self {
            Connection::H1(s) => s.deadline(settings),
            Connection::H2(s) => s.deadline(settings),
            Connection::Switching => None,
        }
    }

    pub fn drive(&mut self, ctx: &mut Ctx) -> Outcome {
        self.step(ctx, Session::drive, H2Session::drive)
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx) -> Outcome {
        self.step(ctx, Session::on_timer, H2Session::on_timer)
    }

    /// Ends the connection at once; an exchange under way is accounted as cut by `why`.
    pub fn abort(&mut self, ctx: &mut Ctx, why: &'static str) {
        match self {
            Connection::H1(s) => s.abort(ctx, why),
            Connection::H2(s) => s.abort(ctx, why),
            Connection::Switching => {}
        }
    }

    pub fn begin_drain(&mut self, ctx: &mut Ctx) -> Outcome {
        self.step(ctx, Session::begin_drain, H2Session::begin_drain)
    }

    fn step(
        &mut self,
        ctx: &mut Ctx,
        h1: impl FnOnce(&mut Session, &mut Ctx) -> Outcome,
        h2: impl FnOnce(&mut H2Session, &mut Ctx) -> Outcome,
    ) -> Outcome {
        let outcome = match self {
            Connection::H1(s) => h1(s, ctx),
            Connection::H2(s) => return h2(s, ctx),
            Connection::Switching => return Outcome::Close,
        };
        match self {
            Connection::H1(s) if s.wants_h2() && outcome != Outcome::Close => {}
            _ => return outcome,
        }
        let Connection::H1(s) = std::mem::replace(self, Connection::Switching) else {
            return Outcome::Close;
        };
        let armed = s.armed;
        let mut h2 = Box::new(H2Session::from_handover(s.hand_over(ctx), ctx));
        h2.armed = armed;
        let outcome = h2.drive(ctx);
        *self = Connection::H2(h2);
        outcome
    }
}
