//! TLS over a non-blocking socket, driven by the reactor: rustls as a state machine fed with
//! what the socket gives (`read_tls`, `process_new_packets`) and emptied into it (`write_tls`).
//!
//! The stream keeps the transport's two promises (see [`crate::transport`]): a read says the
//! socket is drained only when the socket itself came up short and rustls holds no plaintext
//! left over; a write takes fewer plaintext bytes than offered only when the socket is full. What
//! rustls holds is bounded: at most one buffer limit of records waiting for the socket, and the
//! 16 KiB of decrypted bytes it keeps at most.
//!
//! [`acceptor`] builds the server side (certificates, versions, resumption) and counts
//! handshakes; [`certs`] loads certificates and picks one by SNI.

pub mod acceptor;
pub mod certs;
pub mod connector;
pub mod provider;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::Connection;

pub use acceptor::{HandshakeFailure, TlsAcceptor, TlsStats};

/// Most TLS record bytes waiting for the socket: writes stop taking plaintext beyond it.
const SEND_LIMIT: usize = 64 * 1024;

/// Socket reads one `read_some` makes while they bring no plaintext (handshake messages,
/// tickets, records split across reads).
const MAX_READS_PER_CALL: usize = 8;

/// The first byte of a TLS handshake record; a plain HTTP request starts with a method's letter.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that spoke plain HTTP to the TLS port is told before the close (as nginx does).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
    Content-Type: text/plain\r\n\
    Content-Length: 50\r\n\
    Connection: close\r\n\
    X-LB-Error: plain-http-to-tls-port\r\n\r\n\
    This port speaks HTTPS: use https:// to reach it.\n";

pub struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// Where a server connection's handshakes are counted.
    stats: Option<Arc<TlsStats>>,
    /// The handshake was still running at the last look: its end is counted once.
    handshaking: bool,
    /// The first byte the peer sent, to recognise plain HTTP.
    first_byte: Option<u8>,
    /// Our close_notify is queued: the TCP write side closes once it is out.
    shut_after_flush: bool,
    write_shut: bool,
}

/// A socket reader that remembers whether the socket came up short (its queue is empty).
struct Tracked<'a> {
    tcp: &'a mut TcpStream,
    drained: bool,
    first_byte: &'a mut Option<u8>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tcp.read(buf) {
            Ok(n) => {
                if n < buf.len() {
                    self.drained = true;
                }
                if self.first_byte.is_none() && n > 0 {
                    *self.first_byte = Some(buf[0]);
                }
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.drained = true;
                }
                Err(e)
            }
        }
    }
}

impl TlsStream {
    /// The server side of a connection just accepted.
    pub fn server(tcp: TcpStream, conn: rustls::ServerConnection, stats: Arc<TlsStats>) -> Self {
        let mut conn = Connection::Server(conn);
        conn.set_buffer_limit(Some(SEND_LIMIT));
        TlsStream {
            tcp,
            conn,
            stats: Some(stats),
            handshaking: true,
            first_byte: None,
            shut_after_flush: false,
            write_shut: false,
        }
    }

