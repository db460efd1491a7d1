//! The management thread's listener and connections: the accept loop, a thread per admin
//! connection (few, bounded in number), and their stop. Each open connection's socket is kept,
//! so that a stop ends a thread blocked reading a silent client or writing to one that does not
//! read, instead of waiting out its timeouts.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{serve, sse, Admin};
use crate::threads::Worker;

/// More simultaneous admin connections than this are refused: the API is for a few operators
/// and dashboards, and each connection costs a thread.
const MAX_CONNECTIONS: usize = 64;

/// The open admin connections: a handle on each one's socket and its thread.
#[derive(Default)]
struct Open {
    next: u64,
    conns: HashMap<u64, (TcpStream, Worker)>,
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    // A map of sockets and threads: usable whatever panicked while it was held.
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running management thread. Dropping this leaves it running; [`AdminHandle::stop`] ends
/// it.
pub struct AdminHandle {
    addr: Option<SocketAddr>,
    /// The listening socket, to wake the accept loop with a shutdown.
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
    accept: Worker,
    hub: sse::Hub,
    pump: Worker,
    open: Arc<Mutex<Open>>,
}

impl AdminHandle {
    /// Stops accepting, ends every event stream and open connection, and waits for their
    /// threads until `deadline`. Returns how many connections were open, and whether every
    /// thread ended in time.
    pub fn stop(self, deadline: Instant) -> (usize, bool) {
        self.stopping.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on a descriptor this handle owns (a clone of the listener); on
        // Linux it wakes a thread blocked in accept(2) on the same socket, which then fails.
        let woken = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) } == 0;
        if !woken {
            // Wake it with a connection of our own instead.
            if let Some(addr) = self.addr {
                let _ = TcpStream::connect_timeout(&loopback(addr), Duration::from_millis(200));
            }
        }
        let mut ended = self.accept.join_by(deadline);
        // Event streams end first, cleanly: their threads find their queues closed.
        self.hub.stop();
        ended &= self.pump.join_by(deadline);
        let conns: Vec<(TcpStream, Worker)> =
            lock(&self.open).conns.drain().map(|(_, c)| c).collect();
        let count = conns.len();
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, worker) in conns {
            ended &= worker.join_by(deadline);
        }
        (count, ended)
    }
}

/// Where to reach a listener bound to `addr` from this machine.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Starts the management thread on an already bound listener.
pub fn spawn(listener: TcpListener, admin: Admin) -> io::Result<AdminHandle> {
    let admin = Arc::new(admin);
    let (hub, pump) = sse::Hub::start(Arc::clone(&admin))?;
    let open: Arc<Mutex<Open>> = Arc::default();
    let stopping = Arc::new(AtomicBool::new(false));
    let addr = listener.local_addr().ok();
    let handle_side = listener.try_clone()?;
    let accept = {
        let (hub, open, stopping) = (hub.clone(), Arc::clone(&open), Arc::clone(&stopping));
        Worker::spawn("admin", move || {
            if let Some(addr) = addr {
                info!("admin API and dashboard on http://{addr}/");
            }
            accept_loop(&listener, &admin, &hub, &open, &stopping);
        })?
    };
    Ok(AdminHandle {
        addr,
        listener: handle_side,
        stopping,
        accept,
        hub,
        pump,
        open,
    })
}

fn accept_loop(
    listener: &TcpListener,
    admin: &Arc<Admin>,
    hub: &sse::Hub,
    open: &Arc<Mutex<Open>>,
    stopping: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("admin accept failed: {e}");
                // Out of descriptors, most likely: do not spin.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok(kept) = stream.try_clone() else {
            continue;
        };
        // Held while the thread starts, so that its own removal, at its end, comes after.
        let mut table = lock(open);
        if table.conns.len() >= MAX_CONNECTIONS {
            continue;
        }
        let key = table.next;
        table.next += 1;
        let (admin, hub, open) = (Arc::clone(admin), hub.clone(), Arc::clone(open));
        let spawned = Worker::spawn("admin-conn", move || {
            serve(stream, &admin, &hub);
            lock(&open).conns.remove(&key);
        });
        match spawned {
            Ok(worker) => {
                table.conns.insert(key, (kept, worker));
            }
            Err(e) => warn!("cannot start an admin connection thread: {e}"),
        }
    }
}
