//! Where access log lines end up: a writer thread that takes whole buffers of lines from the
//! reactors and writes them to standard error or to a file.
//!
//! The reactors never wait on it. A buffer goes over a bounded channel; when the channel is full
//! (the destination is slower than the traffic, or stuck) the buffer's lines are dropped and
//! counted instead. Buffers come back on a second channel to be filled again, so a steady
//! stream of lines allocates nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{error, warn};

/// Buffers in flight to the writer: with 64 KiB each, 4 MiB of lines may wait for a slow
/// destination before lines are dropped.
const QUEUED_BUFFERS: usize = 64;
/// How long a stop waits for the writer to write what was queued.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

enum Message {
    /// Lines, and how many there are (for the count of dropped ones).
    Lines(Vec<u8>, u64),
    /// Open the destination again (SIGHUP: after a log rotation, or a changed path).
    Reopen(Option<PathBuf>),
    /// Write what came before, then say so on the channel and end.
    Stop(Sender<()>),
}

/// The writer thread and the channels to it; one for every reactor of the process.
pub struct Sink {
    lines: Sender<Message>,
    spare: Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Sink {
    /// Starts the writer; `path` `None` is standard error. A file that cannot be opened is an
    /// error here, so that a bad path is reported at start rather than at the first request.
    /// Dropped lines are counted in `dropped`.
    pub fn start(path: Option<PathBuf>, dropped: Arc<AtomicU64>) -> io::Result<Sink> {
        let destination = Destination::open(path)?;
        let (lines, queue) = crossbeam_channel::bounded(QUEUED_BUFFERS);
        let (recycle, spare) = crossbeam_channel::bounded(QUEUED_BUFFERS);
        let lost = Arc::clone(&dropped);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(destination, queue, recycle, &lost))?;
        Ok(Sink {
            lines,
            spare,
            dropped,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// An empty buffer to fill, one the writer gave back if there is one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity))
    }

    /// Hands `buf` (holding `count` lines) to the writer, or drops the lines if it is behind.
    pub fn send(&self, buf: Vec<u8>, count: u64) {
        match self.lines.try_send(Message::Lines(buf, count)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self.dropped.fetch_add(count, Ordering::Relaxed) == 0 {
                    warn!("access log: the destination is not keeping up; dropping lines (counted in lb_access_log_dropped_lines_total)");
                }
            }
        }
    }

    /// As [`Sink::send`], waiting a little for room: for the last lines of a stopping
    /// reactor, which would otherwise be lost at the end of a burst.
    pub fn send_last(&self, buf: Vec<u8>, count: u64) {
        let message = Message::Lines(buf, count);
        if self.lines.send_timeout(message, STOP_PATIENCE).is_err() {
            self.dropped.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the destination did not keep up (or failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens the destination again (standard error when `path` is `None`).
    pub fn reopen(&self, path: Option<PathBuf>) {
        let _ = self
            .lines
            .send_timeout(Message::Reopen(path), STOP_PATIENCE);
    }

    /// Writes everything queued so far and ends the writer; waits for it a bounded time, so a
    /// stuck destination cannot keep the process from exiting.
    pub fn stop(&self) {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self
            .lines
            .send_timeout(Message::Stop(done), STOP_PATIENCE)
            .is_err()
        {
            return;
        }
        if finished.recv_timeout(STOP_PATIENCE).is_ok() {
            if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = thread.join();
            }
        } else {
            error!(
                "access log: its destination took more than {STOP_PATIENCE:?}; lines may be lost"
            );
        }
    }
}

enum Destination {
    Stderr,
    File(File),
}

impl Destination {
    fn open(path: Option<PathBuf>) -> io::Result<Destination> {
        match path {
            None => Ok(Destination::Stderr),
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("access_log_path {}: {e}", path.display()))
                    })?;
                Ok(Destination::File(file))
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            // The same lock the other log lines take: lines never interleave mid-line.
            Destination::Stderr => io::stderr().lock().write_all(bytes),
            Destination::File(file) => file.write_all(bytes),
        }
    }
}

fn write_lines(
    mut destination: Destination,
    queue: Receiver<Message>,
    recycle: Sender<Vec<u8>>,
    dropped: &AtomicU64,
) {
    let mut failing_since: Option<Instant> = None;
    for message in queue {
        match message {
            Message::Lines(mut buf, count) => {
                match destination.write_all(&buf) {
                    Ok(()) => failing_since = None,
                    Err(e) => {
                        dropped.fetch_add(count, Ordering::Relaxed);
                        // Once per failing spell, not once per buffer.
                        if failing_since.is_none() {
                            error!("access log: cannot write: {e}");
                            failing_since = Some(Instant::now());
                        }
                    }
                }
                buf.clear();
                let _ = recycle.try_send(buf);
            }
            Message::Reopen(path) => match Destination::open(path) {
                Ok(d) => destination = d,
                Err(e) => error!("access log: cannot reopen, the old destination stays: {e}"),
            },
            Message::Stop(done) => {
                if let Destination::File(file) = &mut destination {
                    let _ = file.flush();
                }
                let _ = done.send(());
                return;
            }
        }
    }
}
