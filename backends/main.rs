//! `backend`: the demo HTTP/1.1 origin server that the `lb` load balancer is
//! developed and tested against.
//!
//! It is deliberately plain std code (one thread per connection, blocking
//! sockets) so that it is an independent second implementation of the
//! protocol rather than a copy of the balancer's. Every response names the
//! backend (`X-Backend`) and the connection it arrived on
//! (`X-Backend-Connection`), which is what tests use to see how the balancer
//! spreads and reuses connections. Endpoints: `/health`, `/`, `/echo`,
//! `/sink`, `/bytes/N`, `/delay/MS`, `/status/CODE`, `/stats`, `/ws`.

mod http;
mod ws;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use clap::Parser;

use http::{query_flag, BodyError, Conn, Framing, HeadError, Request};

/// Idle limit on client sockets, so abandoned connections do not pin a
/// thread forever.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// /echo keeps the body in memory to reflect it; beyond this it is 413.
const ECHO_MAX_BODY: usize = 64 * 1024 * 1024;
/// Write size for generated bodies, and the chunk size of chunked ones.
const STREAM_CHUNK: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "backend",
    about = "Demo HTTP/1.1 backend for the lb load balancer"
)]
struct Args {
    /// TCP port to listen on; 0 picks a free one (see the startup line).
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Name reported in X-Backend, the index page and /stats.
    #[arg(long, default_value = "backend", value_parser = parse_name)]
    name: String,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Do not log one line per request to stderr.
    #[arg(long)]
    quiet: bool,
}

/// The name is copied verbatim into a header, so it must not be able to
/// break the response framing.
fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)) && s.trim() == s;
    if ok {
        Ok(s.to_owned())
    } else {
        Err("must be non-empty printable ASCII without surrounding spaces".to_owned())
    }
}

/// Process-wide state shared by all connection threads.
struct Server {
    name: String,
    quiet: bool,
    connections: AtomicU64,
    requests: AtomicU64,
}

impl Server {
    fn new(name: String, quiet: bool) -> Self {
        Server {
            name,
            quiet,
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn log(&self, method: &str, target: &str, status: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        // One pre-formatted write keeps lines from interleaving across
        // threads without holding the stderr lock while formatting.
        let line = format!("{} {} {} {}\n", self.name, method, target, status);
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind((args.bind.as_str(), args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("backend: cannot listen on {}:{}: {e}", args.bind, args.port);
            return ExitCode::FAILURE;
        }
    };
    raise_backlog(&listener);
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backend: local_addr: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        // Tests parse this line to learn the port, so it must not sit in a
        // pipe buffer. If stdout is gone nobody is waiting for it; serve
        // regardless.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}").and_then(|()| out.flush());
    }
    serve(listener, Arc::new(Server::new(args.name, args.quiet)));
    ExitCode::SUCCESS
}

/// std listens with a fixed small backlog; load tests open connections in
/// bursts and an overflowing accept queue turns into multi-second SYN
/// retransmit stalls that look like balancer latency. Re-listening on a
/// listening socket only updates the backlog (clamped to somaxconn).
fn raise_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is a valid listening socket owned by `listener`.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
}

fn serve(listener: TcpListener, server: Arc<Server>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let serial = server.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let server = Arc::clone(&server);
                let spawned = thread::Builder::new()
                    .name(format!("conn-{serial}"))
                    .spawn(move || handle_connection(stream, serial, &server));
                if let Err(e) = spawned {
                    eprintln!("backend: cannot spawn connection thread: {e}");
                }
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning on it.
                eprintln!("backend: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// 101 sent: the rest of the connection is WebSocket.
    Upgraded,
    /// The client vanished mid-exchange; just drop the socket.
    Gone,
}

/// Why a handler gave up before producing its normal response.
enum Fail {
    /// Protocol-level problem: answer with this status and close, since
    /// the request stream can no longer be trusted.
    Reject(u16),
    Gone,
}

impl From<io::Error> for Fail {
    fn from(_: io::Error) -> Self {
        Fail::Gone
    }
}

impl From<BodyError> for Fail {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed => Fail::Reject(400),
            BodyError::TooLarge => Fail::Reject(413),
            BodyError::Gone => Fail::Gone,
        }
    }
}

