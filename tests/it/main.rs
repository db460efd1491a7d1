//! Integration tests: real sockets on 127.0.0.1, port 0, real backends, raw clients.

mod support;

mod basics;
mod config;
mod errors;
mod failover;
mod lifecycle;
mod limits;
mod semantics;
mod streaming;
mod strict;
mod supervisor;
mod upgrade;
