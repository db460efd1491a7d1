//! The event loop: one mio `Poll`, the client listener, the sessions in a slab, the backend
//! pool, and the timers. It only dispatches; what a connection does lives in [`crate::session`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{info, warn};
use mio::event::Event;
use mio::{Events, Poll, Waker};
use slab::Slab;

mod accept;
mod commands;
mod listener;

use commands::{redirect_port, routing_table, tls_handshake_timeout};

pub use listener::bind_listener;
use listener::Listener;

use crate::buffer::BufPool;
use crate::config::{BackendConfig, Config};
use crate::events::EventBus;
use crate::health::{self, HealthHandle, ProbeResult};
use crate::http::HeadLimits;
use crate::route::{Published, Table};
use crate::session::{Connection, Ctx, Outcome, Settings};
use crate::stats::Totals;
use crate::token::{self, Target};
use crate::transport::tls::TlsAcceptor;
use crate::upstream::h2::Wake;
use crate::upstream::{Backends, ChangeError, IdleExchange, Pool};

/// How often idle pooled connections are checked against their timeout.
const POOL_SWEEP: Duration = Duration::from_secs(1);
/// How long accepting pauses after the process ran out of descriptors or memory, so that a
/// full table does not turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Free buffers kept for reuse; past this, freed buffers go back to the allocator.
const MAX_FREE_BUFFERS: usize = 1024;
/// Smallest per-direction buffer: below this, streaming costs too many system calls.
const MIN_BUFFER: usize = 16 * 1024;
/// Rounds of multiplexed backend connections and the exchanges they wake per turn.
const MUX_ROUNDS: usize = 4;

/// Messages other threads send to the reactor.
#[derive(Debug)]
pub enum Command {
    /// Return from [`Reactor::run`] now, dropping every connection.
    Shutdown,
    /// Stop gracefully: stop accepting, close idle connections, let requests in flight finish
    /// (within `timeouts.drain`), then return from [`Reactor::run`].
    Drain,
    /// Apply a new configuration (SIGHUP): backends, weights, health checks, timeouts, limits.
    Reload(Box<Config>),
    /// An active health check finished.
    Probe(ProbeResult),
    /// An operator's change to the backends; the answer goes back on the channel (the index
    /// of the backend concerned).
    Change(Change, Sender<Result<usize, ChangeError>>),
}

/// A change to the set of backends at runtime.
#[derive(Debug)]
pub enum Change {
    /// A backend for the pool named first.
    Add(String, BackendConfig),
    /// A backend found in DNS for the pool named first: it takes traffic once its health
    /// checks pass.
    Discovered(String, BackendConfig),
    Remove(String),
    Drain(String),
    Enable(String),
}

/// A way for other threads to reach a running reactor.
#[derive(Clone)]
pub struct Handle {
    sender: Sender<Command>,
    waker: Arc<Waker>,
}

impl Handle {
    pub fn send(&self, command: Command) {
        if self.sender.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }
}

pub struct Reactor {
    poll: Poll,
    /// The plain listener, then the TLS one if configured; `None` once draining: closing them
    /// makes new clients go elsewhere at once.
    listeners: [Option<Listener>; 2],
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    /// The HTTPS side, shared by every reactor.
    tls: Option<Arc<TlsAcceptor>>,
    /// When a graceful stop must end, if one is under way.
    drain_deadline: Option<Instant>,
    /// Which pool each request goes to; rebuilt on reload.
    router: Table,
    /// The routes as the admin API shows them, replaced on reload.
    routes: Arc<Published>,
    max_header_bytes: usize,
    sessions: Slab<Connection>,
    backends: Arc<Backends>,
    events: Arc<EventBus>,
    totals: Arc<Totals>,
    pool: Pool,
    bufs: BufPool,
    settings: Settings,
    max_connections: usize,
    /// (deadline, slot, session id), earliest first. Entries go stale when a session moves its
    /// deadline or ends; `Session::armed` tells which entry is live.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Sessions that yielded with work left.
    runnable: VecDeque<(usize, u64)>,
    /// HTTP/2 connections to drive once the batch of events is in (see `Connection::defer`).
    deferred: Vec<(usize, u64)>,
    /// Scratch for [`Reactor::run_muxes`]: the exchanges to wake, and their sessions.
    wakes: Vec<Wake>,
    woken: Vec<usize>,
    next_session_id: u64,
    accept_resume_at: Option<Instant>,
    /// Accepts failed in a row for lack of descriptors or memory, since when: the first is
    /// logged as a warning, the rest only counted, so a full table does not flood the log.
    accept_failures: u64,
    accept_failing_since: Option<Instant>,
    next_pool_sweep: Instant,
    commands: Receiver<Command>,
    handle: Handle,
}

