//! What each frame a client sends does to the connection and its streams (RFC 9113 §5–6).

use super::{Ctx, H2Error, H2Session, PendingBlock, MAX_CONTINUATIONS, RECENT_STREAMS};
use crate::h2::frame::{self, Frame, MAX_WINDOW};
use crate::h2::ErrorCode;

fn protocol(reason: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::ProtocolError, reason)
}

impl H2Session {
    pub(super) fn on_frame(&mut self, f: Frame, ctx: &mut Ctx) -> Result<(), H2Error> {
        if !self.settings_seen && !matches!(f, Frame::Settings { ack: false, .. }) {
            return Err(protocol("the preface must end with SETTINGS"));
        }
        if let Some(p) = &self.pending_block {
            // RFC 9113 §6.10: nothing may come between a HEADERS and its CONTINUATIONs.
            match f {
                Frame::Continuation { stream, .. } if stream == p.stream => {}
                _ => return Err(protocol("frame inside a header block")),
            }
        }
        match f {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(ctx, stream, data, end_stream, flow_len),
            Frame::Headers {
                stream,
                fragment,
                end_stream,
                end_headers,
            } => {
                if stream % 2 == 0 {
                    return Err(protocol("HEADERS on a server stream id"));
                }
                if end_headers {
                    self.on_header_block(ctx, stream, fragment, end_stream)
                } else {
                    self.pending_block = Some(PendingBlock {
                        stream,
                        block: fragment.to_vec(),
                        end_stream,
                        frames: 1,
                    });
                    self.check_block_size()
                }
            }
            Frame::Continuation {
                fragment,
                end_headers,
                stream,
            } => {
                let Some(p) = &mut self.pending_block else {
                    return Err(protocol("CONTINUATION without HEADERS"));
                };
                p.block.extend_from_slice(fragment);
                p.frames += 1;
                if p.frames > MAX_CONTINUATIONS {
                    return Err(H2Error::connection(
                        ErrorCode::EnhanceYourCalm,
                        "CONTINUATION flood",
                    ));
                }
                self.check_block_size()?;
                if end_headers {
                    if let Some(p) = self.pending_block.take() {
                        return self.on_header_block(ctx, stream, &p.block, p.end_stream);
                    }
                }
                Ok(())
            }
            Frame::Priority { .. } => self.charge_control(ctx.now),
            Frame::RstStream { stream, .. } => self.on_rst_stream(ctx, stream),
            Frame::Settings { ack: true, .. } => {
                self.settings_acked = true;
                Ok(())
            }
            Frame::Settings {
                ack: false,
                payload,
            } => self.on_settings(ctx, payload),
            Frame::Ping { ack: true, .. } => Ok(()),
            Frame::Ping { ack: false, data } => {
                self.charge_control(ctx.now)?;
                frame::write_ping_ack(&mut self.out, &data);
                Ok(())
            }
            Frame::GoAway { .. } => {
                // The client opens nothing more; what it has opened is still answered.
                self.peer_goaway = true;
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
            Frame::Unknown { .. } => self.charge_control(ctx.now),
        }
    }

    /// A header block may take what a header list of the allowed size could compress to,
    /// with room for an encoder that does not compress at all.
    fn check_block_size(&self) -> Result<(), H2Error> {
        let max = self
            .config
            .max_header_list_size
            .saturating_mul(2)
            .max(16_384);
        match &self.pending_block {
            Some(p) if p.block.len() > max => Err(H2Error::connection(
                ErrorCode::EnhanceYourCalm,
                "header block too large",
            )),
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, ctx: &mut Ctx, payload: &[u8]) -> Result<(), H2Error> {
        if self.settings_seen {
            self.charge_control(ctx.now)?;
        }
        self.settings_seen = true;
        for s in frame::settings(payload) {
            match s.id {
                frame::SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_peer_table_size(s.value),
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let delta = i64::from(s.value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(s.value);
                    for st in &mut self.streams {
                        st.send_window += delta;
                        if st.send_window > i64::from(MAX_WINDOW) {
                            return Err(H2Error::connection(
                                ErrorCode::FlowControlError,
                                "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                            ));
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = s.value,
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.out);
        Ok(())
    }

    fn on_window_update(&mut self, stream: u32, increment: u32) -> Result<(), H2Error> {
        if stream == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(H2Error::connection(
                    ErrorCode::FlowControlError,
                    "connection window above 2^31-1",
                ));
            }
            return Ok(());
        }
        if stream > self.last_stream {
            return Err(protocol("WINDOW_UPDATE on an idle stream"));
        }
        if let Some(s) = self.streams.iter_mut().find(|s| s.id == stream) {
            s.send_window += i64::from(increment);
            if s.send_window > i64::from(MAX_WINDOW) {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::FlowControlError,
                    "stream window above 2^31-1",
                ));
            }
        }
        Ok(())
    }

    fn on_rst_stream(&mut self, ctx: &mut Ctx, stream: u32) -> Result<(), H2Error> {
        if stream > self.last_stream {
            return Err(protocol("RST_STREAM on an idle stream"));
        }
        let Some(i) = self.streams.iter().position(|s| s.id == stream) else {
            return Ok(());
        };
        let mut s = self.streams.swap_remove(i);
        let unanswered = !s.response.is_done();
        s.abort(ctx);
        remember(&mut self.closed_streams, stream);
        if unanswered {
            // CVE-2023-44487: a stream opened and reset at once costs us a backend exchange
            // and the client nothing; only so many may be reset before they are answered.
            self.spend_reset()?;
        }
        Ok(())
    }

    pub(super) fn spend_reset(&mut self) -> Result<(), H2Error> {
        match self.reset_tokens.checked_sub(1) {
            Some(left) => {
                self.reset_tokens = left;
                Ok(())
            }
            None => Err(H2Error::connection(
                ErrorCode::EnhanceYourCalm,
                "too many streams reset (rapid reset)",
            )),
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx,
        stream: u32,
        data: &[u8],
        end_stream: bool,
        flow_len: u32,
    ) -> Result<(), H2Error> {
        let flow = i64::from(flow_len);
        if flow > self.recv_window {
            return Err(H2Error::connection(
                ErrorCode::FlowControlError,
                "DATA beyond the connection window",
            ));
        }
        self.recv_window -= flow;
        self.recv_unacked += flow;
        if data.is_empty() && !end_stream {
            self.charge_control(ctx.now)?;
        }
        let Some(s) = self.streams.iter_mut().find(|s| s.id == stream) else {
            if stream > self.last_stream {
                return Err(protocol("DATA on an idle stream"));
            }
            if self.reset_streams.contains(&stream) {
                return Ok(());
            }
            return Err(H2Error::stream(
                stream,
                ErrorCode::StreamClosed,
                "DATA on a closed stream",
            ));
        };
        s.receive_data(ctx.now, data, end_stream, flow)
    }

    fn on_header_block(
        &mut self,
        ctx: &mut Ctx,
        stream: u32,
        block: &[u8],
        end_stream: bool,
    ) -> Result<(), H2Error> {
        // Decoded whatever becomes of the stream: the table must stay in step.
        let list = self
            .decoder
            .decode(block, self.config.max_header_list_size)?;
        if let Some(s) = self.streams.iter_mut().find(|s| s.id == stream) {
            return s.receive_trailers(&list, end_stream);
        }
        if stream <= self.last_stream {
            if self.reset_streams.contains(&stream) {
                return Ok(());
            }
            if self.closed_streams.contains(&stream) {
                return Err(H2Error::connection(
                    ErrorCode::StreamClosed,
                    "HEADERS on a closed stream",
                ));
            }
            return Err(protocol("stream id lower than one already used"));
        }
        self.last_stream = stream;
        if self.goaway_last.is_some() {
            // After our GOAWAY, new streams are ignored (RFC 9113 §6.8).
            return Ok(());
        }
        self.open_stream(ctx, stream, list, end_stream)
    }
}

pub(super) fn remember(ring: &mut std::collections::VecDeque<u32>, stream: u32) {
    if ring.len() == RECENT_STREAMS {
        ring.pop_front();
    }
    ring.push_back(stream);
}
