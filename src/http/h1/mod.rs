//! HTTP/1.1 on the wire: request and response heads (parse, validate, rewrite for forwarding)
//! and body framing (`Content-Length`, chunked, close-delimited).

pub mod framing;
pub mod request;
pub mod response;
