//! The frames a backend sends on a multiplexed connection: settings, pings, GOAWAY, windows,
//! resets, and the response heads, bodies and trailers handed to each stream's exchange.

use std::io;

use log::{debug, warn};

use super::stream::MuxStream;
use super::{Mux, State, CONNECTION_WINDOW, MAX_FRAME, MAX_HEADER_LIST};
use crate::h2::frame;
use crate::h2::{next_frame, ErrorCode, Frame, H2Error};

impl Mux {
    /// Handles every whole frame read so far.
    pub(super) fn process(&mut self) -> Result<(), H2Error> {
        let mut at = 0;
        let input = std::mem::take(&mut self.input);
        let result = loop {
            match next_frame(&input[at..], MAX_FRAME) {
                Ok(Some((f, n))) => {
                    at += n;
                    if let Err(e) = self.on_frame(f) {
                        break Err(e);
                    }
                    if self.state == State::Dead {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let mut input = input;
        input.drain(..at);
        self.input = input;
        result
    }

    fn on_frame(&mut self, f: Frame) -> Result<(), H2Error> {
        if let Some((stream, _, _)) = &self.block {
            let continues = matches!(f, Frame::Continuation { stream: s, .. } if s == *stream);
            if !continues {
                return Err(H2Error::connection(
                    ErrorCode::ProtocolError,
                    "a header block was interrupted",
                ));
            }
        }
        match f {
            Frame::Settings { ack: true, .. } => {}
            Frame::Settings {
                ack: false,
                payload,
            } => {
                self.apply_settings(payload)?;
                self.settings_received = true;
                frame::write_settings_ack(&mut self.output);
            }
            Frame::Ping { ack: false, data } => frame::write_ping_ack(&mut self.output, &data),
            Frame::Ping { ack: true, .. } | Frame::Priority { .. } | Frame::Unknown { .. } => {}
            Frame::GoAway {
                last_stream, code, ..
            } => self.on_goaway(last_stream, code),
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(H2Error::connection(
                        ErrorCode::FlowControlError,
                        "connection window overflow",
                    ));
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if let Some(s) = self.stream(stream) {
                    s.send_window += i64::from(increment);
                    if s.send_window > i64::from(frame::MAX_WINDOW) {
                        frame::write_rst_stream(
                            &mut self.output,
                            stream,
                            ErrorCode::FlowControlError,
                        );
                        self.stream_failed(stream, io::ErrorKind::ConnectionReset);
                    }
                }
            }
            Frame::RstStream { stream, code } => {
                debug!(
                    "h2 backend {}: RST_STREAM {stream} code {code:#x}",
                    self.backend
                );
                let kind = if code == ErrorCode::RefusedStream as u32 {
                    io::ErrorKind::ConnectionAborted
                } else {
                    io::ErrorKind::ConnectionReset
                };
                if let Some(s) = self.stream(stream) {
                    if s.response_complete() {
                        // An answer before the whole request (RFC 9113 §8.1): nothing lost.
                        s.local_done = true;
                        s.remote_done = true;
                    } else {
                        s.fail(kind);
                    }
                }
            }
            Frame::Headers {
                stream,
                fragment,
                end_stream,
                end_headers,
            } => {
                if end_headers {
                    self.on_header_block(stream, fragment, end_stream)?;
                } else {
                    self.block = Some((stream, fragment.to_vec(), end_stream));
                }
            }
            Frame::Continuation {
                fragment,
                end_headers,
                ..
            } => {
                if let Some((_, bytes, _)) = &mut self.block {
                    bytes.extend_from_slice(fragment);
                    if bytes.len() > 2 * MAX_HEADER_LIST {
                        return Err(H2Error::connection(
                            ErrorCode::EnhanceYourCalm,
                            "header block too large",
                        ));
                    }
                }
                if end_headers {
                    if let Some((stream, bytes, end_stream)) = self.block.take() {
                        self.on_header_block(stream, &bytes, end_stream)?;
                    }
                }
            }
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len)?,
        }
        Ok(())
    }

    fn apply_settings(&mut self, payload: &[u8]) -> Result<(), H2Error> {
        for s in frame::settings(payload) {
            match s.id {
                frame::SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_peer_table_size(s.value),
                frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.peer_max_streams = s.value,
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if s.value > frame::MAX_WINDOW {
                        return Err(H2Error::connection(
                            ErrorCode::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = i64::from(s.value) - i64::from(self.peer_initial_window);
                    self.peer_initial_window = s.value;
                    for st in self.streams.iter_mut().filter(|st| st.id != 0) {
                        st.send_window += delta;
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::MIN_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&s.value) {
                        return Err(H2Error::connection(
                            ErrorCode::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = s.value;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_goaway(&mut self, last_stream: u32, code: u32) {
        if code != ErrorCode::NoError as u32 {
            warn!(
                "h2 backend {}: GOAWAY with error code {code:#x}",
                self.backend
            );
        }
        self.state = State::GoingAway;
        // Streams the backend did not take, and those never sent, may go elsewhere whatever
        // their method.
        for s in &mut self.streams {
            if s.id == 0 || s.id > last_stream {
                s.fail(io::ErrorKind::ConnectionAborted);
            }
        }
    }

    fn on_header_block(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
    ) -> Result<(), H2Error> {
        // Decoded whatever the stream's state: the table must stay in step with the backend's.
        let list = self
            .decoder
            .decode(block, MAX_HEADER_LIST)
            .map_err(|_| H2Error::connection(ErrorCode::CompressionError, "bad HPACK block"))?;
        let Some(s) = self.stream(stream) else {
            return Ok(());
        };
        if s.remote_done {
            return Ok(());
        }
        let result = if list.too_large {
            Err("response head too large")
        } else {
            s.on_headers(&list, end_stream)
        };
        if let Err(reason) = result {
            warn!("h2 backend: stream {stream}: {reason}");
            frame::write_rst_stream(&mut self.output, stream, ErrorCode::ProtocolError);
            self.stream_failed(stream, io::ErrorKind::ConnectionReset);
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
        flow_len: u32,
    ) -> Result<(), H2Error> {
        self.received += flow_len;
        if self.received >= CONNECTION_WINDOW / 2 {
            frame::write_window_update(&mut self.output, 0, self.received);
            self.received = 0;
        }
        let Some(s) = self.stream(stream) else {
            return Ok(());
        };
        if s.remote_done {
            return Ok(());
        }
        s.recv_window -= i64::from(flow_len);
        let result = if s.recv_window < 0 {
            Err("the backend overran the stream's window")
        } else {
            s.on_data(data, end_stream)
        };
        if let Err(reason) = result {
            warn!("h2 backend: stream {stream}: {reason}");
            frame::write_rst_stream(&mut self.output, stream, ErrorCode::ProtocolError);
            self.stream_failed(stream, io::ErrorKind::ConnectionReset);
        }
        Ok(())
    }

    pub(super) fn stream(&mut self, id: u32) -> Option<&mut MuxStream> {
        self.streams
            .iter_mut()
            .find(|s| s.id == id && id != 0 && !s.released)
    }

    fn stream_failed(&mut self, id: u32, kind: io::ErrorKind) {
        if let Some(s) = self.stream(id) {
            s.fail(kind);
        }
    }
}
