//! What other threads ask of a reactor: commands from the channel, the graceful stop, and a
//! reload's changes to what can change without a restart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{Change, Command, Reactor};
use crate::config::{Config, DEFAULT_POOL};
use crate::http::HeadLimits;
use crate::route::{AffinitySpec, Table};
use crate::session::Connection;
use crate::upstream::Backends;

impl Reactor {
    pub(super) fn drain_commands(&mut self, now: Instant) -> bool {
        let mut shutdown = false;
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Shutdown => shutdown = true,
                Command::Drain => self.begin_drain(now),
                Command::Reload(config) => self.reload(&config),
                Command::Probe(result) => self.backends.observe_probe(&result),
                Command::Change(change, reply) => {
                    let result = match change {
                        Change::Add(pool, config) => self.backends.add(&pool, &config),
                        Change::Discovered(pool, config) => {
                            self.backends.add_discovered(&pool, &config)
                        }
                        Change::Remove(name) => self.backends.remove(&name).inspect(|&index| {
                            self.pool.forget(index);
                        }),
                        Change::Drain(name) => self.backends.set_draining(&name, true),
                        Change::Enable(name) => self.backends.set_draining(&name, false),
                    };
                    // The asker may have given up; the change stands either way.
                    let _ = reply.try_send(result);
                }
            }
        }
        shutdown
    }

    /// Starts a graceful stop; a second one changes nothing.
    fn begin_drain(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        let drain = self.settings.timeouts.drain;
        info!(
            "draining: no new connections; {} open, waiting up to {drain:?} for requests in flight",
            self.sessions.len()
        );
        self.drain_deadline = Some(now + drain);
        self.totals.draining.store(true, Ordering::Relaxed);
        // Connections the kernel completed are in the backlog: closing the listener would reset
        // them, after an L4 tier in front has already handed them a client. They are taken in
        // first and get their request answered; only later ones are refused.
        for listener in self.listeners.iter_mut().flatten() {
            listener.pending = true;
        }
        self.accept(now);
        self.close_listeners();
        let slots: Vec<usize> = self.sessions.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.with_session(slot, now, Connection::begin_drain);
        }
    }

    /// Applies a new configuration to what can change without a restart: pools, their
    /// policies and backends, routes, timeouts, limits. What cannot (the listen and admin
    /// addresses, workers, buffer sizes) is logged and kept.
    fn reload(&mut self, config: &Config) {
        let t = &mut self.settings;
        t.timeouts = config.timeouts.clone();
        t.retries = config.retries;
        t.proxy_from = config.proxy_protocol_from.clone();
        t.request_id = config.request_id;
        t.busy_poll = config.busy_poll;
        t.idle_spin = config.idle_spin;
        t.handshake_timeout = tls_handshake_timeout(config);
        t.redirect_https = redirect_port(config, self.tls_addr);
        t.http2 = config.http2.clone();
        self.access.configure(
            config.access_log.then(|| Arc::clone(&self.access_sink)),
            config.access_log_format,
        );
        let limits = &config.limits;
        if limits.max_header_bytes <= self.max_header_bytes {
            t.head_limits = HeadLimits {
                max_header_bytes: limits.max_header_bytes,
                max_headers: limits.max_headers,
                max_target_bytes: limits.max_target_bytes,
            };
        } else {
            warn!(
                "reload: a larger limits.max_header_bytes needs a restart; keeping the old limits"
            );
        }
        self.max_connections = limits.max_connections;
        self.pool
            .configure(limits.pool_max_idle, config.timeouts.backend_idle);
        // Pools first: the new routes name them.
        for index in self.backends.reconcile(&config.pools_in_effect()) {
            self.pool.forget(index);
        }
        self.router = routing_table(config, &self.backends);
        self.routes.replace(&config.routes);
        if config.listen != self.local_addr && config.listen.port() != 0 {
            warn!(
                "reload: a new listen address needs a restart; still on {}",
                self.local_addr
            );
        }
        info!("configuration reloaded");
    }
}

/// The routes of `config` over the pools of `backends` (which must already be reconciled
/// with it).
pub(super) fn routing_table(config: &Config, backends: &Backends) -> Table {
    let pools = config.pools_in_effect();
    let mut affinity = Vec::new();
    for pool in &pools {
        let Some(index) = backends.pool_index(&pool.name) else {
            continue;
        };
        if affinity.len() <= index {
            affinity.resize(index + 1, AffinitySpec::default());
        }
        affinity[index] = AffinitySpec {
            pool: pool.name.clone(),
            hash_key: pool.hash_key.clone(),
            sticky_cookie: pool.sticky.as_ref().map(|s| s.cookie.clone()),
        };
    }
    let default_pool = if config.has_default_pool() {
        backends.pool_index(DEFAULT_POOL)
    } else {
        None
    };
    Table::build(
        &config.routes,
        |name| backends.pool_index(name),
        default_pool,
        affinity,
    )
}

pub(super) fn tls_handshake_timeout(config: &Config) -> Duration {
    config
        .tls
        .as_ref()
        .map_or(crate::config::DEFAULT_TLS_HANDSHAKE_TIMEOUT, |t| {
            t.handshake_timeout
        })
}

/// The HTTPS port plain requests are redirected to, with `tls.redirect_http`.
pub(super) fn redirect_port(config: &Config, tls_addr: Option<SocketAddr>) -> Option<u16> {
    let tls = config.tls.as_ref().filter(|t| t.redirect_http)?;
    Some(tls_addr.map_or(tls.listen.port(), |a| a.port()))
}
