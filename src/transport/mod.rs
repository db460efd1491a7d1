//! The byte transport under a session's protocol: a plain TCP socket, or TLS over one.
//!
//! A session reads and writes plaintext through a [`Transport`] and never sees how the bytes
//! travel. Two promises keep the session's edge-triggered readiness bookkeeping right whatever
//! the transport: a read reports whether the socket's receive queue is known to be empty (so no
//! new edge is missed), and a write that takes fewer bytes than offered means the socket is full
//! (so an edge will come when it has room).

pub mod pipe;
pub mod tls;

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::buffer::Source;
use pipe::{Pipe, SharedPipe};
use tls::TlsStream;

/// Readiness of one socket, remembered between edge-triggered events.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer closed or the socket failed: read on until the read says so, since no new
    /// edge will come for what is already queued.
    pub read_closed: bool,
}

impl Readiness {
    pub fn record(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.readable |= readable;
        self.writable |= writable;
        self.read_closed |= read_closed;
    }

    /// After a read that did not fill the buffer: the queue is empty, and new bytes will come
    /// with a new edge.
    pub fn drained(&mut self) {
        if !self.read_closed {
            self.readable = false;
        }
    }
}

/// How a connection's bytes travel.
pub enum Transport {
    Plain(TcpStream),
    /// Boxed: rustls's state is large, and most connections of a plain listener never pay for it.
    Tls(Box<TlsStream>),
    /// An HTTP/2 stream's exchange: bytes in memory, to and from the connection's frames.
    Stream(Box<Pipe>),
    /// An exchange's stream on a multiplexed HTTP/2 backend connection (`protocol = "h2"`).
    Mux(SharedPipe),
}

fn not_a_socket() -> io::Error {
    io::Error::other("an HTTP/2 stream has no socket of its own")
}

impl Transport {
    /// The socket underneath, for what only the socket knows (errors, addresses, options).
    pub fn socket(&self) -> io::Result<&TcpStream> {
        match self {
            Transport::Plain(s) => Ok(s),
            Transport::Tls(t) => Ok(t.tcp()),
            Transport::Stream(_) | Transport::Mux(_) => Err(not_a_socket()),
        }
    }

    pub fn socket_mut(&mut self) -> io::Result<&mut TcpStream> {
        match self {
            Transport::Plain(s) => Ok(s),
            Transport::Tls(t) => Ok(t.tcp_mut()),
            Transport::Stream(_) | Transport::Mux(_) => Err(not_a_socket()),
        }
    }

    /// Whether this is a stream of a multiplexed backend connection.
    pub fn is_mux(&self) -> bool {
        matches!(self, Transport::Mux(_))
    }

    /// The HTTP/2 stream's queues, when this is one.
    pub fn pipe_mut(&mut self) -> Option<&mut Pipe> {
        match self {
            Transport::Stream(p) => Some(p),
            _ => None,
        }
    }

