//! HTTP/2 to clients: real clients (curl, nghttp), and hand-made frames (Python h2).

mod clients;
mod conformance;