    /// The client side of a connection to a backend; its first flight goes out with the first
    /// write (rustls holds request bytes until the handshake is done).
    pub fn client(tcp: TcpStream, conn: rustls::ClientConnection) -> Self {
        let mut conn = Connection::Client(conn);
        conn.set_buffer_limit(Some(SEND_LIMIT));
        TlsStream {
            tcp,
            conn,
            stats: None,
            handshaking: true,
            first_byte: None,
            shut_after_flush: false,
            write_shut: false,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The protocol chosen by ALPN, once the handshake is done.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The negotiated version and cipher suite, once the handshake is done.
    pub fn describe(&self) -> Option<(&'static str, &'static str)> {
        let version = self.conn.protocol_version()?;
        let suite = self.conn.negotiated_cipher_suite()?;
        Some((
            acceptor::version_name(version),
            suite.suite().as_str().unwrap_or("unknown"),
        ))
    }

    /// Reads plaintext; `(0, _)` is the end of the stream (a close_notify, or the peer's close
    /// without one, which HTTP/1 framing makes safe to treat alike). `WouldBlock` comes only
    /// from the socket itself: a short read that brought no plaintext may have a FIN behind it,
    /// which no new edge would announce.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut drained = false;
        for _ in 0..MAX_READS_PER_CALL {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok((n, n == 0 || (drained && n < buf.len()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.handshake_ended(Some(HandshakeFailure::Closed));
                    return Ok((0, true));
                }
                Err(e) => return Err(e),
            }
            let mut source = Tracked {
                tcp: &mut self.tcp,
                drained: false,
                first_byte: &mut self.first_byte,
            };
            let result = self.conn.read_tls(&mut source);
            drained = source.drained;
            match result {
                Ok(0) => {
                    // The end of the stream; rustls tells below whether it was clean.
                    drained = true;
                }
                Ok(_) => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.handshake_ended(Some(HandshakeFailure::Closed));
                    }
                    return Err(e);
                }
            }
            if let Err(error) = self.conn.process_new_packets() {
                return Err(self.refuse(error));
            }
            if self.handshaking && !self.conn.is_handshaking() {
                self.handshake_ended(None);
            }
            // Handshake messages, tickets and alerts go out as soon as rustls has them; if the
            // socket is full they wait for the next writable edge.
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // Records that carry no plaintext kept coming: the caller reads again after giving
        // others a turn, rather than this peer holding the reactor.
        Err(io::ErrorKind::Interrupted.into())
    }

    /// A protocol error: the alert rustls queued goes out (or, to a client that spoke plain
    /// HTTP, a plain answer it can read), and the connection is done.
    fn refuse(&mut self, error: rustls::Error) -> io::Error {
        let plain_http = self.handshaking
            && self.stats.is_some()
            && self
                .first_byte
                .is_some_and(|b| b != HANDSHAKE_RECORD && b.is_ascii_uppercase());
        if plain_http {
            let _ = self.tcp.write(PLAIN_HTTP_ANSWER);
            let _ = self.tcp.shutdown(Shutdown::Write);
            self.handshake_ended(Some(HandshakeFailure::PlainHttp));
        } else {
            let _ = self.flush();
            self.handshake_ended(Some(HandshakeFailure::from_error(&error)));
        }
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    /// Counts the handshake's end, once: a success (`None`) or why it failed.
    fn handshake_ended(&mut self, failure: Option<HandshakeFailure>) {
        if !self.handshaking {
            return;
        }
        self.handshaking = false;
        if let Some(stats) = &self.stats {
            match failure {
                None => stats.record_success(&self.conn),
                Some(reason) => stats.record_failure(reason),
            }
        }
    }

    /// The handshake took longer than allowed.
    pub fn handshake_timed_out(&mut self) {
        self.handshake_ended(Some(HandshakeFailure::Timeout));
    }

    /// Encrypts and sends plaintext; stops taking it only when the socket is full.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush()?;
        let mut taken = 0;
        while taken < data.len() {
            let n = self.conn.writer().write(&data[taken..])?;
            taken += n;
            match self.flush() {
                Ok(()) if n > 0 => {}
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && taken > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(taken)
    }

    /// A head and a body: in one record where both fit, which spares a record's overhead and
    /// an encryption for the common small response.
    pub fn write_pair(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        self.flush()?;
        let n = self
            .conn
            .writer()
            .write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)])?;
        match self.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => return Ok(n),
            Err(e) => return Err(e),
        }
        if n < head.len() + body.len() {
            // The buffer limit, not the socket, stopped it: go on as `write` would.
            let (rest_head, rest_body) = if n < head.len() {
                (&head[n..], body)
            } else {
                (&[][..], &body[n - head.len()..])
            };
            let more = if rest_head.is_empty() {
                self.write(rest_body)
            } else {
                self.write(rest_head)
            };
            return match more {
                Ok(m) => Ok(n + m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
                Err(e) => Err(e),
            };
        }
        Ok(n)
    }

    pub fn has_pending_output(&self) -> bool {
        self.conn.wants_write() || self.shut_after_flush
    }

    /// Sends what rustls holds; `WouldBlock` when the socket is full before the end.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.shut_after_flush {
            self.shut_after_flush = false;
            self.write_shut = true;
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Ends our direction: a close_notify, then the TCP half-close once it is out.
    pub fn shutdown_write(&mut self) {
        if self.write_shut || self.shut_after_flush {
            return;
        }
        self.conn.send_close_notify();
        self.shut_after_flush = true;
        let _ = self.flush();
    }

    /// The connection is being dropped: a close_notify if the socket takes it at once.
    pub fn close(&mut self) {
        if self.handshaking {
            self.handshake_ended(Some(HandshakeFailure::Closed));
        }
        if !self.write_shut {
            self.conn.send_close_notify();
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_has_the_length_it_says() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