    /// TLS only: the protocol the client chose by ALPN.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Transport::Tls(t) => t.alpn(),
            _ => None,
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    pub fn is_tls(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(_) => true,
            Transport::Stream(p) => p.is_tls(),
            Transport::Mux(_) => false,
        }
    }

    /// TLS only: the handshake has not finished yet.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Stream(_) | Transport::Mux(_) => false,
            Transport::Tls(t) => t.is_handshaking(),
        }
    }

    /// TLS only: the negotiated version and cipher suite.
    pub fn tls_description(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.describe(),
            Transport::Stream(p) => p.tls_description(),
            Transport::Mux(_) => None,
        }
    }

    /// The handshake ran out of time: counted as such before the close.
    pub fn handshake_timed_out(&mut self) {
        if let Transport::Tls(t) = self {
            t.handshake_timed_out();
        }
    }

    /// Writes plaintext; fewer bytes taken than offered means the socket is full.
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(data),
            Transport::Tls(t) => t.write(data),
            Transport::Stream(p) => p.write(data),
            Transport::Mux(p) => p.lock().write(data),
        }
    }

    /// Writes a head and a body in one call where the transport can.
    #[inline]
    pub fn write_pair(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]),
            Transport::Tls(t) => t.write_pair(head, body),
            Transport::Stream(p) => p.write_pair(head, body),
            Transport::Mux(p) => p.lock().write_pair(head, body),
        }
    }

    /// Writes a head and a body, either of which may be empty (not both): one slice goes out
    /// with `write`, which costs less than a vectored write of two.
    #[inline]
    pub fn write_parts(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        if head.is_empty() {
            self.write(body)
        } else if body.is_empty() {
            self.write(head)
        } else {
            self.write_pair(head, body)
        }
    }

    /// Writes the last bytes our side will ever send, head and body as in
    /// [`write_parts`](Self::write_parts), to be followed by
    /// [`shutdown_write`](Self::shutdown_write) once all are taken. A plain socket holds them
    /// with `MSG_MORE` so the FIN rides in their segment: the client's ACK of the response
    /// and our lone FIN are two packets fewer per closing connection (a TLS record is sealed
    /// on its own and goes out as `write_parts` sends it).
    #[inline]
    pub fn write_last(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => {
                use std::os::fd::AsRawFd;
                send_more(s.as_raw_fd(), head, body)
            }
            _ => self.write_parts(head, body),
        }
    }

    /// Whether bytes the session handed over still wait below it for room in the socket.
    #[inline]
    pub fn has_pending_output(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Stream(_) | Transport::Mux(_) => false,
            Transport::Tls(t) => t.has_pending_output(),
        }
    }

    /// Sends bytes held below the session; `WouldBlock` if the socket cannot take them all.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) | Transport::Stream(_) | Transport::Mux(_) => Ok(()),
            Transport::Tls(t) => t.flush(),
        }
    }

    /// The connection is about to be dropped: TLS says close_notify if the socket takes it.
    pub fn close(&mut self) {
        if let Transport::Tls(t) = self {
            t.close();
        }
    }

    /// A connection parked idle became readable: whether what came changes nothing. A plain
    /// one must have nothing to read; TLS may have received session tickets or a key update,
    /// which are taken in here, but any data, alert or close makes it useless.
    pub fn idle_input_is_harmless(&mut self) -> bool {
        match self {
            Transport::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Transport::Tls(t) => {
                let mut scratch = [0u8; 64];
                matches!(t.read_some(&mut scratch), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Transport::Stream(_) | Transport::Mux(_) => false,
        }
    }

    /// TCP_QUICKACK back on (`tcp_smart_accept` turned it off for the listener's sockets): the
    /// pending ACK goes out now, and later ones without delay. A peer that waits for our ACK to
    /// send more (Nagle's algorithm holding a request's second write) must not wait for the
    /// delayed-ACK timer.
    pub fn ack_promptly(&self) {
        use std::os::fd::AsRawFd;
        if let Ok(socket) = self.socket() {
            // Failing leaves the ACKs delayed, which costs time and nothing else.
            let _ = set_socket_option(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
        }
    }

    /// Ends our direction of the stream once every byte handed over is out.
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Transport::Tls(t) => t.shutdown_write(),
            Transport::Stream(p) => p.shutdown_write(),
            Transport::Mux(p) => p.lock().shutdown_write(),
        }
    }
}

/// `sendmsg` of `head` then `body` with `MSG_MORE`: the kernel sends full segments and keeps
/// the tail for the next write or the FIN.
fn send_more(fd: std::os::fd::RawFd, head: &[u8], body: &[u8]) -> io::Result<usize> {
    // An empty slice is allowed and sends nothing.
    let mut parts = [IoSlice::new(head), IoSlice::new(body)];
    // SAFETY: msghdr is plain data; all-zero is no address, no control data, no flags.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    message.msg_iov = parts.as_mut_ptr().cast::<libc::iovec>();
    message.msg_iovlen = parts.len() as _;
    // SAFETY: the iovecs point into `head` and `body`, which outlive the call; the kernel only
    // reads them.
    let sent = unsafe { libc::sendmsg(fd, &message, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Sets an integer socket option that std and mio do not offer (`level` is `SOL_SOCKET`,
/// `IPPROTO_TCP`, ...) on socket `fd`.
pub fn set_socket_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size passed; a descriptor that is not a
    // TCP socket makes the call fail, and nothing else.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Source for Transport {
    #[inline]
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        match self {
            Transport::Plain(s) => {
                let n = s.read(buf)?;
                Ok((n, n < buf.len()))
            }
            Transport::Tls(t) => t.read_some(buf),
            Transport::Stream(p) => p.read_some(buf),
            Transport::Mux(p) => p.lock().read_some(buf),
        }
    }
}
