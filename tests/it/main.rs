//! Integration tests: real sockets on 127.0.0.1, port 0, real backends, raw clients.

mod support;

mod admin;
mod basics;
mod config;
mod discovery;
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
mod streaming;
mod strict;
mod supervisor;
mod tls;
mod upgrade;