fn handle_connection(stream: TcpStream, serial: u64, server: &Server) {
    // Responses are written whole or in large pieces; Nagle would only
    // delay the tail of each one.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut conn = Conn::new(stream);
    loop {
        let req = match conn.read_head() {
            Ok(req) => req,
            Err(HeadError::Gone) => return,
            Err(e) => {
                let status = if matches!(e, HeadError::TooLarge) {
                    431
                } else {
                    400
                };
                let reply = Reply::closing(server, serial);
                server.log("-", "-", status);
                if reply.error(&mut conn, status).is_ok() {
                    conn.close_gracefully();
                }
                return;
            }
        };
        server.requests.fetch_add(1, Ordering::Relaxed);
        match handle_request(&mut conn, server, serial, &req) {
            Next::KeepAlive => {}
            Next::Close => return conn.close_gracefully(),
            Next::Upgraded => {
                if ws::echo(&mut conn).is_ok() {
                    conn.close_gracefully();
                }
                return;
            }
            Next::Gone => return,
        }
    }
}

fn handle_request(conn: &mut Conn, server: &Server, serial: u64, req: &Request) -> Next {
    let mut reply = Reply {
        server,
        serial,
        close: !req.wants_keep_alive(),
        http10: req.minor_version == 0,
        head_only: req.method == "HEAD",
    };
    let status = match route(conn, &mut reply, req) {
        Ok(status) => status,
        Err(Fail::Reject(status)) => {
            reply.close = true;
            if reply.error(conn, status).is_err() {
                return Next::Gone;
            }
            status
        }
        Err(Fail::Gone) => {
            server.log(&req.method, &req.target, "aborted");
            return Next::Gone;
        }
    };
    server.log(&req.method, &req.target, status);
    if status == 101 {
        Next::Upgraded
    } else if reply.close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy)]
enum BodyLen {
    Fixed(u64),
    Chunked,
    /// Ends when the connection closes.
    UntilClose,
    /// 204/304: no body and no Content-Length at all.
    Forbidden,
}

/// Per-request response settings.
struct Reply<'a> {
    server: &'a Server,
    serial: u64,
    close: bool,
    http10: bool,
    head_only: bool,
}

impl<'a> Reply<'a> {
    /// For errors before a request line could even be parsed.
    fn closing(server: &'a Server, serial: u64) -> Self {
        Reply {
            server,
            serial,
            close: true,
            http10: false,
            head_only: false,
        }
    }

    fn head(&self, status: u16, len: BodyLen, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut h = String::with_capacity(256);
        let _ = write!(h, "HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in extra {
            let _ = write!(h, "{name}: {value}\r\n");
        }
        match len {
            BodyLen::Fixed(n) => {
                let _ = write!(h, "Content-Length: {n}\r\n");
            }
            BodyLen::Chunked => h.push_str("Transfer-Encoding: chunked\r\n"),
            BodyLen::UntilClose | BodyLen::Forbidden => {}
        }
        let _ = write!(
            h,
            "X-Backend: {}\r\nX-Backend-Connection: {}\r\n",
            self.server.name, self.serial
        );
        if self.close {
            h.push_str("Connection: close\r\n");
        } else if self.http10 {
            h.push_str("Connection: keep-alive\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    /// Sends a complete response with an in-memory body (omitted for HEAD).
    fn send(
        &self,
        conn: &mut Conn,
        status: u16,
        content_type: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<u16> {
        let mut headers = vec![("Content-Type", content_type)];
        headers.extend_from_slice(extra);
        let mut out = self.head(status, BodyLen::Fixed(body.len() as u64), &headers);
        if !self.head_only {
            out.extend_from_slice(body);
        }
        conn.stream.write_all(&out)?;
        Ok(status)
    }

    fn text(&self, conn: &mut Conn, status: u16, body: &str) -> io::Result<u16> {
        self.send(conn, status, "text/plain", &[], body.as_bytes())
    }

    fn error(&self, conn: &mut Conn, status: u16) -> io::Result<u16> {
        let body = format!("{}\n", reason(status).to_ascii_lowercase());
        self.text(conn, status, &body)
    }
}

/// Reason phrase; codes without a registered phrase (e.g. /status/599) get
/// their class name, since some clients dislike an empty phrase.
fn reason(status: u16) -> &'static str {
    registered_reason(status).unwrap_or(match status / 100 {
        1 => "Informational",
        2 => "Success",
        3 => "Redirection",
        4 => "Client Error",
        _ => "Server Error",
    })
}

fn registered_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => return None,
    })
}

