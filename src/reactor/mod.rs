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
use mio::{Events, Poll, Waker};
use slab::Slab;

mod accept;
mod commands;
mod drive;
mod listener;
mod spin;

use commands::{redirect_port, routing_table, tls_handshake_timeout};

pub use listener::bind_listener;
use listener::Listener;
use spin::IdleSpin;

use crate::access::{AccessLog, Sink};
use crate::buffer::BufPool;
use crate::config::{BackendConfig, Config};
use crate::events::EventBus;
use crate::health::{self, HealthHandle, ProbeResult};
use crate::http::HeadLimits;
use crate::route::{Published, Table};
use crate::session::{Connection, Settings};
use crate::stats::Totals;
use crate::token::{self, Target};
use crate::transport::tls::TlsAcceptor;
use crate::upstream::h2::Wake;
use crate::upstream::{BackendId, Backends, ChangeError, IdleExchange, Pool};

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
    /// An operator's change to the backends; the answer goes back on the channel (the id of
    /// the backend concerned).
    Change(Change, Sender<Result<BackendId, ChangeError>>),
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
    /// This reactor's access log lines, on their way to the shared writer.
    access: AccessLog,
    access_sink: Arc<Sink>,
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
    /// The backend removals this reactor's pool has caught up with.
    seen_removals: u64,
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
    /// The access log's writer thread.
    pub access: Arc<Sink>,
    /// Every reactor's idle backend connections, so that one takes another's before opening.
    pub idle: Arc<IdleExchange>,
}

impl Shared {
    /// Fails when `[tls]` certificates do not load (they were checked with the config, but the
    /// files may have changed since), or the access log's file cannot be opened.
    pub fn new(config: &Config) -> io::Result<Shared> {
        let events = Arc::new(EventBus::default());
        let tls = match &config.tls {
            Some(t) => {
                Some(TlsAcceptor::new(t).map_err(|e| io::Error::other(format!("tls: {e}")))?)
            }
            None => None,
        };
        let totals = Arc::new(Totals::default());
        let access = Arc::new(Sink::start(
            config.access_log_path.clone(),
            Arc::clone(&totals.access_log_dropped),
        )?);
        Ok(Shared {
            access,
            tls,
            backends: Arc::new(Backends::from_pools(
                &config.pools_in_effect(),
                Arc::clone(&events),
            )),
            events,
            totals,
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
        // Not on the TLS listener: a ClientHello larger than a segment (post-quantum key
        // shares) comes in two, and a client with Nagle's algorithm on would hold the second
        // until the delayed ACK of the first; a handshake saves nothing from the packet.
        if config.tcp_smart_accept {
            listener::delay_first_ack(&plain.socket)?;
        }
        if config.tcp_defer_accept {
            listener::defer_accept(&plain.socket, config.timeouts.client_header)?;
        }
        let local_addr = plain.addr;
        let tls_side = match (tls_listener, &shared.tls) {
            (Some(l), Some(_)) => {
                let l = Listener::register(l, &poll, token::TLS_LISTENER, true)?;
                if config.tcp_defer_accept {
                    listener::defer_accept(&l.socket, config.timeouts.client_header)?;
                }
                Some(l)
            }
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
            access,
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
            access: AccessLog::new(
                config.access_log.then(|| Arc::clone(&access)),
                config.access_log_format,
            ),
            access_sink: access,
            bufs: BufPool::new(limits.max_header_bytes.max(MIN_BUFFER), MAX_FREE_BUFFERS),
            settings: Settings {
                timeouts: config.timeouts.clone(),
                head_limits: HeadLimits {
                    max_header_bytes: limits.max_header_bytes,
                    max_headers: limits.max_headers,
                    max_target_bytes: limits.max_target_bytes,
                },
                request_id: config.request_id,
                busy_poll: config.busy_poll,
                idle_spin: config.idle_spin,
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
            seen_removals: 0,
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
        let mut spin = IdleSpin::new(Instant::now());
        loop {
            let now = Instant::now();
            let timeout = spin.timeout(self.poll_timeout(now), self.settings.idle_spin, now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            if let Some(spun) = spin.polled(!events.is_empty(), self.settings.idle_spin, now) {
                let micros = u64::try_from(spun.as_micros()).unwrap_or(u64::MAX);
                self.totals.spin_micros.fetch_add(micros, Ordering::Relaxed);
            }
            self.access.tick();
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
                            self.stop(now);
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
                self.forget_removed_backends();
                self.pool.expire(now);
                self.next_pool_sweep = now + POOL_SWEEP;
            }
            self.run_muxes(now);
            if self.accept_pending() && self.accept_resume_at.is_none_or(|at| now >= at) {
                self.accept(now);
            }
            self.access.flush_if_due(now);
            if let Some(deadline) = self.drain_deadline {
                if self.sessions.is_empty() {
                    info!("drained: every connection finished");
                    self.stop(now);
                    return Ok(());
                }
                if now >= deadline {
                    warn!(
                        "drain timeout: closing {} connections still open",
                        self.sessions.len()
                    );
                    self.stop(now);
                    return Ok(());
                }
            }
        }
    }

    /// Another reactor may have removed backends this one still holds idle connections to.
    fn forget_removed_backends(&mut self) {
        let removals = self.backends.removals();
        if removals != self.seen_removals {
            self.seen_removals = removals;
            let backends = &self.backends;
            self.pool.forget_gone(|id| backends.is_live(id));
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
        if let Some(at) = self.access.deadline() {
            next = next.min(at);
        }
        // Round up: waking a little early would only find nothing due and poll again.
        Some(next.saturating_duration_since(now) + Duration::from_millis(1))
    }
}
