//! The management thread: the admin API (state, events, metrics, runtime changes) and the
//! dashboard, on the `admin` address.
//!
//! It is deliberately plain: blocking sockets, a thread per admin connection (there are few,
//! see `server`, which also stops them), JSON by serde_json. It reads the shared counters directly and asks the reactor for every
//! change through the reactor's command channel and waker; the reactor never waits on it.
//! Server-Sent Events are fanned out by the `sse` module, with a bounded queue per listener.

mod http;
mod metrics;
mod pools;
mod server;
mod sse;
mod state;

pub use server::{spawn, AdminHandle};

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use log::debug;
use serde_json::{json, Value};

use crate::balance::consistent_hash::MAX_HASH_WEIGHT;
use crate::config::{BackendConfig, Config, HealthConfig, DEFAULT_POOL};
use crate::events::EventBus;
use crate::reactor::{Change, Command, Handle};
use crate::route::Published;
use crate::stats::Totals;
use crate::transport::tls::TlsAcceptor;
use crate::upstream::Backends;

use self::http::{read_request, respond, respond_head, AdminRequest};

/// How long the management thread waits for the reactor to apply a change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The configuration the admin API reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub algorithm: String,
    pub retries: u32,
    pub health: HealthConfig,
}

/// Everything the management thread reads or talks to.
pub struct Admin {
    pub backends: Arc<Backends>,
    pub events: Arc<EventBus>,
    pub totals: Arc<Totals>,
    pub reactor: Handle,
    pub summary: Summary,
    pub token: Option<String>,
    /// The HTTPS listener's TLS side, when `[tls]` is configured.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The routes in effect (the reactors replace them on reload).
    pub routes: Arc<Published>,
}

impl Admin {
    pub fn new(
        config: &Config,
        backends: Arc<Backends>,
        events: Arc<EventBus>,
        totals: Arc<Totals>,
        reactor: Handle,
    ) -> Admin {
        Admin {
            backends,
            events,
            totals,
            reactor,
            summary: Summary {
                listen: config.listen,
                admin: config.admin,
                algorithm: config.algorithm.to_string(),
                retries: config.retries,
                health: config.health.clone(),
            },
            token: config.admin_token.clone(),
            tls: None,
            routes: Arc::new(Published::new(&config.routes)),
        }
    }

    /// Shows the routes a reload puts in effect, rather than those of `config` at startup.
    pub fn with_routes(mut self, routes: Arc<Published>) -> Admin {
        self.routes = routes;
        self
    }

    /// Shows the TLS listener's settings, certificates and handshake counters.
    pub fn with_tls(mut self, tls: Option<Arc<TlsAcceptor>>) -> Admin {
        self.tls = tls;
        self
    }
}

fn serve(mut stream: TcpStream, admin: &Admin, hub: &sse::Hub) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let request = match read_request(&mut stream) {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(status) => {
            let _ = respond_json(
                &mut stream,
                status,
                &json!({ "error": "malformed request" }),
            );
            linger(&mut stream);
            return;
        }
    };
    debug!("admin {} {}", request.method, request.path);
    if request.method == "GET" && request.path == "/api/events" {
        hub.serve(stream);
        return;
    }
    // HEAD is GET without the body (RFC 9110 §9.3.2).
    let head_only = request.method == "HEAD";
    let request = if head_only {
        AdminRequest {
            method: "GET".to_string(),
            ..request
        }
    } else {
        request
    };
    let (status, content_type, body) = route(&request, admin);
    let _ = if head_only {
        respond_head(&mut stream, status, content_type, body.len())
    } else {
        respond(&mut stream, status, content_type, &body)
    };
}