/// Reads the request body into `sink`, first sending `100 Continue` if the
/// client is holding the body back waiting for it.
fn read_body(
    conn: &mut Conn,
    req: &Request,
    framing: Framing,
    sink: impl FnMut(&[u8]) -> Result<(), BodyError>,
) -> Result<u64, Fail> {
    if framing != Framing::Empty && req.expects_continue() {
        conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    Ok(conn.read_body(framing, sink)?)
}

fn route(conn: &mut Conn, reply: &mut Reply, req: &Request) -> Result<u16, Fail> {
    let framing = req.framing().map_err(Fail::Reject)?;
    let path = req.path();
    let readonly = matches!(req.method.as_str(), "GET" | "HEAD");

    if path.starts_with("/echo") {
        return echo(conn, reply, req, framing);
    }
    if path == "/sink" || path.starts_with("/sink/") {
        return sink(conn, reply, req, framing);
    }
    // The remaining endpoints ignore the body, but it still has to be
    // consumed to find where the next pipelined request starts.
    read_body(conn, req, framing, |_| Ok(()))?;

    if path == "/ws" {
        return websocket(conn, reply, req, framing);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(status(conn, reply, code)?);
    }
    let known = matches!(path, "/" | "/health" | "/stats")
        || path.starts_with("/bytes/")
        || path.starts_with("/delay/");
    if !known {
        return Ok(reply.text(conn, 404, "not found")?);
    }
    if !readonly {
        let status = reply.send(
            conn,
            405,
            "text/plain",
            &[("Allow", "GET, HEAD")],
            b"method not allowed\n",
        )?;
        return Ok(status);
    }
    let name = &reply.server.name;
    let status = match path {
        "/health" => reply.text(conn, 200, "ok")?,
        "/" => {
            let name = html_escape(name);
            let page = format!(
                "<!DOCTYPE html>\n<html><head><title>{name}</title></head>\n\
                 <body><h1>{name}</h1><p>served by {name}</p></body></html>\n"
            );
            reply.send(conn, 200, "text/html", &[], page.as_bytes())?
        }
        "/stats" => {
            let json = format!(
                "{{\"name\":\"{}\",\"connections\":{},\"requests\":{}}}",
                json_escape(name),
                reply.server.connections.load(Ordering::Relaxed),
                reply.server.requests.load(Ordering::Relaxed),
            );
            reply.send(conn, 200, "application/json", &[], json.as_bytes())?
        }
        _ => {
            if let Some(n) = path.strip_prefix("/bytes/") {
                bytes(conn, reply, req, n)?
            } else if let Some(ms) = path.strip_prefix("/delay/") {
                delay(conn, reply, ms)?
            } else {
                reply.text(conn, 404, "not found")?
            }
        }
    };
    Ok(status)
}

fn echo(conn: &mut Conn, reply: &Reply, req: &Request, framing: Framing) -> Result<u16, Fail> {
    if let Framing::Length(n) = framing {
        // Refuse up front, before a 100-continue invites the upload.
        if n > ECHO_MAX_BODY as u64 {
            return Err(Fail::Reject(413));
        }
    }
    let mut body = Vec::new();
    read_body(conn, req, framing, |data| {
        if body.len() + data.len() > ECHO_MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(data);
        Ok(())
    })?;
    let head_len = req.raw_head.len().to_string();
    let body_len = body.len().to_string();
    let total = (req.raw_head.len() + body.len()) as u64;
    let mut out = reply.head(
        200,
        BodyLen::Fixed(total),
        &[
            ("Content-Type", "text/plain"),
            ("X-Echo-Head-Length", &head_len),
            ("X-Echo-Body-Length", &body_len),
        ],
    );
    if !reply.head_only {
        out.extend_from_slice(&req.raw_head);
        out.extend_from_slice(&body);
    }
    conn.stream.write_all(&out)?;
    Ok(200)
}

fn sink(conn: &mut Conn, reply: &Reply, req: &Request, framing: Framing) -> Result<u16, Fail> {
    let mut sum = 0u64;
    let received = read_body(conn, req, framing, |data| {
        sum = byte_sum(sum, data);
        Ok(())
    })?;
    let (n, s) = (received.to_string(), sum.to_string());
    let body = format!("received {received} bytes\n");
    let extra = [
        ("X-Received-Bytes", n.as_str()),
        ("X-Received-Sum", s.as_str()),
    ];
    Ok(reply.send(conn, 200, "text/plain", &extra, body.as_bytes())?)
}

/// Wrapping sum of all bytes. Words are summed as eight byte lanes at a
/// time because tests run the unoptimised build, where a per-byte loop over
/// a 1 GiB upload is noticeably slow.
fn byte_sum(acc: u64, data: &[u8]) -> u64 {
    const LOW: u64 = 0x00FF_00FF_00FF_00FF;
    let mut total = acc;
    // 16-bit lanes: each word adds at most 2 * 255 per lane, so 128 words
    // cannot overflow a lane.
    let mut blocks = data.chunks_exact(8 * 128);
    for block in &mut blocks {
        let mut lanes = 0u64;
        for word in block.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let w = u64::from_le_bytes(w);
            lanes += (w & LOW) + ((w >> 8) & LOW);
        }
        let folded =
            (lanes & 0xFFFF) + ((lanes >> 16) & 0xFFFF) + ((lanes >> 32) & 0xFFFF) + (lanes >> 48);
        total = total.wrapping_add(folded);
    }
    blocks
        .remainder()
        .iter()
        .fold(total, |t, &b| t.wrapping_add(u64::from(b)))
}

