//! Backends as the reactor sees them: their addresses and counters, the round-robin choice among
//! them, and the pool of idle keep-alive connections to each.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use crate::config::BackendConfig;
use crate::token;

/// One backend server and what happened on it.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Connections opened to it (a keep-alive pool keeps this far below `requests`).
    pub connections: AtomicU64,
    /// Connect failures, resets and timeouts seen on it.
    pub errors: AtomicU64,
}

impl Backend {
    fn new(config: &BackendConfig) -> Backend {
        Backend {
            name: config.name.clone(),
            address: config.address,
            weight: config.weight,
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

/// The backends, in configuration order, and the round-robin cursor over them.
#[derive(Debug)]
pub struct Backends {
    list: Vec<Backend>,
    next: AtomicUsize,
}

impl Backends {
    pub fn new(configs: &[BackendConfig]) -> Backends {
        Backends {
            list: configs.iter().map(Backend::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Backend> {
        self.list.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.list.iter()
    }

    /// The next backend in round-robin order that is not in `exclude`; at most one pass.
    pub fn pick(&self, exclude: &[usize]) -> Option<usize> {
        let n = self.list.len();
        for _ in 0..n {
            let index = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if !exclude.contains(&index) {
                return Some(index);
            }
        }
        None
    }
}

struct Idle {
    stream: TcpStream,
    backend: usize,
    since: Instant,
}

/// Idle keep-alive connections, per backend, most recently used last.
pub struct Pool {
    idle: Slab<Idle>,
    by_backend: Vec<VecDeque<usize>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(backends: usize, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Slab::new(),
            by_backend: (0..backends).map(|_| VecDeque::new()).collect(),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently parked connection to `backend`: the one least likely to have been
    /// closed by the backend's own idle timeout.
    pub fn take(&mut self, backend: usize, registry: &Registry) -> Option<TcpStream> {
        let key = self.by_backend.get_mut(backend)?.pop_back()?;
        let mut idle = self.idle.try_remove(key)?;
        // Deregistering lets the caller register it under its own token.
        let _ = registry.deregister(&mut idle.stream);
        Some(idle.stream)
    }

    /// Parks a connection whose last exchange ended cleanly.
    pub fn put(
        &mut self,
        backend: usize,
        mut stream: TcpStream,
        registry: &Registry,
        now: Instant,
    ) {
        if self.max_idle == 0 {
            return;
        }
        let Some(queue) = self.by_backend.get_mut(backend) else {
            return;
        };
        if queue.len() >= self.max_idle {
            if let Some(oldest) = queue.pop_front() {
                self.idle.try_remove(oldest);
            }
        }
        let entry = self.idle.vacant_entry();
        let key = entry.key();
        // Watching an idle connection for reads tells us when the backend closes it.
        if let Err(e) = registry.reregister(&mut stream, token::pooled(key), Interest::READABLE) {
            log::debug!("not pooling a connection: {e}");
            return;
        }
        entry.insert(Idle {
            stream,
            backend,
            since: now,
        });
        queue.push_back(key);
    }

    /// An idle connection became readable: the backend closed it or sent bytes nobody asked for.
    pub fn on_event(&mut self, key: usize) {
        let Some(idle) = self.idle.get(key) else {
            return;
        };
        let mut probe = [0u8; 1];
        match idle.stream.peek(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            _ => {}
        }
        let backend = idle.backend;
        self.idle.remove(key);
        if let Some(queue) = self.by_backend.get_mut(backend) {
            queue.retain(|&k| k != key);
        }
    }

    /// Closes connections idle for longer than the idle timeout.
    pub fn expire(&mut self, now: Instant) {
        for queue in &mut self.by_backend {
            while let Some(&oldest) = queue.front() {
                let expired = self
                    .idle
                    .get(oldest)
                    .is_none_or(|idle| now.duration_since(idle.since) >= self.idle_timeout);
                if !expired {
                    break;
                }
                queue.pop_front();
                self.idle.try_remove(oldest);
            }
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Backends {
        let configs: Vec<BackendConfig> = (0..n)
            .map(|i| BackendConfig {
                name: format!("backend-{}", i + 1),
                address: SocketAddr::from(([127, 0, 0, 1], 8001 + i as u16)),
                weight: 1,
            })
            .collect();
        Backends::new(&configs)
    }

    #[test]
    fn round_robin_is_exact() {
        let b = backends(3);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[b.pick(&[]).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
    }

    #[test]
    fn pick_skips_excluded_and_gives_up_after_one_pass() {
        let b = backends(3);
        for _ in 0..10 {
            assert_eq!(b.pick(&[0, 2]), Some(1));
        }
        assert_eq!(b.pick(&[0, 1, 2]), None);
        assert_eq!(backends(0).pick(&[]), None);
    }
}
