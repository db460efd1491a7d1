//! `[http2]`: HTTP/2 to clients, offered by ALPN on the TLS listener and, with `h2c`, taken
//! with prior knowledge on the plain one.

use serde::Deserialize;
use toml::Spanned;

use super::validate::Values;
use super::ConfigError;

/// `http2.enabled`: `h2` is offered by ALPN on `[tls]` (browsers then use it).
pub const DEFAULT_HTTP2_ENABLED: bool = true;
/// `http2.h2c`: cleartext HTTP/2 with prior knowledge on the plain listener.
pub const DEFAULT_HTTP2_H2C: bool = false;
/// `http2.max_concurrent_streams` (nginx, HAProxy and RFC 9113's advice: at least 100).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// `http2.initial_window_size`: what a client may send on a stream before we ask for more;
/// the RFC's default, and the most request body held per stream.
pub const DEFAULT_INITIAL_WINDOW_SIZE: u32 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;

/// `[http2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Config {
    pub enabled: bool,
    pub h2c: bool,
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    /// The decoded header list a request may have (SETTINGS_MAX_HEADER_LIST_SIZE); larger
    /// gets 431. Defaults to `limits.max_header_bytes`.
    pub max_header_list_size: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            enabled: DEFAULT_HTTP2_ENABLED,
            h2c: DEFAULT_HTTP2_H2C,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            initial_window_size: DEFAULT_INITIAL_WINDOW_SIZE,
            max_header_list_size: super::DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp2 {
    pub enabled: Option<bool>,
    pub h2c: Option<bool>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
    pub initial_window_size: Option<Spanned<i64>>,
    pub max_header_list_size: Option<Spanned<i64>>,
}

pub(super) fn build(
    v: &Values,
    raw: &RawHttp2,
    max_header_bytes: usize,
) -> Result<Http2Config, ConfigError> {
    let window: u32 = v.int(
        "http2.initial_window_size",
        raw.initial_window_size.as_ref(),
        DEFAULT_INITIAL_WINDOW_SIZE,
        1024,
    )?;
    if let Some(w) = &raw.initial_window_size {
        if *w.get_ref() > MAX_WINDOW {
            return Err(v.fail(
                "http2.initial_window_size",
                w.span(),
                format!("must be at most {MAX_WINDOW} (2^31-1)"),
            ));
        }
    }
    Ok(Http2Config {
        enabled: raw.enabled.unwrap_or(DEFAULT_HTTP2_ENABLED),
        h2c: raw.h2c.unwrap_or(DEFAULT_HTTP2_H2C),
        max_concurrent_streams: v.int(
            "http2.max_concurrent_streams",
            raw.max_concurrent_streams.as_ref(),
            DEFAULT_MAX_CONCURRENT_STREAMS,
            1,
        )?,
        initial_window_size: window,
        max_header_list_size: v.int(
            "http2.max_header_list_size",
            raw.max_header_list_size.as_ref(),
            max_header_bytes,
            1024,
        )?,
    })
}