/// `(i % 251) as u8` repeated, long enough that any 64 KiB window of the
/// infinite pattern is a slice of it.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| (0..STREAM_CHUNK + 251).map(|i| (i % 251) as u8).collect())
}

fn bytes(conn: &mut Conn, reply: &mut Reply, req: &Request, n: &str) -> io::Result<u16> {
    let Some(total) = http::parse_decimal(n.as_bytes()) else {
        return reply.text(conn, 400, "bad byte count\n");
    };
    let query = req.query();
    let want_chunked = query_flag(query, "chunked");
    // HTTP/1.0 clients cannot parse chunked, so they get close-delimited.
    let len = if query_flag(query, "close") || (want_chunked && reply.http10) {
        reply.close = true;
        BodyLen::UntilClose
    } else if want_chunked {
        BodyLen::Chunked
    } else {
        BodyLen::Fixed(total)
    };
    let head = reply.head(200, len, &[("Content-Type", "application/octet-stream")]);
    conn.stream.write_all(&head)?;
    if reply.head_only {
        return Ok(200);
    }
    let pattern = pattern();
    let mut chunk = Vec::with_capacity(STREAM_CHUNK + 16);
    let mut sent = 0u64;
    while sent < total {
        let n = usize::try_from(total - sent).map_or(STREAM_CHUNK, |l| l.min(STREAM_CHUNK));
        let start = (sent % 251) as usize;
        let data = &pattern[start..start + n];
        if matches!(len, BodyLen::Chunked) {
            chunk.clear();
            let _ = write!(chunk, "{n:x}\r\n");
            chunk.extend_from_slice(data);
            chunk.extend_from_slice(b"\r\n");
            conn.stream.write_all(&chunk)?;
        } else {
            conn.stream.write_all(data)?;
        }
        sent += n as u64;
    }
    if matches!(len, BodyLen::Chunked) {
        conn.stream.write_all(b"0\r\n\r\n")?;
    }
    Ok(200)
}

