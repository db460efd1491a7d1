//! The children's output: forwarded line by line with a `[name]` prefix, and watched for the
//! line that says which port a child listens on.

use super::*;

/// Where a forwarder reports a `listening on ADDR` line.
#[derive(Clone)]
pub(super) struct PortWatch {
    pub tx: mpsc::Sender<Command>,
    pub index: usize,
    pub generation: u64,
}

/// Copies a child's output to stdout, line by line, as `[name] line`, on its own thread, until
/// the child closes it (exits).
pub(super) fn forward(
    name: &str,
    stream: impl Read + Send + 'static,
    mut watch: Option<PortWatch>,
) {
    let owned = name.to_owned();
    let spawned = thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let name = owned;
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                if let Some(port) = listening_port(&line) {
                    // Only the first one: the main listener is announced first.
                    if let Some(w) = watch.take() {
                        let _ = w.tx.send(Command::Port {
                            index: w.index,
                            generation: w.generation,
                            port,
                        });
                    }
                }
                emit(&name, &line);
            }
        });
    if let Err(e) = spawned {
        say(&format!("cannot forward the output of {name}: {e}"));
    }
}

/// The port of a `... listening on ADDR` line (the backend's and the balancer's startup line).
/// Lines about the admin API are not the process's main port.
fn listening_port(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let (before, after) = text.split_once("listening on ")?;
    if before.contains("admin") {
        return None;
    }
    let addr: SocketAddr = after.split_whitespace().next()?.parse().ok()?;
    Some(addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_the_port() {
        assert_eq!(
            listening_port(b"2026-01-01T00:00:00Z [INFO] lb::reactor: listening on 127.0.0.1:8000"),
            Some(8000)
        );
        assert_eq!(listening_port(b"listening on 127.0.0.1:8001"), Some(8001));
        assert_eq!(listening_port(b"listening on [::1]:9 extra"), Some(9));
        assert_eq!(
            listening_port(b"admin API listening on 127.0.0.1:8004"),
            None
        );
        assert_eq!(listening_port(b"listening on nowhere"), None);
        assert_eq!(listening_port(b"backend backend-1 at 127.0.0.1:8001"), None);
        assert_eq!(listening_port(b"\xff listening on 1.2.3.4:5"), None);
    }
}
