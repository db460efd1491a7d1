//! HTTP/1.1 on the wire: request and response heads (parse, validate, rewrite for forwarding)
//! and body framing (`Content-Length`, chunked, close-delimited), and what routing reads from a
//! request head.

pub mod framing;
mod partial;
pub mod request;
pub mod request_id;
pub mod response;
pub mod routing;
