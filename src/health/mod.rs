//! Active health checks: the health thread that probes every backend, and the rise/fall rule
//! that turns probe results into up/down flips. Each backend is probed as its pool's
//! `[health]` says (path, interval, timeout, expected statuses): the targets carry their check.
//!
//! The thread runs its own small mio loop so that probes to many backends run side by side and
//! a hanging backend costs one timeout, not a stalled round. It decides nothing: each result goes
//! to the reactor (crossbeam channel + the reactor's `Waker`), which owns the routing state and
//! applies [`HealthTracker::observe`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

mod h2;

use crate::buffer::Source;
use crate::config::HealthConfig;
use crate::threads::{Worker, STOP_WAIT};
use crate::transport::tls::connector::TlsConnector;
use crate::transport::Transport;
use crate::upstream::BackendId;

/// Consecutive results and the up/down state they imply (HAProxy's rise and fall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTracker {
    up: bool,
    passes: u32,
    failures: u32,
}

impl Default for HealthTracker {
    /// Backends start up: traffic flows at once, and a dead one is found by its first failed
    /// connect (passive detection) or by `fall` failed probes.
    fn default() -> HealthTracker {
        HealthTracker {
            up: true,
            passes: 0,
            failures: 0,
        }
    }
}

impl HealthTracker {
    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn consecutive_passes(&self) -> u32 {
        self.passes
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Records one result; returns whether the state flipped. A down backend comes up on the
    /// `rise`-th pass in a row, an up one goes down on the `fall`-th failure in a row.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            if !self.up && self.passes >= rise {
                self.up = true;
                return true;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.up && self.failures >= fall {
                self.up = false;
                return true;
            }
        }
        false
    }

    /// Takes the backend down at once (a failure seen on live traffic); returns whether it
    /// was up. It comes back only through `rise` passing probes.
    pub fn force_down(&mut self) -> bool {
        let was_up = self.up;
        self.up = false;
        self.passes = 0;
        was_up
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub backend: BackendId,
    pub ok: bool,
    /// What happened, for logs and the admin API: `status 200`, `timeout`, `connection refused`.
    pub detail: String,
    pub latency: Duration,
    pub at: SystemTime,
}

/// What the health thread probes.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub backend: BackendId,
    pub address: SocketAddr,
    /// A TLS backend is probed over TLS, as its traffic goes.
    pub tls: Option<Arc<TlsConnector>>,
    /// Its pool's checks.
    pub check: Arc<HealthConfig>,
    /// Its pool speaks HTTP/2 to it: so does the probe.
    pub h2: bool,
}

/// Controls a running health thread; stops it when dropped, waiting at most [`STOP_WAIT`].
pub struct HealthHandle {
    stop: Sender<()>,
    waker: Arc<Waker>,
    worker: Option<Worker>,
}

impl HealthHandle {
    /// Stops the thread (probes under way are dropped) and waits for it until `deadline`;
    /// returns whether it ended in time.
    pub fn stop(mut self, deadline: Instant) -> bool {
        self.tell_stop();
        self.worker.take().is_none_or(|w| w.join_by(deadline))
    }

    fn tell_stop(&self) {
        if self.stop.try_send(()).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        self.tell_stop();
        if let Some(worker) = self.worker.take() {
            worker.join_by(Instant::now() + STOP_WAIT);
        }
    }
}

/// How often the targets are asked for when every interval is longer: a backend added at
/// runtime waits at most this for its first probe.
const TARGETS_REFRESH: Duration = Duration::from_secs(1);

/// Starts the health thread. `targets` is asked for the backends and their checks at each tick
/// (they change at runtime); `report` is called with every result. Both run on that thread.
pub fn spawn(
    targets: impl Fn() -> Vec<ProbeTarget> + Send + 'static,
    report: impl Fn(ProbeResult) + Send + 'static,
) -> io::Result<HealthHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (stop, stop_rx) = crossbeam_channel::bounded(1);
    let worker = Worker::spawn("health", move || {
        let mut prober = Prober {
            poll,
            due: HashMap::new(),
            targets: Box::new(targets),
            probes: Slab::new(),
            stop: stop_rx,
            report: Box::new(report),
        };
        if let Err(e) = prober.run() {
            warn!("health checks stopped: {e}");
        }
    })?;
    Ok(HealthHandle {
        stop,
        waker,
        worker: Some(worker),
    })
}

const WAKER: Token = Token(usize::MAX);
/// A health response needs only its status line; more than this and the backend is babbling.
const MAX_PROBE_RESPONSE: usize = 8192;

