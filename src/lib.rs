//! lb: an HTTP/1.1 load balancer on a single-threaded mio reactor.
pub mod config;
