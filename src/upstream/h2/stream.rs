//! One exchange's stream on a multiplexed backend connection: the request bytes its exchange
//! writes, framed as the windows allow, and the response frames unframed back into the bytes the
//! exchange reads.

use std::io;

use crate::h2::assemble::Assembler;
use crate::h2::frame;
use crate::h2::framer::Framer;
use crate::h2::hpack::HeaderEncoder;
use crate::h2::ErrorCode;
use crate::http;
use crate::transport::pipe::SharedPipe;

/// The window each stream gives the backend; given back as the exchange reads the response,
/// so a slow client holds at most this much per stream.
pub const STREAM_WINDOW: u32 = 256 * 1024;

#[derive(Debug)]
pub struct MuxStream {
    /// The exchange's lease in the pool: how the reactor finds the session to wake.
    pub conn: usize,
    /// Zero until its HEADERS go out: ids are given in the order heads are sent.
    pub id: u32,
    pub pipe: SharedPipe,
    framer: Framer,
    assembler: Option<Assembler>,
    pub send_window: i64,
    /// What the backend may still send before we give window back.
    pub recv_window: i64,
    /// Response bytes the exchange had read when window was last given back.
    credited: u64,
    /// END_STREAM sent.
    pub local_done: bool,
    /// END_STREAM (or RST_STREAM) received.
    pub remote_done: bool,
    /// The exchange let go of it: reset unless finished, then forgotten.
    pub released: bool,
    /// The exchange has something new to read, or room to write.
    pub wake_readable: bool,
    pub wake_writable: bool,
}

/// What a stream's step did to the connection's send window.
pub struct Framed {
    pub data: usize,
    pub wrote: bool,
}

impl MuxStream {
    pub fn new(conn: usize, pipe: SharedPipe, tls: bool) -> MuxStream {
        MuxStream {
            conn,
            id: 0,
            pipe,
            framer: Framer::request(tls),
            assembler: None,
            send_window: 0,
            recv_window: i64::from(STREAM_WINDOW),
            credited: 0,
            local_done: false,
            remote_done: false,
            released: false,
            wake_readable: false,
            wake_writable: false,
        }
    }

    /// Whether the exchange has written a whole request head, so the stream can open.
    pub fn head_ready(&self) -> bool {
        let pipe = self.pipe.lock();
        http::find_head_end(pipe.output(), &mut 0).is_some()
    }

    /// Opens the stream as `id` and frames what the exchange has written, within `conn_window`.
    pub fn open(
        &mut self,
        id: u32,
        initial_window: u32,
        conn_window: i64,
        max_frame: u32,
        encoder: &mut HeaderEncoder,
        out: &mut Vec<u8>,
    ) -> Framed {
        self.id = id;
        self.send_window = i64::from(initial_window);
        let is_head = self.pipe.lock().output().starts_with(b"HEAD ");
        self.assembler = Some(Assembler::new(is_head));
        self.frame(conn_window, max_frame, encoder, out)
    }

    /// Frames request bytes the exchange has written, within the windows.
    pub fn frame(
        &mut self,
        conn_window: i64,
        max_frame: u32,
        encoder: &mut HeaderEncoder,
        out: &mut Vec<u8>,
    ) -> Framed {
        let mut framed = Framed {
            data: 0,
            wrote: false,
        };
        if self.id == 0 || self.local_done || self.remote_done {
            return framed;
        }
        let window = self.send_window.min(conn_window).max(0) as usize;
        let mut pipe = self.pipe.lock();
        let pulled = self.framer.pull(
            pipe.output(),
            false,
            window,
            self.id,
            max_frame,
            encoder,
            out,
        );
        match pulled {
            Ok(p) => {
                if p.consumed > 0 {
                    let was_full = !pipe.has_output_room();
                    pipe.consume_output(p.consumed);
                    self.wake_writable |= was_full || p.consumed > 0;
                }
                self.send_window -= p.data as i64;
                self.local_done = self.framer.is_done();
                framed.data = p.data;
                framed.wrote = p.wrote;
            }
            Err(e) => {
                log::debug!("stream {} to an h2 backend: {}", self.id, e.0);
                drop(pipe);
                frame::write_rst_stream(out, self.id, ErrorCode::InternalError);
                self.fail(io::ErrorKind::ConnectionReset);
                framed.wrote = true;
            }
        }
        framed
    }

    /// Response bytes for the exchange; `Err` resets the stream.
    pub fn on_headers(
        &mut self,
        list: &crate::h2::hpack::HeaderList,
        end_stream: bool,
    ) -> Result<(), &'static str> {
        let Some(assembler) = &mut self.assembler else {
            return Err("HEADERS on a stream not opened");
        };
        let mut bytes = Vec::new();
        assembler
            .headers(list, end_stream, &mut bytes)
            .map_err(|e| e.0)?;
        self.pipe.lock().input_mut().extend_from_slice(&bytes);
        self.wake_readable = true;
        if end_stream {
            self.remote_done = true;
        }
        Ok(())
    }

    pub fn on_data(&mut self, data: &[u8], end_stream: bool) -> Result<(), &'static str> {
        let Some(assembler) = &mut self.assembler else {
            return Err("DATA on a stream not opened");
        };
        let mut pipe = self.pipe.lock();
        assembler
            .data(data, end_stream, pipe.input_mut())
            .map_err(|e| e.0)?;
        drop(pipe);
        self.wake_readable = true;
        if end_stream {
            self.remote_done = true;
        }
        Ok(())
    }

    /// The whole response has been handed to the exchange.
    pub fn response_complete(&self) -> bool {
        self.assembler.as_ref().is_some_and(Assembler::is_done)
    }

    /// The window to give back for response bytes the exchange has read since the last time.
    pub fn credit(&mut self) -> u32 {
        if self.remote_done || self.id == 0 {
            return 0;
        }
        let read = self.pipe.lock().read_total();
        let due = read - self.credited;
        if due < u64::from(STREAM_WINDOW / 2) {
            return 0;
        }
        self.credited = read;
        let due = due as u32;
        self.recv_window += i64::from(due);
        due
    }

    /// The exchange reads `kind` after what it already has; nothing more goes either way.
    pub fn fail(&mut self, kind: io::ErrorKind) {
        self.pipe.lock().fail(kind);
        self.local_done = true;
        self.remote_done = true;
        self.wake_readable = true;
        self.wake_writable = true;
    }
}
