//! HTTP/2 to clients (issue #13), driven by the reactor like the HTTP/1 path: no async runtime.
//!
//! Built bottom up. So far: the frame layer ([`frame`]: every frame type as received, checked
//! against RFC 9113 §6, and the frames a server sends) and the error codes and scopes
//! ([`error`]). The connection's stream states, flow control, HPACK and the mapping of each
//! stream onto a backend exchange come next.

pub mod assemble;
pub mod error;
pub mod frame;
pub mod framer;
pub mod hpack;
pub mod request;

#[cfg(test)]
mod tests;

pub use error::{ErrorCode, H2Error};
pub use frame::{next_frame, Frame, FrameHeader, Setting};

/// Fields that describe one HTTP/1 connection and that HTTP/2 does not carry (RFC 9113
/// §8.2.2): refused from clients, dropped from what goes out and from backends' answers.
pub const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

/// What a client sends first on an HTTP/2 connection (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
