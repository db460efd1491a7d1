//! HTTP/2 to clients (real clients: curl, nghttp; hand-made frames: Python h2) and to backends
//! (gRPC servers behind `protocol = "h2"` pools).

mod backends;
mod clients;
mod conformance;
mod upstream;