/// After answering a request whose body was not read (too large, malformed), reads and drops
/// what the client still sends, for a bounded time: closing with unread bytes would reset the
/// connection and could destroy the answer before the client reads it.
fn linger(stream: &mut TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 16 * 1024];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Answers one request: (status, content type, body).
fn route(request: &AdminRequest, admin: &Admin) -> (u16, &'static str, Vec<u8>) {
    let path = request.path.as_str();
    let method = request.method.as_str();
    if method == "OPTIONS" {
        return (204, "text/plain", Vec::new());
    }
    let mutating = matches!(method, "POST" | "DELETE" | "PUT" | "PATCH");
    if mutating && !authorized(request, admin) {
        return json_answer(401, &json!({ "error": "missing or wrong bearer token" }));
    }
    // Backend names may contain characters that a client must percent-encode in a path
    // (`/`, `#`, `%`, non-ASCII...): each segment is decoded after splitting, so an encoded
    // slash stays part of a name.
    let decoded: Option<Vec<String>> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let Some(decoded) = decoded else {
        return json_answer(
            400,
            &json!({ "error": format!("bad percent-encoding in {path:?}") }),
        );
    };
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (method, segments.as_slice()) {
        ("GET", [""]) | ("GET", ["index.html"]) => (
            200,
            "text/html; charset=utf-8",
            DASHBOARD_HTML.as_bytes().to_vec(),
        ),
        (
            "GET",
            [script @ ("util.js" | "charts.js" | "log.js" | "timeline.js" | "pools.js" | "app.js")],
        ) => (
            200,
            "text/javascript; charset=utf-8",
            match *script {
                "util.js" => DASHBOARD_UTIL_JS,
                "charts.js" => DASHBOARD_CHARTS_JS,
                "log.js" => DASHBOARD_LOG_JS,
                "timeline.js" => DASHBOARD_TIMELINE_JS,
                "pools.js" => DASHBOARD_POOLS_JS,
                _ => DASHBOARD_JS,
            }
            .as_bytes()
            .to_vec(),
        ),
        ("GET", ["style.css"]) => (
            200,
            "text/css; charset=utf-8",
            DASHBOARD_CSS.as_bytes().to_vec(),
        ),
        ("GET", ["api", "state"]) => json_answer(200, &state::document(admin)),
        // For an L4 tier's health check: 503 while draining takes this instance out of its
        // rotation before the listener closes.
        ("GET", ["api", "health"]) => {
            if admin.totals.draining.load(Ordering::Relaxed) {
                json_answer(503, &json!({ "status": "draining" }))
            } else {
                json_answer(200, &json!({ "status": "ready" }))
            }
        }
        ("GET", ["metrics"]) => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(admin).into_bytes(),
        ),
        ("POST", ["api", "backends", name, "drain"]) => {
            change(admin, Change::Drain((*name).to_string()))
        }
        ("POST", ["api", "backends", name, "enable"]) => {
            change(admin, Change::Enable((*name).to_string()))
        }
        ("DELETE", ["api", "backends", name]) => change(admin, Change::Remove((*name).to_string())),
        ("POST", ["api", "backends"]) => match parse_new_backend(&request.body, None) {
            Ok((pool, config)) => change(admin, Change::Add(pool, config)),
            Err(message) => json_answer(400, &json!({ "error": message })),
        },
        // The same within a pool: a backend of another pool is not found here.
        ("POST", ["api", "pools", pool, "backends"]) => {
            match parse_new_backend(&request.body, Some(pool)) {
                Ok((pool, config)) => change(admin, Change::Add(pool, config)),
                Err(message) => json_answer(400, &json!({ "error": message })),
            }
        }
        ("POST", ["api", "pools", pool, "backends", name, "drain"]) => {
            in_pool(admin, pool, name, Change::Drain)
        }
        ("POST", ["api", "pools", pool, "backends", name, "enable"]) => {
            in_pool(admin, pool, name, Change::Enable)
        }
        ("DELETE", ["api", "pools", pool, "backends", name]) => {
            in_pool(admin, pool, name, Change::Remove)
        }
        (_, ["api", ..]) | (_, ["metrics"]) => json_answer(
            404,
            &json!({ "error": format!("no route for {method} {path}") }),
        ),
        _ => (404, "text/plain", b"not found\n".to_vec()),
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // from_str_radix alone would take a sign ("%+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn authorized(request: &AdminRequest, admin: &Admin) -> bool {
    let Some(token) = &admin.token else {
        return true;
    };
    let Some(value) = &request.authorization else {
        return false;
    };
    // RFC 9110 §11.1: the scheme name is case-insensitive ("bearer" is as good as "Bearer"),
    // and one or more spaces separate it from the credentials.
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return false;
    }
    let given = given.trim_start_matches(' ');
    // Compare without stopping at the first difference, so timing tells nothing.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `change` for backend `name` if it is in pool `pool`; 404 otherwise.
fn in_pool(
    admin: &Admin,
    pool: &str,
    name: &str,
    make: fn(String) -> Change,
) -> (u16, &'static str, Vec<u8>) {
    let Some(index) = admin.backends.pool_index(pool) else {
        return json_answer(404, &json!({ "error": format!("no pool named {pool:?}") }));
    };
    match admin.backends.find(name) {
        Some((_, b)) if b.pool == index => change(admin, make(name.to_string())),
        _ => json_answer(
            404,
            &json!({ "error": format!("no backend named {name:?} in pool {pool:?}") }),
        ),
    }
}

fn change(admin: &Admin, change: Change) -> (u16, &'static str, Vec<u8>) {
    let (reply, answer) = crossbeam_channel::bounded(1);
    admin.reactor.send(Command::Change(change, reply));
    match answer.recv_timeout(CHANGE_TIMEOUT) {
        Ok(Ok(index)) => match admin.backends.get(index) {
            Some(backend) => json_answer(
                200,
                &state::backend_json(admin, &admin.backends.pools(), &backend),
            ),
            None => json_answer(500, &json!({ "error": "backend vanished" })),
        },
        Ok(Err(crate::upstream::ChangeError::NotFound(name))) => json_answer(
            404,
            &json!({ "error": format!("no backend named {name:?}") }),
        ),
        Ok(Err(crate::upstream::ChangeError::Duplicate(name))) => json_answer(
            409,
            &json!({ "error": format!("a backend named {name:?} already exists") }),
        ),
        Ok(Err(crate::upstream::ChangeError::NoPool(name))) => {
            json_answer(404, &json!({ "error": format!("no pool named {name:?}") }))
        }
        Err(_) => json_answer(503, &json!({ "error": "the balancer did not answer" })),
    }
}

