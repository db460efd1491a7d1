//! HTTP/2 error codes (RFC 9113 §7) and the scope of an error: the whole connection (answered
//! with GOAWAY) or one stream (answered with RST_STREAM).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    SettingsTimeout = 0x4,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    CompressionError = 0x9,
    ConnectError = 0xa,
    EnhanceYourCalm = 0xb,
    InadequateSecurity = 0xc,
    Http11Required = 0xd,
}

/// A rule broken by the peer: what to answer, and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Error {
    Connection {
        code: ErrorCode,
        reason: &'static str,
    },
    Stream {
        stream: u32,
        code: ErrorCode,
        reason: &'static str,
    },
}

impl H2Error {
    pub fn connection(code: ErrorCode, reason: &'static str) -> H2Error {
        H2Error::Connection { code, reason }
    }

    pub fn stream(stream: u32, code: ErrorCode, reason: &'static str) -> H2Error {
        H2Error::Stream {
            stream,
            code,
            reason,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            H2Error::Connection { code, .. } | H2Error::Stream { code, .. } => *code,
        }
    }
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H2Error::Connection { code, reason } => {
                write!(f, "connection error {code:?}: {reason}")
            }
            H2Error::Stream {
                stream,
                code,
                reason,
            } => write!(f, "stream {stream} error {code:?}: {reason}"),
        }
    }
}
