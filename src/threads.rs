//! The helper threads' way of ending: a [`Worker`] is a named thread whose end can be waited for
//! until a deadline, so that a graceful stop joins the admin, event, health and discovery
//! threads without hanging on one that is stuck in a system call.

use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::warn;

/// How long a graceful stop waits for the helper threads, all together, once the reactors
/// are done.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// A running thread and word of its end.
pub struct Worker {
    name: String,
    thread: JoinHandle<()>,
    /// Disconnected once the thread's body has returned (or unwound).
    done: Receiver<()>,
}

impl Worker {
    pub fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<Worker> {
        let (ended, done) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            // Dropped when the body returns or panics: either way the thread is done.
            let _ended = ended;
            body();
        })?;
        Ok(Worker {
            name: name.to_string(),
            thread,
            done,
        })
    }

    /// Joins the thread if it ends by `deadline`; returns whether it did. One still running
    /// then is left to end with the process.
    pub fn join_by(self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.done.recv_timeout(left) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                let _ = self.thread.join();
                true
            }
            Err(RecvTimeoutError::Timeout) => {
                warn!("the {} thread did not stop in time; leaving it", self.name);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_ends_is_joined_and_one_that_hangs_is_left() {
        let quick = Worker::spawn("quick", || {}).unwrap();
        assert!(quick.join_by(Instant::now() + Duration::from_secs(5)));
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        let stuck = Worker::spawn("stuck", move || {
            let _ = held.recv();
        })
        .unwrap();
        let started = Instant::now();
        assert!(!stuck.join_by(Instant::now() + Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(release);
    }
}