/// What the reactors of one balancer share: the backends (health, counters, the round-robin
/// cursor), the event bus to the management thread, the totals, and the health checks' config.
#[derive(Clone)]
pub struct Shared {
    pub backends: Arc<Backends>,
    pub events: Arc<EventBus>,
    pub totals: Arc<Totals>,
    /// The HTTPS listener's TLS side (certificates, session cache, ticket keys, counters).
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The routes in effect, for the admin API.
    pub routes: Arc<Published>,
    /// Every reactor's idle backend connections, so that one takes another's before opening.
    pub idle: Arc<IdleExchange>,
}

impl Shared {
    /// Fails when `[tls]` certificates do not load (they were checked with the config, but the
    /// files may have changed since).
    pub fn new(config: &Config) -> io::Result<Shared> {
        let events = Arc::new(EventBus::default());
        let tls = match &config.tls {
            Some(t) => Some(TlsAcceptor::new(t).map_err(io::Error::other)?),
            None => None,
        };
        Ok(Shared {
            tls,
            backends: Arc::new(Backends::from_pools(
                &config.pools_in_effect(),
                Arc::clone(&events),
            )),
            events,
            totals: Arc::new(Totals::default()),
            routes: Arc::new(Published::new(&config.routes)),
            idle: Arc::default(),
        })
    }
}

impl Reactor {
    /// Binds the configured listen address.
    pub fn bind(config: &Config) -> io::Result<Reactor> {
        let listener = bind_listener(config.listen, false)?;
        Reactor::with_listener(listener, config)
    }

    /// Runs on an already bound listener, so tests can bind port 0; the TLS listener, if
    /// configured, is bound here (port 0 too, if so configured).
    pub fn with_listener(listener: std::net::TcpListener, config: &Config) -> io::Result<Reactor> {
        let tls_listener = match &config.tls {
            Some(t) => Some(bind_listener(t.listen, false)?),
            None => None,
        };
        Reactor::with_shared(listener, tls_listener, config, Shared::new(config)?)
    }

