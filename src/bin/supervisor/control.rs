//! The supervisor's control API (`docs/ADMIN_API.md`, "Supervisor"): a small HTTP/1.1 server,
//! a thread per connection (at most `MAX_CONTROL_CONNECTIONS`), whose requests become
//! [`Command`]s for the main thread and whose answers come back on a channel.

use super::*;

/// Accepts control connections, one thread each.
pub(super) fn serve_control(listener: TcpListener, tx: mpsc::Sender<Command>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Typically EMFILE; back off instead of spinning on it.
                say(&format!("control accept: {e}"));
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONTROL_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let tx = tx.clone();
        let guard = Arc::clone(&active);
        let spawned = thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                handle_connection(stream, &tx);
                guard.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A parsed control request: only what routing needs.
struct Request {
    method: String,
    path: String,
}

enum BadRequest {
    /// The client left before sending a whole request: nothing to answer.
    Gone,
    Status(u16, String),
}

/// One request per connection, answered with `Connection: close`: simple, and plenty for a
/// dashboard that clicks a button now and then.
fn handle_connection(mut stream: TcpStream, tx: &mpsc::Sender<Command>) {
    let _ = stream.set_read_timeout(Some(CONTROL_IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CONTROL_IO_TIMEOUT));
    let (response, head_only) = match read_request(&mut stream) {
        Ok(request) => (route(&request, tx), request.method == "HEAD"),
        Err(BadRequest::Gone) => return,
        Err(BadRequest::Status(status, message)) => {
            (Response::answer(Answer::error(status, &message)), false)
        }
    };
    let _ = stream.write_all(&response.encode(head_only));
    // Half-close, then drain what the client still sends: closing with unread bytes would
    // reset the connection and could destroy the answer before the client reads it.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut budget = MAX_BODY;
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 || n >= budget {
            break;
        }
        budget -= n;
    }
}

fn read_request(stream: &mut TcpStream) -> Result<Request, BadRequest> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or("").to_owned();
                let target = parsed.path.unwrap_or("");
                let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
                let mut body_len = 0usize;
                for header in parsed.headers.iter() {
                    if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(bad(411, "request bodies need a Content-Length"));
                    }
                    if header.name.eq_ignore_ascii_case("content-length") {
                        body_len = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| bad(400, "bad Content-Length"))?;
                    }
                }
                if body_len > MAX_BODY {
                    return Err(bad(413, "request body too large"));
                }
                // No endpoint takes a body; it is read only to keep the connection orderly.
                let mut have = buf.len() - head_len;
                while have < body_len {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return Err(BadRequest::Gone),
                        Ok(n) => have += n,
                    }
                }
                return Ok(Request { method, path });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(bad(400, &format!("malformed request: {e}"))),
        }
        if buf.len() >= MAX_HEAD {
            return Err(bad(431, "request head too large"));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(BadRequest::Gone),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn bad(status: u16, message: &str) -> BadRequest {
    BadRequest::Status(status, message.to_owned())
}

/// What goes back on the wire.
struct Response {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

impl Response {
    fn answer(answer: Answer) -> Response {
        Response {
            status: answer.status,
            headers: vec![("Content-Type", "application/json")],
            body: answer.body,
        }
    }

    fn method_not_allowed(allow: &'static str) -> Response {
        let mut response = Response::answer(Answer::error(405, "method not allowed"));
        response.headers.push(("Allow", allow));
        response
    }

    /// The CORS preflight a browser sends before a cross-origin POST. The private-network
    /// header lets Chromium call loopback from a page opened from disk.
    fn preflight(allow: &'static str) -> Response {
        Response {
            status: 204,
            headers: vec![
                ("Allow", allow),
                ("Access-Control-Allow-Methods", allow),
                (
                    "Access-Control-Allow-Headers",
                    "Content-Type, Authorization",
                ),
                ("Access-Control-Allow-Private-Network", "true"),
                ("Access-Control-Max-Age", "600"),
            ],
            body: String::new(),
        }
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.status != 204 {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str(
            "Access-Control-Allow-Origin: *\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        );
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Maps a request to a command for the main thread and waits for its answer.
fn route(request: &Request, tx: &mpsc::Sender<Command>) -> Response {
    const READ: &str = "GET, HEAD, OPTIONS";
    const ACT: &str = "POST, OPTIONS";
    let method = request.method.as_str();
    let Some(rest) = request.path.strip_prefix("/api/processes") else {
        return not_found();
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (allow, make): (&str, Box<dyn FnOnce(Reply) -> Command>) = match parts.as_slice() {
        [""] | ["", ""] => (READ, Box::new(Command::List)),
        ["", name] if !name.is_empty() => {
            let name = (*name).to_owned();
            (READ, Box::new(move |reply| Command::Get(name, reply)))
        }
        ["", name, "kill"] if !name.is_empty() => {
            let name = (*name).to_owned();
            (ACT, Box::new(move |reply| Command::Kill(name, reply)))
        }
        ["", name, "start"] if !name.is_empty() => {
            let name = (*name).to_owned();
            (ACT, Box::new(move |reply| Command::Start(name, reply)))
        }
        _ => return not_found(),
    };
    if method == "OPTIONS" {
        return Response::preflight(allow);
    }
    let allowed = if allow == READ {
        matches!(method, "GET" | "HEAD")
    } else {
        method == "POST"
    };
    if !allowed {
        return Response::method_not_allowed(allow);
    }
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    if tx.send(make(reply_tx)).is_err() {
        return Response::answer(Answer::error(503, "shutting down"));
    }
    match reply_rx.recv_timeout(ANSWER_TIMEOUT) {
        Ok(answer) => Response::answer(answer),
        Err(_) => Response::answer(Answer::error(503, "shutting down or busy")),
    }
}

fn not_found() -> Response {
    Response::answer(Answer::error(
        404,
        "no such endpoint; see GET /api/processes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_cors_and_length() {
        let text = String::from_utf8(Response::answer(Answer::error(404, "x")).encode(false))
            .expect("utf8");
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(
            text.contains("Access-Control-Allow-Origin: *\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n{\"error\":\"x\"}"), "{text}");
        assert!(text.contains("Content-Length: 13\r\n"), "{text}");
        let preflight =
            String::from_utf8(Response::preflight("POST, OPTIONS").encode(false)).expect("utf8");
        assert!(preflight.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!preflight.contains("Content-Length"));
    }
}