struct Probe {
    backend: BackendId,
    check: Arc<HealthConfig>,
    stream: Transport,
    started: Instant,
    deadline: Instant,
    connected: bool,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    /// Over HTTP/2 (see `h2`).
    h2: bool,
    settings_acked: bool,
}

struct Prober {
    poll: Poll,
    /// When each backend's next probe is due.
    due: HashMap<BackendId, Instant>,
    targets: Box<dyn Fn() -> Vec<ProbeTarget> + Send>,
    probes: Slab<Probe>,
    stop: Receiver<()>,
    report: Box<dyn Fn(ProbeResult) + Send>,
}

impl Prober {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut next_round = Instant::now();
        loop {
            let now = Instant::now();
            // Timed-out probes report before a round starts, so the round probes those backends
            // again instead of skipping them as still busy.
            self.expire(now);
            if now >= next_round {
                next_round = self.start_round(now);
            }
            let earliest = self
                .probes
                .iter()
                .map(|(_, p)| p.deadline)
                .min()
                .map_or(next_round, |d| d.min(next_round));
            let timeout = earliest.saturating_duration_since(now) + Duration::from_millis(1);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                self.advance(event.token().0);
            }
            match self.stop.try_recv() {
                Err(TryRecvError::Empty) => {}
                // Told to stop, or the handle is gone.
                Ok(()) | Err(TryRecvError::Disconnected) => return Ok(()),
            }
            self.expire(Instant::now());
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            self.finish(key, false, "timeout".to_string());
        }
    }

    /// Probes the backends that are due; returns when the next one is.
    fn start_round(&mut self, now: Instant) -> Instant {
        let targets = (self.targets)();
        self.due
            .retain(|backend, _| targets.iter().any(|t| t.backend == *backend));
        let mut next = now + TARGETS_REFRESH;
        for target in &targets {
            let due = *self.due.entry(target.backend).or_insert(now);
            // A probe still running from the last round will report on its own.
            let running = self.probes.iter().any(|(_, p)| p.backend == target.backend);
            if due <= now && !running {
                self.start_probe(target, now);
                // From now rather than from `due`: after a suspended machine, no burst.
                self.due.insert(target.backend, now + target.check.interval);
            }
            if let Some(&at) = self.due.get(&target.backend) {
                next = next.min(at.max(now));
            }
        }
        next
    }

    fn start_probe(&mut self, target: &ProbeTarget, now: Instant) {
        let at = SystemTime::now();
        let mut stream = match TcpStream::connect(target.address) {
            Ok(s) => s,
            Err(e) => {
                (self.report)(failed(target.backend, describe(&e), Duration::ZERO, at));
                return;
            }
        };
        let entry = self.probes.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            (self.report)(failed(target.backend, describe(&e), Duration::ZERO, at));
            return;
        }
        let stream = match &target.tls {
            None => Transport::Plain(stream),
            Some(connector) if target.h2 => match connector.connect_h2(stream) {
                Ok(t) => Transport::Tls(Box::new(t)),
                Err(e) => {
                    (self.report)(failed(target.backend, e.to_string(), Duration::ZERO, at));
                    return;
                }
            },
            Some(connector) => match connector.connect(stream) {
                Ok(t) => Transport::Tls(Box::new(t)),
                Err(e) => {
                    (self.report)(failed(target.backend, e.to_string(), Duration::ZERO, at));
                    return;
                }
            },
        };
        let request = if target.h2 {
            h2::request(
                &target.check,
                &target.address.to_string(),
                target.tls.is_some(),
            )
        } else {
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n",
                target.check.path, target.address
            )
            .into_bytes()
        };
        entry.insert(Probe {
            backend: target.backend,
            check: Arc::clone(&target.check),
            stream,
            started: now,
            deadline: now + target.check.timeout,
            connected: false,
            request,
            written: 0,
            response: Vec::new(),
            h2: target.h2,
            settings_acked: false,
        });
    }

    fn advance(&mut self, key: usize) {
        let Some(probe) = self.probes.get_mut(key) else {
            return;
        };
        if !probe.connected {
            match probe.stream.socket().and_then(|s| s.take_error()) {
                Ok(Some(e)) | Err(e) => return self.finish(key, false, describe(&e)),
                Ok(None) => {}
            }
            match probe.stream.socket().and_then(|s| s.peer_addr()) {
                Ok(_) => probe.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.finish(key, false, describe(&e)),
            }
        }
        while probe.written < probe.request.len() {
            match probe.stream.write(&probe.request[probe.written..]) {
                Ok(n) => probe.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.finish(key, false, describe(&e)),
            }
        }
        // TLS records the request left behind (it is taken whole, then encrypted).
        match probe.stream.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => return self.finish(key, false, describe(&e)),
        }
        let mut chunk = [0u8; 1024];
        loop {
            match probe.stream.read_some(&mut chunk) {
                Ok((0, _)) => break,
                Ok((n, _)) => {
                    probe.response.extend_from_slice(&chunk[..n]);
                    if probe.h2 && !probe.settings_acked && h2::has_settings(&probe.response) {
                        // Some servers hold the stream until their SETTINGS are acknowledged.
                        probe.settings_acked = true;
                        crate::h2::frame::write_settings_ack(&mut probe.request);
                        while probe.written < probe.request.len() {
                            match probe.stream.write(&probe.request[probe.written..]) {
                                Ok(n) => probe.written += n,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                        let _ = probe.stream.flush();
                    }
                    let complete = if probe.h2 {
                        h2::verdict(&probe.response, &probe.check).is_some()
                    } else {
                        probe.response.contains(&b'\n')
                    };
                    if complete || probe.response.len() > MAX_PROBE_RESPONSE {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.finish(key, false, describe(&e)),
            }
        }
        if probe.h2 {
            let (ok, detail) = h2::verdict(&probe.response, &probe.check)
                .unwrap_or((false, "closed before an answer".to_string()));
            return self.finish(key, ok, detail);
        }
        let verdict = match status_of(&probe.response) {
            Some(status) if probe.check.expect.contains(status) => {
                (true, format!("status {status}"))
            }
            Some(status) => (false, format!("status {status}")),
            None if probe.response.is_empty() => (false, "closed without a response".to_string()),
            None => (false, "not an HTTP response".to_string()),
        };
        self.finish(key, verdict.0, verdict.1);
    }

    fn finish(&mut self, key: usize, ok: bool, detail: String) {
        let Some(mut probe) = self.probes.try_remove(key) else {
            return;
        };
        if let Ok(socket) = probe.stream.socket_mut() {
            let _ = self.poll.registry().deregister(socket);
        }
        debug!("probe of backend {}: {detail}", probe.backend);
        (self.report)(ProbeResult {
            backend: probe.backend,
            ok,
            detail,
            latency: probe.started.elapsed(),
            at: SystemTime::now(),
        });
    }
}

fn failed(backend: BackendId, detail: String, latency: Duration, at: SystemTime) -> ProbeResult {
    ProbeResult {
        backend,
        ok: false,
        detail,
        latency,
        at,
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => e.to_string(),
    }
}

/// The status code of a response whose status line has arrived.
fn status_of(response: &[u8]) -> Option<u16> {
    let line_end = response.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_flip_exactly_on_the_nth_result() {
        let mut t = HealthTracker::default();
        assert!(t.is_up());
        // fall = 3: two failures keep it up, the third takes it down.
        assert!(!t.observe(false, 2, 3));
        assert!(!t.observe(false, 2, 3));
        assert!(t.is_up());
        assert!(t.observe(false, 2, 3));
        assert!(!t.is_up());
        assert!(!t.observe(false, 2, 3));
        // rise = 2: one pass is not enough, the second brings it up.
        assert!(!t.observe(true, 2, 3));
        assert!(!t.is_up());
        assert!(t.observe(true, 2, 3));
        assert!(t.is_up());
    }

    #[test]
    fn a_failure_resets_the_run_of_passes() {
        let mut t = HealthTracker::default();
        t.force_down();
        assert!(!t.observe(true, 3, 1));
        assert!(!t.observe(true, 3, 1));
        assert!(!t.observe(false, 3, 1));
        assert!(!t.observe(true, 3, 1));
        assert!(!t.observe(true, 3, 1));
        assert!(t.observe(true, 3, 1));
    }

    #[test]
    fn a_pass_resets_the_run_of_failures() {
        let mut t = HealthTracker::default();
        assert!(!t.observe(false, 1, 2));
        assert!(!t.observe(true, 1, 2));
        assert!(!t.observe(false, 1, 2));
        assert!(t.is_up());
        assert!(t.observe(false, 1, 2));
    }

    #[test]
    fn force_down_reports_a_flip_once() {
        let mut t = HealthTracker::default();
        assert!(t.force_down());
        assert!(!t.force_down());
        assert!(!t.is_up());
        assert_eq!(t.consecutive_passes(), 0);
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_of(b"HTTP/1.0 503 Service Unavailable\r\nX: y"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.1 200"), None);
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 20 OK\r\n"), None);
    }
}
