//! The transport under the HTTP/1 exchange of one HTTP/2 stream: two bounded byte queues in
//! memory instead of a socket. The connection's HTTP/2 layer puts the request in (the head it
//! translated, then the body) and takes the response out to frame it; the exchange on the
//! other side reads and writes as it would on a client socket, and the same promises hold: a
//! short read means the queue is empty, and a short write means it is full.
//!
//! The same pipe, shared ([`SharedPipe`]), is the transport under an exchange whose backend is
//! reached over a multiplexed HTTP/2 connection: there the exchange writes the request and
//! reads the response, and the connection frames one and unframes the other. The connection
//! can fail the pipe: the exchange then reads the error, as it would from a socket.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::buffer::Source;

#[derive(Debug)]
pub struct Pipe {
    input: Vec<u8>,
    input_pos: usize,
    input_ended: bool,
    output: Vec<u8>,
    output_limit: usize,
    output_shut: bool,
    /// Request bytes the exchange has read: what the stream's window may give back.
    read_total: u64,
    /// The connection's TLS version and suite, for what the exchange reports.
    tls: Option<(&'static str, &'static str)>,
    /// What the exchange reads once `input` is used up, and gets from every write.
    failed: Option<io::ErrorKind>,
    /// A backend stream: its connection is up, so bytes written now go to the backend. Until
    /// then the exchange waits, as for a connect, and keeps every byte for another backend.
    open: bool,
}

/// A pipe between an exchange and the HTTP/2 backend connection that carries its stream.
#[derive(Debug, Clone)]
pub struct SharedPipe(Arc<Mutex<Pipe>>);

impl SharedPipe {
    pub fn new(output_limit: usize) -> SharedPipe {
        SharedPipe(Arc::new(Mutex::new(Pipe::new(output_limit, None))))
    }

    /// Both sides run on the reactor's thread, one at a time: the lock is never contended,
    /// and a panic while it was held cannot have left the queues torn.
    pub fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

impl Pipe {
    pub fn new(output_limit: usize, tls: Option<(&'static str, &'static str)>) -> Pipe {
        Pipe {
            input: Vec::new(),
            input_pos: 0,
            input_ended: false,
            output: Vec::new(),
            output_limit,
            output_shut: false,
            read_total: 0,
            tls,
            failed: None,
            open: false,
        }
    }

    /// The backend connection is up (see `open`).
    pub fn set_open(&mut self) {
        self.open = true;
    }

    /// Whether the exchange may write: `Ok(false)` while the connection comes up, the error
    /// once it failed.
    pub fn connect_state(&self) -> io::Result<bool> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(self.open),
        }
    }

    /// The stream failed: the exchange reads what came before, then `kind`.
    pub fn fail(&mut self, kind: io::ErrorKind) {
        self.failed.get_or_insert(kind);
    }

    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn tls_description(&self) -> Option<(&'static str, &'static str)> {
        self.tls
    }

    /// Request bytes for the exchange.
    pub fn input_mut(&mut self) -> &mut Vec<u8> {
        if self.input_pos == self.input.len() {
            self.input.clear();
            self.input_pos = 0;
        }
        &mut self.input
    }

    /// The request is complete: the exchange reads end-of-stream after it.
    pub fn end_input(&mut self) {
        self.input_ended = true;
    }

    pub fn input_ended(&self) -> bool {
        self.input_ended
    }

    /// Request bytes not yet read by the exchange.
    pub fn input_pending(&self) -> usize {
        self.input.len() - self.input_pos
    }

    pub fn read_total(&self) -> u64 {
        self.read_total
    }

    /// Response bytes waiting to be framed.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    pub fn consume_output(&mut self, n: usize) {
        self.output.drain(..n.min(self.output.len()));
    }

    /// The exchange has shut its side: no response bytes will follow those in `output`.
    pub fn output_ended(&self) -> bool {
        self.output_shut
    }

    pub fn has_output_room(&self) -> bool {
        self.output.len() < self.output_limit
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        let room = self.output_limit.saturating_sub(self.output.len());
        if room == 0 {
            return Err(would_block());
        }
        let n = room.min(data.len());
        self.output.extend_from_slice(&data[..n]);
        Ok(n)
    }

    pub fn write_pair(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        let n = self.write(head)?;
        if n < head.len() {
            return Ok(n);
        }
        Ok(n + self.write(body).unwrap_or(0))
    }

    pub fn shutdown_write(&mut self) {
        self.output_shut = true;
    }
}

impl Source for Pipe {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let pending = &self.input[self.input_pos..];
        if pending.is_empty() {
            if let Some(kind) = self.failed {
                return Err(kind.into());
            }
            return if self.input_ended {
                Ok((0, true))
            } else {
                Err(would_block())
            };
        }
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.input_pos += n;
        self.read_total += n as u64;
        Ok((n, self.input_pos == self.input.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_keep_the_socket_promises() {
        let mut p = Pipe::new(4, None);
        let mut buf = [0u8; 8];
        assert_eq!(
            p.read_some(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        p.input_mut().extend_from_slice(b"abc");
        assert_eq!(p.read_some(&mut buf[..2]).unwrap(), (2, false));
        assert_eq!(p.read_some(&mut buf).unwrap(), (1, true));
        p.end_input();
        assert_eq!(p.read_some(&mut buf).unwrap(), (0, true));
        assert_eq!(p.read_total(), 3);
        assert_eq!(p.write_pair(b"xy", b"zzz").unwrap(), 4);
        assert_eq!(p.write(b"!").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        p.consume_output(3);
        assert_eq!(p.output(), b"z");
    }
}
