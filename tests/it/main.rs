//! Integration tests: real sockets on 127.0.0.1, port 0, real backends, raw clients.

mod support;

mod basics;
mod failover;
mod semantics;
mod supervisor;
mod upgrade;