fn delay(conn: &mut Conn, reply: &Reply, ms: &str) -> io::Result<u16> {
    let Some(ms) = http::parse_decimal(ms.as_bytes()) else {
        return reply.text(conn, 400, "bad delay\n");
    };
    thread::sleep(Duration::from_millis(ms));
    reply.text(conn, 200, &format!("delayed {ms} ms"))
}

fn status(conn: &mut Conn, reply: &Reply, code: &str) -> io::Result<u16> {
    let code = match http::parse_decimal(code.as_bytes()) {
        Some(c @ 200..=599) => c as u16,
        _ => return reply.text(conn, 400, "status must be 200-599\n"),
    };
    // RFC 9110 sections 15.3.5, 15.3.6 and 15.4.5: these never have content.
    if matches!(code, 204 | 205 | 304) {
        let len = if code == 205 {
            BodyLen::Fixed(0)
        } else {
            BodyLen::Forbidden
        };
        conn.stream.write_all(&reply.head(code, len, &[]))?;
        return Ok(code);
    }
    reply.text(conn, code, &format!("status {code}"))
}

fn websocket(conn: &mut Conn, reply: &Reply, req: &Request, framing: Framing) -> Result<u16, Fail> {
    let key = req.header("sec-websocket-key");
    let is_upgrade = req.method == "GET"
        && req.minor_version >= 1
        && req.has_token("upgrade", "websocket")
        && framing == Framing::Empty;
    let Some(key) = key.filter(|k| is_upgrade && ws::valid_key(k)) else {
        return Ok(reply.text(conn, 400, "websocket upgrade required\n")?);
    };
    if req
        .header("sec-websocket-version")
        .is_some_and(|v| v != b"13")
    {
        let extra = [("Sec-WebSocket-Version", "13")];
        let body = b"unsupported websocket version\n";
        return Ok(reply.send(conn, 426, "text/plain", &extra, body)?);
    }
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nX-Backend: {}\r\nX-Backend-Connection: {}\r\n\r\n",
        ws::accept_key(key),
        reply.server.name,
        reply.serial
    );
    conn.stream.write_all(head.as_bytes())?;
    Ok(101)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{parse_decimal, parse_query, ChunkError, ChunkedDecoder};
    use std::io::Read;
    use std::net::{Shutdown, SocketAddr};

    /// Feeds `input` to a fresh decoder in pieces of `step` bytes, the way
    /// a socket would deliver it. Returns (body, bytes consumed).
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut consumed = 0;
        let mut available = 0;
        while !dec.is_done() {
            if consumed == available {
                if available == input.len() {
                    break;
                }
                available = (available + step).min(input.len());
            }
            let (used, data) = dec.decode(&input[consumed..available])?;
            assert!(used > 0 || dec.is_done(), "decoder made no progress");
            body.extend_from_slice(data);
            consumed += used;
        }
        assert!(dec.is_done(), "body incomplete");
        Ok((body, consumed))
    }

    #[test]
    fn chunked_decodes_at_every_split() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for step in 1..=input.len() {
            let (body, used) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert_eq!(used, input.len());
        }
    }

    #[test]
    fn chunked_extensions_trailers_and_pipelined_rest() {
        let body = b"5;name=value;flag\r\nhello\r\n000A ; q=\"x y\"\r\n0123456789\r\n\
                     0;last\r\nX-Trailer: 1\r\nOther: two\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        for step in [1, 3, 7, input.len()] {
            let (decoded, used) = decode_in_steps(&input, step).unwrap();
            assert_eq!(decoded, b"hello0123456789");
            assert_eq!(used, body.len(), "must not eat the next request");
        }
    }

    #[test]
    fn chunked_large_chunk_streams_without_buffering() {
        let mut input = b"10000\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 0x10000));
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut dec = ChunkedDecoder::new();
        let (used, data) = dec.decode(&input).unwrap();
        assert_eq!(data.len(), 0x10000);
        assert_eq!(used, 7 + 0x10000);
    }

    #[test]
    fn chunked_rejects_bad_input() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"zz\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"5 x\r\nhello\r\n", ChunkError::BadSize),
            (b"-5\r\n", ChunkError::BadSize),
            (b"1ffffffffffffffff\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::BadDelimiter),
            (b"5\r\nhelloXX", ChunkError::BadDelimiter),
            (b"5\r\nhello\r0\r\n\r\n", ChunkError::BadDelimiter),
            (b"0\r\nX: y\n\r\n", ChunkError::BadDelimiter),
            (b"5;ext\x01\r\nhello\r\n", ChunkError::BadSize),
        ];
        for (input, want) in cases {
            let got = decode_in_steps(input, input.len()).unwrap_err();
            assert_eq!(got, *want, "input {:?}", String::from_utf8_lossy(input));
        }
        let long_line = [b"1;".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(
            decode_in_steps(&long_line, 100).unwrap_err(),
            ChunkError::LineTooLong
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Padding: 0123456789012345678901234567890123\r\n");
        }
        assert_eq!(
            decode_in_steps(&trailers, 1000).unwrap_err(),
            ChunkError::TrailersTooLarge
        );
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query("a=1&b&&c=x=y&=v"),
            vec![("a", "1"), ("b", ""), ("c", "x=y"), ("", "v")]
        );
        assert!(parse_query("").is_empty());
        assert!(query_flag("chunked=1", "chunked"));
        assert!(query_flag("x=2&close", "close"));
        assert!(query_flag("chunked=true&close=1", "close"));
        assert!(!query_flag("chunked=0", "chunked"));
        assert!(!query_flag("chunked=1&chunked=0", "chunked"));
        assert!(!query_flag("unchunked=1", "chunked"));
        assert!(!query_flag("", "chunked"));
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        for bad in [&b""[..], b"+1", b"-1", b" 1", b"1a", b"0x10"] {
            assert_eq!(parse_decimal(bad), None);
        }
    }

    #[test]
    fn byte_sum_matches_naive() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let naive = data.iter().map(|&b| u64::from(b)).sum::<u64>();
        assert_eq!(byte_sum(0, &data), naive);
        assert_eq!(
            byte_sum(5, &data[..3]),
            5 + data[..3].iter().map(|&b| u64::from(b)).sum::<u64>()
        );
        assert_eq!(byte_sum(u64::MAX, &[2]), 1);
        let ones = vec![0xFFu8; 8 * 128 * 3];
        assert_eq!(byte_sum(0, &ones), 255 * ones.len() as u64);
    }

    #[test]
    fn ws_accept_key_matches_rfc_example() {
        assert_eq!(
            ws::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(ws::valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!ws::valid_key(b"c2hvcnQ="));
        assert!(!ws::valid_key(b"not base64!"));
    }

    #[test]
    fn ws_frame_roundtrip_all_length_encodings() {
        for (len, header_len) in [
            (0, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (70000, 10),
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let frame = ws::encode_frame(true, ws::OP_BINARY, &payload, mask);
                let extra = if mask.is_some() { 4 } else { 0 };
                let (h, at) = ws::parse_header(&frame).unwrap().unwrap();
                assert_eq!(at, header_len + extra);
                assert_eq!(h.len, len as u64);
                assert_eq!(h.mask, mask);
                assert!(h.fin);
                assert_eq!(h.opcode, ws::OP_BINARY);
                let mut body = frame[at..].to_vec();
                if let Some(m) = h.mask {
                    ws::apply_mask(&mut body, m, 0);
                }
                assert_eq!(body, payload);
                // Every strict prefix of the header is "need more".
                for cut in 0..at {
                    assert_eq!(ws::parse_header(&frame[..cut]), Ok(None));
                }
            }
        }
    }

    #[test]
    fn ws_frame_header_bytes() {
        let f = ws::encode_frame(true, ws::OP_TEXT, b"Hello", None);
        assert_eq!(f, b"\x81\x05Hello");
        // RFC 6455 section 5.7 masked example.
        let masked = ws::encode_frame(true, ws::OP_TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(masked, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
        let big = ws::encode_frame(false, ws::OP_CONTINUATION, &[0; 256], None);
        assert_eq!(&big[..4], b"\x00\x7e\x01\x00");
        let huge = ws::encode_frame(true, ws::OP_BINARY, &[0; 65536], None);
        assert_eq!(&huge[..10], b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00");
    }

    #[test]
    fn ws_mask_can_be_applied_piecewise() {
        let mask = [9, 8, 7, 6];
        let mut whole: Vec<u8> = (0..50).collect();
        let mut pieces = whole.clone();
        ws::apply_mask(&mut whole, mask, 0);
        let (a, b) = pieces.split_at_mut(13);
        ws::apply_mask(a, mask, 0);
        ws::apply_mask(b, mask, 13);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn ws_rejects_bad_headers() {
        use ws::FrameError;
        assert_eq!(ws::parse_header(b"\xc1\x80"), Err(FrameError::ReservedBits));
        assert_eq!(
            ws::parse_header(b"\x83\x80"),
            Err(FrameError::UnknownOpcode)
        );
        assert_eq!(
            ws::parse_header(b"\x89\xfe\x00\x7e"),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            ws::parse_header(b"\x09\x80"),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            ws::parse_header(b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00"),
            Err(FrameError::BadLength)
        );
    }

    // End-to-end tests against a server on an ephemeral port.

    fn start() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(Server::new("t1".to_owned(), true));
        thread::spawn(move || serve(listener, server));
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends `raw`, half-closes, and returns everything the server sent.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
        let mut s = connect(addr);
        s.write_all(raw).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    /// Reads one response whose body is Content-Length delimited.
    fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "eof in head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let len = header_of(&head, "content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        (head, body)
    }

    fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let addr = start();
        let echo_head =
            "POST /echo/x?y=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let raw = format!(
            "GET /health HTTP/1.1\r\nHost: a\r\n\r\n\
             {echo_head}3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n\
             GET /status/204 HTTP/1.1\r\n\r\n\
             HEAD /status/201 HTTP/1.1\r\n\r\n\
             GET /nope HTTP/1.1\r\n\r\n"
        );
        let out = exchange(addr, raw.as_bytes());
        let text = String::from_utf8_lossy(&out);
        let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
        assert_eq!(statuses, ["200", "200", "204", "201", "404"], "{text}");
        assert_eq!(count(&out, b"X-Backend: t1\r\n"), 5);
        assert_eq!(count(&out, b"X-Backend-Connection: 1\r\n"), 5);
        let want_echo = format!("{echo_head}abcde");
        assert!(text.contains(&format!("Content-Length: {}\r\n", want_echo.len())));
        assert!(text.contains(&format!("X-Echo-Head-Length: {}\r\n", echo_head.len())));
        assert!(text.contains("X-Echo-Body-Length: 5\r\n"));
        assert!(text.contains(&want_echo));
        assert!(
            text.contains("Content-Length: 10\r\n"),
            "HEAD keeps the GET length"
        );
        assert!(!text.contains("status 201"), "HEAD must not carry a body");
        assert!(text.ends_with("not found"));
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let addr = start();
        let mut s = connect(addr);
        s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("Connection: close\r\n"));

        let mut s = connect(addr);
        for _ in 0..2 {
            s.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
            let (head, body) = read_response(&mut s);
            assert!(head.contains("Connection: keep-alive\r\n"));
            assert_eq!(body, b"ok");
        }
    }

    #[test]
    fn protocol_errors_get_400_or_431_and_close() {
        let addr = start();
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            let out = exchange(addr, raw);
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
            assert!(text.contains("Connection: close\r\n"));
        }
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b"X-Pad: 0123456789\r\n".as_slice(), 4000).flatten());
        let text = String::from_utf8_lossy(&exchange(addr, &big)).into_owned();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    }

    #[test]
    fn expect_continue_is_honoured() {
        let addr = start();
        let mut s = connect(addr);
        s.write_all(b"PUT /sink HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            .unwrap();
        let mut interim = [0u8; 25];
        s.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(&[1, 2, 3, 250]).unwrap();
        let (head, body) = read_response(&mut s);
        assert!(head.contains("X-Received-Bytes: 4\r\n"));
        assert!(head.contains("X-Received-Sum: 256\r\n"));
        assert_eq!(body, b"received 4 bytes\n");
    }

    #[test]
    fn bytes_in_all_three_framings() {
        let addr = start();
        let want: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

        let mut s = connect(addr);
        s.write_all(b"GET /bytes/200000 HTTP/1.1\r\n\r\n").unwrap();
        let (_, body) = read_response(&mut s);
        assert_eq!(body, want);

        let out = exchange(addr, b"GET /bytes/200000?chunked=1 HTTP/1.1\r\n\r\n");
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(String::from_utf8_lossy(&out[..split]).contains("Transfer-Encoding: chunked"));
        let (body, used) = decode_in_steps(&out[split..], out.len()).unwrap();
        assert_eq!(used, out.len() - split);
        assert_eq!(body, want);

        for raw in [
            &b"GET /bytes/200000?close=1 HTTP/1.1\r\n\r\n"[..],
            b"GET /bytes/200000?chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ] {
            let out = exchange(addr, raw);
            let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&out[..split]);
            assert!(head.contains("Connection: close\r\n"), "{head}");
            assert!(!head.contains("Content-Length") && !head.contains("Transfer-Encoding"));
            assert_eq!(&out[split..], want.as_slice());
        }
    }

    #[test]
    fn websocket_echo() {
        let addr = start();
        let mut s = connect(addr);
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 101 "));
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        let mask = Some([0xde, 0xad, 0xbe, 0xef]);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
        for (op, payload) in [(ws::OP_TEXT, &b"hi there"[..]), (ws::OP_BINARY, &big)] {
            s.write_all(&ws::encode_frame(true, op, payload, mask))
                .unwrap();
            let want = ws::encode_frame(true, op, payload, None);
            let mut got = vec![0; want.len()];
            s.read_exact(&mut got).unwrap();
            assert!(got == want, "echo of opcode {op} differs");
        }
        s.write_all(&ws::encode_frame(true, ws::OP_PING, b"p", mask))
            .unwrap();
        let mut pong = [0u8; 3];
        s.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\x8a\x01p");
        s.write_all(&ws::encode_frame(
            true,
            ws::OP_CLOSE,
            &1000u16.to_be_bytes(),
            mask,
        ))
        .unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"\x88\x02\x03\xe8");

        let out = exchange(addr, b"GET /ws HTTP/1.1\r\n\r\n");
        assert!(out.starts_with(b"HTTP/1.1 400 "));
    }

    #[test]
    fn stats_count_connections_and_requests() {
        let addr = start();
        exchange(
            addr,
            b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
        );
        let out = exchange(addr, b"GET /stats HTTP/1.1\r\n\r\n");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("X-Backend-Connection: 2\r\n"));
        assert!(
            text.ends_with(r#"{"name":"t1","connections":2,"requests":3}"#),
            "{text}"
        );
    }
}
