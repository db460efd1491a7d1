//! lb: an HTTP/1.1 load balancer on single-threaded mio reactors.
//!
//! # Module map
//!
//! ```text
//!  main.rs ── config ──► reactor (one per worker) ──► session ──► transport (plain TCP, TLS)
//!                 │          │   ▲                       ├──► http (h1 heads and framing, answers)
//!                 │          │   │ Command + Waker       ├──► upstream (backends, pool) ──► balance
//!                 │          │   │                       └──► events, stats
//!                 │          ▼   │
//!                 ├──► health thread ───────────┘ probe results
//!                 └──► admin (management thread) ◄── events (bounded)
//! ```
//!
//! - [`config`]: `lb.toml` and flags → a validated [`config::Config`].
//! - [`reactor`]: the event loop: listener, sessions in a slab, timers, commands from other
//!   threads. [`token`] maps mio tokens to what they stand for.
//! - [`session`]: one client connection's life, driven by readiness; [`buffer`] holds its bytes.
//! - [`transport`]: how a connection's bytes travel (plain TCP, or TLS over it), under the
//!   session's protocol.
//! - [`http`]: request and response heads ([`http::h1`]), body framing, the answers the balancer
//!   makes itself; [`h2`]: HTTP/2 to clients, being built (so far its frame layer).
//! - [`upstream`]: backends and their pools (state, counters, policies, runtime changes) and
//!   the idle connection pool; [`balance`]: the selection algorithms, sticky ids, slow start;
//!   [`route`]: the routing table, by host, path, method and header, that each request head is
//!   matched against.
//! - [`health`]: the health thread and the rise/fall rule; [`discovery`]: backends from DNS;
//!   [`threads`]: how these helper threads are stopped and joined.
//! - [`admin`]: the admin API, Server-Sent Events, Prometheus metrics and the dashboard;
//!   [`events`] and [`stats`] feed it.
//!
//! # Lexicon
//!
//! - **session**: a client connection and the exchanges on it.
//! - **exchange**: one request and its response.
//! - **backend**: a server the balancer forwards to; **up**, **down** (health), **draining** or
//!   **removed** (an operator's doing).
//! - **pool**: a named group of backends (`[[pool]]`; the top-level list is the pool `default`)
//!   with its own policy; **route**: a rule sending requests to a pool (`[[route]]`).
//! - **idle pool** ([`upstream::Pool`]): idle keep-alive connections to backends, reused across
//!   sessions.
//! - **retry**: sending a request again to the same backend (a stale pooled connection);
//!   **redispatch**: sending it to another backend.
//! - **answer**: a response the balancer makes itself (`X-LB-Error` says why).
//! - **drain**: a graceful stop (SIGTERM), or taking one backend out of rotation.

pub mod access;
pub mod admin;
pub mod balance;
pub mod buffer;
pub mod config;
pub mod discovery;
pub mod events;
pub mod h2;
pub mod health;
pub mod http;
pub mod reactor;
pub mod route;
pub mod session;
pub mod stats;
pub mod threads;
pub mod token;
pub mod transport;
pub mod upstream;