/// `{"name", "address", "weight"?, "backup"?, "pool"?}`; the pool in the path, if any, wins
/// over the body's, which defaults to `default`.
fn parse_new_backend(
    body: &[u8],
    path_pool: Option<&str>,
) -> Result<(String, BackendConfig), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let pool = match (path_pool, value.get("pool")) {
        (Some(pool), _) => pool.to_string(),
        (None, None | Some(Value::Null)) => DEFAULT_POOL.to_string(),
        (None, Some(Value::String(pool))) => pool.clone(),
        (None, Some(_)) => return Err("\"pool\" must be a string".into()),
    };
    let backup = match value.get("backup") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"backup\" must be true or false".into()),
    };
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or("\"name\" (a string) is required")?;
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("\"name\" must be 1 to 64 visible ASCII characters".into());
    }
    let address = value
        .get("address")
        .and_then(Value::as_str)
        .ok_or("\"address\" (a string like \"127.0.0.1:8005\") is required")?;
    let address = address
        .to_socket_addrs()
        .map_err(|e| format!("\"address\" {address:?} does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("\"address\" {address:?} resolves to nothing"))?;
    if address.port() == 0 {
        return Err("\"address\" needs a port other than 0".into());
    }
    let weight = match value.get("weight") {
        None | Some(Value::Null) => 1,
        Some(w) => w
            .as_u64()
            .filter(|&w| (1..=u64::from(MAX_HASH_WEIGHT)).contains(&w))
            .ok_or("\"weight\" must be a whole number from 1 to 256")? as u32,
    };
    Ok((
        pool,
        BackendConfig {
            name: name.to_string(),
            address,
            weight,
            tls: None,
            backup,
        },
    ))
}

fn json_answer(status: u16, value: &Value) -> (u16, &'static str, Vec<u8>) {
    (status, "application/json", value.to_string().into_bytes())
}

fn respond_json(stream: &mut impl Write, status: u16, value: &Value) -> io::Result<()> {
    respond(
        stream,
        status,
        "application/json",
        value.to_string().as_bytes(),
    )
}

/// The dashboard is compiled in, so a deployed `lb` serves it without the source tree.
const DASHBOARD_HTML: &str = include_str!("../../frontend/index.html");
const DASHBOARD_JS: &str = include_str!("../../frontend/app.js");
const DASHBOARD_UTIL_JS: &str = include_str!("../../frontend/util.js");
const DASHBOARD_CHARTS_JS: &str = include_str!("../../frontend/charts.js");
const DASHBOARD_LOG_JS: &str = include_str!("../../frontend/log.js");
const DASHBOARD_TIMELINE_JS: &str = include_str!("../../frontend/timeline.js");
const DASHBOARD_POOLS_JS: &str = include_str!("../../frontend/pools.js");
const DASHBOARD_CSS: &str = include_str!("../../frontend/style.css");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("web%2F1").as_deref(), Some("web/1"));
        assert_eq!(percent_decode("caf%C3%a9").as_deref(), Some("café"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "%+1", "%FF", "a%C3"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn new_backend_bodies_are_validated() {
        let ok = parse_new_backend(
            br#"{"name":"b4","address":"127.0.0.1:9004","weight":3}"#,
            None,
        );
        assert_eq!(
            ok.map(|(pool, c)| (pool, c.name, c.weight, c.backup)),
            Ok(("default".to_string(), "b4".to_string(), 3, false))
        );
        let ok = parse_new_backend(
            br#"{"name":"b5","address":"127.0.0.1:9005","pool":"api","backup":true}"#,
            None,
        );
        assert_eq!(
            ok.map(|(pool, c)| (pool, c.backup)),
            Ok(("api".to_string(), true))
        );
        let ok = parse_new_backend(
            br#"{"name":"b5","address":"127.0.0.1:9005","pool":"api"}"#,
            Some("www"),
        );
        assert_eq!(ok.map(|(pool, _)| pool), Ok("www".to_string()));
        for bad in [
            &br#"not json"#[..],
            br#"{"address":"127.0.0.1:1"}"#,
            br#"{"name":"b","address":"nowhere"}"#,
            br#"{"name":"b","address":"127.0.0.1:0"}"#,
            br#"{"name":"a b","address":"127.0.0.1:1"}"#,
            br#"{"name":"b","address":"127.0.0.1:1","weight":0}"#,
            br#"{"name":"b","address":"127.0.0.1:1","weight":"x"}"#,
            br#"{"name":"b","address":"127.0.0.1:1","weight":257}"#,
            br#"{"name":"b","address":"127.0.0.1:1","pool":1}"#,
            br#"{"name":"b","address":"127.0.0.1:1","backup":"yes"}"#,
        ] {
            assert!(
                parse_new_backend(bad, None).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
