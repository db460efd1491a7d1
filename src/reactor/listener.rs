//! Listening sockets: binding with the options a balancer needs (SO_REUSEADDR, SO_REUSEPORT for
//! workers, a deep backlog), and telling a full descriptor table from a connection that died in
//! the backlog.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use mio::{Interest, Poll, Token};

use crate::transport::set_socket_option;

/// A listening socket the reactor accepts from.
pub(super) struct Listener {
    pub socket: TcpListener,
    pub addr: SocketAddr,
    /// Connections may be waiting in the backlog that no event will announce again.
    pub pending: bool,
    /// Its connections speak TLS.
    pub tls: bool,
}

impl Listener {
    pub fn register(
        listener: std::net::TcpListener,
        poll: &Poll,
        token: Token,
        tls: bool,
    ) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        let mut socket = TcpListener::from_std(listener);
        let addr = socket.local_addr()?;
        poll.registry()
            .register(&mut socket, token, Interest::READABLE)?;
        Ok(Listener {
            socket,
            addr,
            pending: false,
            tls,
        })
    }
}

/// How many connections wait in the kernel while `max_connections` are busy.
const BACKLOG: i32 = 1024;

pub(super) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Binds with SO_REUSEADDR (a restart must not wait out TIME_WAIT) and a deep backlog; with
/// `reuse_port`, SO_REUSEPORT too, so that each reactor of `workers` gets its own listener and
/// the kernel spreads new connections over them. A single reactor does without it, so that a
/// second balancer started on the same port fails instead of silently taking half the traffic.
pub fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we own; it is wrapped right after.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket owned by nothing else.
    let listener = unsafe {
        use std::os::fd::FromRawFd;
        std::net::TcpListener::from_raw_fd(fd)
    };
    set_socket_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        set_socket_option(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    if unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a bound socket.
    if unsafe { libc::listen(fd, BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `tcp_defer_accept`: the kernel hands a connection over only once its first bytes are in, so
/// accepting it and reading its request take one wake-up instead of two. A client that sends
/// nothing for `wait` is never seen by the balancer at all (the kernel drops it), which is why
/// it is an option, as nginx's `deferred` and HAProxy's `defer-accept` are.
pub(super) fn defer_accept(listener: &TcpListener, wait: std::time::Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = libc::c_int::try_from(wait.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    set_socket_option(
        listener.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        secs,
    )
}

/// TCP_QUICKACK off on the listener, inherited by what it accepts: the kernel then holds the
/// ACK of a request and sends it with the response, as HAProxy's `tcp-smart-accept` does.
pub(super) fn delay_first_ack(listener: &TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    set_socket_option(
        listener.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_QUICKACK,
        0,
    )
}
