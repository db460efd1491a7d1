//! The access log: one line per request, text or JSON, from each reactor's own buffer to a
//! writer thread.
//!
//! A reactor formats its lines into a buffer it owns (no lock, no allocation per line), with
//! the timestamp of its current turn ([`clock`]). The buffer goes to the writer ([`sink`]) when
//! it is full or its oldest line is [`FLUSH_AFTER`] old, and when the reactor stops; a writer
//! that is behind makes the reactor drop lines and count them, never wait.

mod clock;
mod format;
mod sink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use sink::Sink;

use crate::config::AccessLogFormat;

/// A buffer goes to the writer once it holds this much...
const FLUSH_BYTES: usize = 64 * 1024;
/// ...or once its oldest line waited this long.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Room for a whole line past [`FLUSH_BYTES`], so a buffer is never grown.
const BUFFER_CAPACITY: usize = FLUSH_BYTES + 16 * 1024;

/// What one line says about an exchange.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub client: Option<SocketAddr>,
    /// `GET /a HTTP/1.1` as the client sent it (the text format's quoted field; method and
    /// target in JSON); `None` when the request was refused before it was understood.
    pub request_line: Option<&'a str>,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2` (`-` when not understood).
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub backend: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub route: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// TLS version and cipher suite of the client connection.
    pub tls: Option<(&'a str, &'a str)>,
    /// From the first byte of the request head to its end.
    pub head: Option<Duration>,
    /// Opening the backend connection (zero when a pooled one was reused; `None`: none).
    pub connect: Option<Duration>,
    /// From the end of the request head to the backend's first response byte.
    pub first_byte: Option<Duration>,
    /// From the end of the request head to the end of the exchange.
    pub served: Duration,
    /// Why the balancer answered or cut the exchange short (`backend-timeout`, ...).
    pub cause: Option<&'a str>,
    /// How the exchange ended: `ok`, a cause, `client-closed`, `client-aborted`, `shutdown`.
    pub termination: &'a str,
    /// The connection closed with the exchange unfinished.
    pub aborted: bool,
}

/// The method and the target of a request line (`-` for what is missing).
pub fn method_and_target(line: Option<&str>) -> (&str, &str) {
    let Some((method, rest)) = line.and_then(|l| l.split_once(' ')) else {
        return ("-", "-");
    };
    let target = rest.rsplit_once(' ').map_or(rest, |(target, _)| target);
    (method, target)
}

/// One reactor's access log.
pub struct AccessLog {
    sink: Option<Arc<Sink>>,
    format: AccessLogFormat,
    buf: Vec<u8>,
    lines: u64,
    /// When the oldest line in `buf` was written.
    oldest: Option<Instant>,
    clock: clock::Clock,
}

impl AccessLog {
    /// `sink` `None`: lines are not written (access_log = false).
    pub fn new(sink: Option<Arc<Sink>>, format: AccessLogFormat) -> AccessLog {
        AccessLog {
            sink,
            format,
            buf: Vec::new(),
            lines: 0,
            oldest: None,
            clock: clock::Clock::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// A reload: lines written from now on follow the new settings; what is buffered goes out
    /// first.
    pub fn configure(&mut self, sink: Option<Arc<Sink>>, format: AccessLogFormat) {
        self.flush();
        self.sink = sink;
        self.format = format;
    }

    /// The reactor's new turn: lines take a fresh timestamp.
    pub fn tick(&mut self) {
        self.clock.tick();
    }

    pub fn write(&mut self, now: Instant, record: &Record) {
        let Some(sink) = &self.sink else {
            return;
        };
        if self.buf.capacity() == 0 {
            self.buf = sink.buffer(BUFFER_CAPACITY);
        }
        let stamp = self.clock.stamp();
        match self.format {
            AccessLogFormat::Text => format::text(&mut self.buf, stamp, record),
            AccessLogFormat::Json => format::json(&mut self.buf, stamp, record),
        }
        self.lines += 1;
        self.oldest.get_or_insert(now);
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// When the buffered lines must go out, if there are any.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|at| at + FLUSH_AFTER)
    }

    /// Sends the buffer if its oldest line has waited long enough.
    pub fn flush_if_due(&mut self, now: Instant) {
        if self.deadline().is_some_and(|at| now >= at) {
            self.flush();
        }
    }

    /// Sends the buffered lines to the writer (or drops them if it is behind).
    pub fn flush(&mut self) {
        if let Some((buf, lines)) = self.take() {
            if let Some(sink) = &self.sink {
                sink.send(buf, lines);
            }
        }
    }

    /// The reactor stops: the last lines wait (a bounded time) for room rather than be lost.
    pub fn finish(&mut self) {
        if let Some((buf, lines)) = self.take() {
            if let Some(sink) = &self.sink {
                sink.send_last(buf, lines);
            }
        }
    }

    fn take(&mut self) -> Option<(Vec<u8>, u64)> {
        self.oldest = None;
        if self.lines == 0 {
            return None;
        }
        let lines = std::mem::take(&mut self.lines);
        Some((std::mem::take(&mut self.buf), lines))
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.finish();
    }
}
