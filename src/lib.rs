//! lb: an HTTP/1.1 load balancer on a single-threaded mio reactor.
pub mod admin;
pub mod balance;
pub mod buffer;
pub mod config;
pub mod events;
pub mod health;
pub mod http;
pub mod reactor;
pub mod session;
pub mod stats;
pub mod token;
pub mod upstream;