    /// One of several reactors (`workers`), each on its own listeners, sharing `shared`.
    pub fn with_shared(
        listener: std::net::TcpListener,
        tls_listener: Option<std::net::TcpListener>,
        config: &Config,
        shared: Shared,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let plain = Listener::register(listener, &poll, token::LISTENER, false)?;
        let local_addr = plain.addr;
        let tls_side = match (tls_listener, &shared.tls) {
            (Some(l), Some(_)) => Some(Listener::register(l, &poll, token::TLS_LISTENER, true)?),
            _ => None,
        };
        let tls_addr = tls_side.as_ref().map(|l| l.addr);
        if let (Some(acceptor), Some(addr)) = (&shared.tls, tls_addr) {
            acceptor.set_bound(addr);
        }
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let (sender, commands) = crossbeam_channel::unbounded();
        let Shared {
            backends,
            events,
            totals,
            tls,
            routes,
            idle,
        } = shared;
        let shelves = idle.join(poll.registry().try_clone()?);
        let limits = &config.limits;
        Ok(Reactor {
            poll,
            listeners: [Some(plain), tls_side],
            local_addr,
            tls_addr,
            tls,
            drain_deadline: None,
            router: routing_table(config, &backends),
            routes,
            max_header_bytes: limits.max_header_bytes,
            sessions: Slab::new(),
            pool: Pool::new(shelves, limits.pool_max_idle, config.timeouts.backend_idle),
            backends,
            events,
            totals,
            bufs: BufPool::new(limits.max_header_bytes.max(MIN_BUFFER), MAX_FREE_BUFFERS),
            settings: Settings {
                timeouts: config.timeouts.clone(),
                head_limits: HeadLimits {
                    max_header_bytes: limits.max_header_bytes,
                    max_headers: limits.max_headers,
                    max_target_bytes: limits.max_target_bytes,
                },
                access_log: config.access_log,
                busy_poll: config.busy_poll,
                retries: config.retries,
                proxy_from: config.proxy_protocol_from.clone(),
                handshake_timeout: tls_handshake_timeout(config),
                redirect_https: redirect_port(config, tls_addr),
                http2: config.http2.clone(),
            },
            max_connections: limits.max_connections,
            timers: BinaryHeap::new(),
            runnable: VecDeque::new(),
            wakes: Vec::new(),
            woken: Vec::new(),
            deferred: Vec::new(),
            next_session_id: 0,
            accept_resume_at: None,
            accept_failures: 0,
            accept_failing_since: None,
            next_pool_sweep: Instant::now() + POOL_SWEEP,
            commands,
            handle: Handle { sender, waker },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTPS listener's address, when `[tls]` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The TLS side shared by the reactors (for the admin API).
    pub fn tls(&self) -> Option<Arc<TlsAcceptor>> {
        self.tls.clone()
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub fn backends(&self) -> Arc<Backends> {
        Arc::clone(&self.backends)
    }

    pub fn events(&self) -> Arc<EventBus> {
        Arc::clone(&self.events)
    }

    pub fn totals(&self) -> Arc<Totals> {
        Arc::clone(&self.totals)
    }

    /// The routes in effect as the admin API shows them.
    pub fn routes(&self) -> Arc<Published> {
        Arc::clone(&self.routes)
    }

    /// Starts the health thread for this reactor's backends; it stops when the handle drops.
    pub fn start_health_checks(&self) -> io::Result<HealthHandle> {
        let backends = Arc::clone(&self.backends);
        let handle = self.handle();
        health::spawn(
            move || backends.probe_targets(),
            move |result| handle.send(Command::Probe(result)),
        )
    }

    /// Serves until told to shut down.
    pub fn run(&mut self) -> io::Result<()> {
        info!("listening on {}", self.local_addr);
        if let Some(addr) = self.tls_addr {
            info!("tls listener on {addr}");
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match token::target(event.token()) {
                    Target::Listener | Target::TlsListener => {
                        let side = usize::from(token::target(event.token()) == Target::TlsListener);
                        if let Some(l) = &mut self.listeners[side] {
                            l.pending = true;
                        }
                        // While accepting is paused (out of descriptors or memory), a new
                        // connection waits in the backlog with the others: retrying for each
                        // one would fail and log once per connection. The pause ends on its
                        // timer, or when a closing session frees a descriptor.
                        if self.accept_resume_at.is_none_or(|at| now >= at) {
                            self.accept(now);
                        }
                    }
                    Target::Waker => {
                        if self.drain_commands(now) {
                            info!("shutting down");
                            return Ok(());
                        }
                    }
                    Target::Client(slot) => self.session_event(slot, event, None, now),
                    Target::Backend(id) => match self.pool.session_of(id) {
                        Some(slot) => self.session_event(slot, event, Some(id), now),
                        None => {
                            let read_closed = event.is_read_closed() || event.is_error();
                            let readable = event.is_readable() || read_closed;
                            let writable =
                                event.is_writable() || event.is_write_closed() || event.is_error();
                            if !self.pool.mux_event(id, readable, writable, read_closed) {
                                self.pool.on_idle_event(id);
                            }
                        }
                    },
                }
            }
            self.run_deferred(now);
            self.run_muxes(now);
            self.run_yielded(now);
            self.fire_timers(now);
            if now >= self.next_pool_sweep {
                self.pool.expire(now);
                self.next_pool_sweep = now + POOL_SWEEP;
            }
            self.run_muxes(now);
            if self.accept_pending() && self.accept_resume_at.is_none_or(|at| now >= at) {
                self.accept(now);
            }
            if let Some(deadline) = self.drain_deadline {
                if self.sessions.is_empty() {
                    info!("drained: every connection finished");
                    return Ok(());
                }
                if now >= deadline {
                    warn!(
                        "drain timeout: closing {} connections still open",
                        self.sessions.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.runnable.is_empty() || self.pool.has_mux_work() || self.settings.busy_poll {
            return Some(Duration::ZERO);
        }
        let mut next = self.next_pool_sweep;
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            next = next.min(*at);
        }
        if let (true, Some(at)) = (self.accept_pending(), self.accept_resume_at) {
            next = next.min(at);
        }
        if let Some(at) = self.drain_deadline {
            next = next.min(at);
        }
        // Round up: waking a little early would only find nothing due and poll again.
        Some(next.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// An event on a session's client socket, or (`backend`) on one of its backend
    /// connections.
    fn session_event(&mut self, slot: usize, event: &Event, backend: Option<usize>, now: Instant) {
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
    fn run_deferred(&mut self, now: Instant) {
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

    fn drive(&mut self, slot: usize, now: Instant) {
        self.with_session(slot, now, Connection::drive);
    }

    /// Runs `step` on the session in `slot` with what it may use, then acts on the outcome.
    fn with_session(
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
        };
        let outcome = step(session, &mut ctx);
        self.after(slot, outcome);
    }

    fn after(&mut self, slot: usize, outcome: Outcome) {
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
    fn arm_timer(&mut self, slot: usize) {
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

    fn fire_timers(&mut self, now: Instant) {
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
    fn run_muxes(&mut self, now: Instant) {
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

    fn run_yielded(&mut self, now: Instant) {
        for _ in 0..self.runnable.len() {
            let Some((slot, id)) = self.runnable.pop_front() else {
                break;
            };
            if self.sessions.get(slot).is_some_and(|s| s.id() == id) {
                self.drive(slot, now);
            }
        }
    }
}
