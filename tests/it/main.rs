//! Integration tests: real sockets on 127.0.0.1, port 0, real backends, raw clients.

mod support;

mod access_log;
mod acks;
mod admin;
mod basics;
mod churn;
mod config;
mod discovery;
mod early;
mod errors;
mod failover;
mod fleet;
mod h2;
mod lifecycle;
mod limits;
mod pools;
mod proxy_protocol;
mod routing;
mod semantics;
mod spin;
mod streaming;
mod strict;
mod supervisor;
mod tls;
mod upgrade;
