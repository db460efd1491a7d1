//! TLS termination of the real `lb` binary, driven by real clients (curl, `openssl s_client`,
//! Python's ssl module) against certificates from a private CA (`support::tls`). This module
//! owns what the themes share: starting `lb` with a `[tls]` section, and running the clients.

mod backends;
mod clients;
mod config;
mod handshake;
mod hostile;
mod observe;
mod reload;
mod transfers;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::tls::{parse_tls_addr, KeyKind, Leaf, Pki};
use crate::support::*;

/// What most tests serve: `a.test` (ECDSA, the first and so the default certificate),
/// `b.test` (RSA) and `*.wild.test`, from one CA.
pub struct Site {
    pub pki: Pki,
    pub a: Leaf,
    pub b: Leaf,
    pub wild: Leaf,
}

/// One set of certificates for the whole run: generating keys costs more than most tests.
pub fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let pki = Pki::new("site");
        Site {
            a: pki.leaf("a", &["a.test"], KeyKind::EcdsaP256),
            b: pki.leaf("b", &["b.test"], KeyKind::Rsa2048),
            wild: pki.leaf("wild", &["*.wild.test"], KeyKind::EcdsaP256),
            pki,
        }
    })
}

/// A `[[tls.certificate]]` entry.
pub fn cert_entry(leaf: &Leaf) -> String {
    format!(
        "[[tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
        leaf.cert_path(),
        leaf.key_path()
    )
}

/// A whole configuration: health checks out of the way (backends see only the tests'
/// requests), `[tls]` with `tls_keys` lines, the certificates in order, the backends.
pub fn config_text(tls_keys: &str, certs: &[&Leaf], backends: &[&DemoBackend]) -> String {
    let backends: Vec<(&str, SocketAddr)> =
        backends.iter().map(|b| (b.name.as_str(), b.addr)).collect();
    config_text_at(tls_keys, certs, &backends)
}

/// [`config_text`] for backends of any kind, by name and address.
pub fn config_text_at(tls_keys: &str, certs: &[&Leaf], backends: &[(&str, SocketAddr)]) -> String {
    let mut text =
        format!("[health]\ninterval = \"1h\"\n[tls]\nlisten = \"127.0.0.1:0\"\n{tls_keys}\n");
    for leaf in certs {
        text.push_str(&cert_entry(leaf));
    }
    for (name, addr) in backends {
        text.push_str(&format!(
            "[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    text
}

/// A config file of its own for each test.
pub fn config_file(text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    temp_file(
        &format!("tls-{}.toml", NEXT.fetch_add(1, Ordering::SeqCst)),
        text,
    )
}

/// `lb` with a TLS listener, and every log line seen so far (a warning may come before or
/// after the line naming the TLS address, so none is thrown away).
pub struct Lb {
    pub process: ProxyProcess,
    /// The HTTPS listener.
    pub tls: SocketAddr,
    pub config: PathBuf,
    seen: RefCell<Vec<String>>,
}

impl Lb {
    pub fn start(text: &str) -> Lb {
        let config = config_file(text);
        let process = ProxyProcess::start(&["--config", config.to_str().expect("utf-8 path")]);
        let mut lb = Lb {
            process,
            tls: "0.0.0.0:0".parse().expect("addr"),
            config,
            seen: RefCell::new(Vec::new()),
        };
        let line = lb.log_line("tls listener on ");
        lb.tls = parse_tls_addr(&line).unwrap_or_else(|| panic!("no TLS address in {line:?}"));
        lb
    }

    /// `lb` serving `site()`'s three certificates in front of `backends`.
    pub fn site(tls_keys: &str, backends: &[&DemoBackend]) -> Lb {
        let s = site();
        Lb::start(&config_text(tls_keys, &[&s.a, &s.b, &s.wild], backends))
    }

    /// `lb` serving `site()`'s certificates in front of a [`Recorder`], which keeps every byte
    /// it gets: for tests of what must not reach a backend. (A demo backend's counts would also
    /// take in stray probes from other tests' proxies that believe its port unused.)
    pub fn site_recorded(tls_keys: &str, recorder: &Recorder) -> Lb {
        let s = site();
        Lb::start(&config_text_at(
            tls_keys,
            &[&s.a, &s.b, &s.wild],
            &[("rec", recorder.backend.addr)],
        ))
    }

    /// The plain HTTP listener.
    pub fn plain(&self) -> SocketAddr {
        self.process.addr
    }

    /// The first log line, seen already or arriving within `PATIENCE`, containing `needle`.
    pub fn log_line(&self, needle: &str) -> String {
        if let Some(line) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(line) = self.process.output.recv_timeout(Duration::from_millis(50)) {
                self.seen.borrow_mut().push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no log line with {needle:?}; the log so far: {:#?}",
            self.seen.borrow()
        );
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.process.output.try_iter());
        seen.clone()
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child process this test started and still owns.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// The process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.child.try_wait().expect("try_wait").is_none()
    }

    /// A normal HTTPS request to `a.test` is answered by a backend (lb's own answers are never
    /// a 200): the proxy is well after whatever a test did to it.
    pub fn assert_serves(&mut self) {
        assert!(self.alive(), "lb exited; log: {:#?}", self.log());
        let r = curl(self, "a.test", "/", &[]);
        assert_eq!(r.response.status, 200, "{:?}", r.verbose);
    }
}

/// Runs `command` with `stdin` written to it (then closed), at most `within`; returns its
/// output, or panics with what it printed if it had to be killed.
pub fn run_with_deadline(command: &mut Command, stdin: &[u8], within: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // A writer of its own: the child may not read its input before it has written its output.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let collect = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut all = Vec::new();
            let _ = r.read_to_end(&mut all);
            all
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&stdout.join().expect("stdout")).into_owned();
            let err = String::from_utf8_lossy(&stderr.join().expect("stderr")).into_owned();
            panic!("{command:?} still running after {within:?}; stdout {out}\nstderr {err}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// What curl showed: the response (status, headers, body) and its `-v` trace.
pub struct Curl {
    pub response: Response,
    pub verbose: String,
}

impl Curl {
    /// The certificate subject curl reports (`subject: CN=a.test; O=...`).
    pub fn subject(&self) -> String {
        self.verbose
            .lines()
            .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
            .unwrap_or_else(|| panic!("no subject in curl's trace: {}", self.verbose))
            .to_string()
    }
}

/// `curl https://HOST:PORT/PATH`, trusting the test CA, with HOST resolved to the proxy's TLS
/// listener (so SNI and `Host` are HOST, as for a real site).
pub fn curl(lb: &Lb, host: &str, path: &str, extra: &[&str]) -> Curl {
    curl_at(lb.tls, host, path, extra)
}

/// HTTP/1.1 unless `extra` asks for HTTP/2: these tests are about TLS and the HTTP/1 exchange
/// (curl would choose h2 by ALPN); HTTP/2 has tests of its own.
pub fn curl_at(addr: SocketAddr, host: &str, path: &str, extra: &[&str]) -> Curl {
    let port = addr.port();
    let version = if extra.iter().any(|a| a.starts_with("--http2")) {
        "--http2"
    } else {
        "--http1.1"
    };
    let out = run_with_deadline(
        Command::new("curl")
            .args(["-sS", "-v", "--max-time", "10", "-D", "-", version])
            .args(["--cacert", site().pki.ca_path()])
            .args(["--resolve", &format!("{host}:{port}:{}", addr.ip())])
            .args(extra)
            .arg(format!("https://{host}:{port}{path}")),
        b"",
        PATIENCE + Duration::from_secs(5),
    );
    let verbose = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl failed: {verbose}");
    Curl {
        response: parse_response(&out.stdout),
        verbose,
    }
}

/// A response as curl's `-D -` writes it: the head, then the body. An HTTP/2 one's status
/// line (`HTTP/2 200`) is read as if it were HTTP/1.1's.
pub fn parse_response(raw: &[u8]) -> Response {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    let h1;
    let raw = match raw.strip_prefix(b"HTTP/2 ") {
        Some(rest) => {
            h1 = [&b"HTTP/1.1 "[..], rest].concat();
            &h1[..]
        }
        None => raw,
    };
    let Ok(httparse::Status::Complete(n)) = resp.parse(raw) else {
        panic!("not a response: {:?}", String::from_utf8_lossy(raw));
    };
    Response {
        status: resp.code.unwrap_or(0),
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: raw[n..].to_vec(),
    }
}

/// What `openssl s_client` printed (stdout and stderr together) and whether it succeeded.
pub struct SClient {
    pub text: String,
    pub success: bool,
}

/// One HTTP/1.1 request that asks the server to close afterwards: with `-ign_eof`, s_client
/// then reads until the server closes, taking in the TLS 1.3 session tickets on the way.
pub fn closing_request(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `openssl s_client -connect ADDR -CAfile CA ARGS`, sending `stdin`.
pub fn s_client(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> SClient {
    let out = run_with_deadline(
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-CAfile", site().pki.ca_path()])
            .args(args),
        stdin,
        PATIENCE + Duration::from_secs(5),
    );
    SClient {
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        success: out.status.success(),
    }
}

impl SClient {
    /// `Some("TLSv1.3")` when a handshake completed: `New, TLSv1.3, Cipher is ...` (or
    /// `Reused, ...`); `None` for `New, (NONE), Cipher is (NONE)`.
    pub fn version(&self) -> Option<String> {
        self.text.lines().find_map(|l| {
            let rest = l.strip_prefix("New, ").or(l.strip_prefix("Reused, "))?;
            let v = rest.split(',').next()?;
            (v != "(NONE)").then(|| v.to_string())
        })
    }

    /// The session was resumed (the first session line says `Reused`).
    pub fn reused(&self) -> bool {
        self.text
            .lines()
            .find(|l| l.starts_with("New, ") || l.starts_with("Reused, "))
            .is_some_and(|l| l.starts_with("Reused, "))
    }

    /// The server's certificate as PEM, as s_client prints it.
    pub fn server_cert(&self) -> String {
        let begin = "-----BEGIN CERTIFICATE-----";
        let end = "-----END CERTIFICATE-----";
        let start = self
            .text
            .find(begin)
            .unwrap_or_else(|| panic!("no certificate in {}", self.text));
        let stop = self.text[start..].find(end).expect("end of certificate") + start + end.len();
        format!("{}\n", &self.text[start..stop])
    }

    /// `ALPN protocol: X`, or `None` for `No ALPN negotiated` (or a failed handshake).
    pub fn alpn(&self) -> Option<String> {
        self.text.lines().find_map(|l| {
            l.strip_prefix("ALPN protocol: ")
                .map(|p| p.trim().to_string())
        })
    }

    /// The HTTP status line of the response the server sent through the connection.
    pub fn http_status_line(&self) -> Option<&str> {
        self.text.lines().find(|l| l.starts_with("HTTP/1.1 "))
    }
}

/// An `openssl s_client` kept running, for commands typed on its stdin (`R` renegotiates, `K`
/// updates keys) between requests.
pub struct SClientSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line it printed so far (stdout and stderr).
    pub seen: Vec<String>,
}

impl SClientSession {
    pub fn start(addr: SocketAddr, args: &[&str]) -> SClientSession {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-CAfile", site().pki.ca_path()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        SClientSession {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; false if s_client ended or `PATIENCE` ran out.
    pub fn wait_for(&mut self, needle: &str) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        false
    }

    /// Types `bytes` (s_client may have gone: then they go nowhere).
    pub fn send(&mut self, bytes: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(bytes);
            let _ = stdin.flush();
        }
    }

    /// Waits for s_client to end (the server closed, or it gave up), at most `PATIENCE`.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.seen.extend(self.lines.try_iter());
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "s_client still running: {:#?}",
                self.seen
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SClientSession {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `client.py` (Python's ssl module), talking JSON lines.
pub struct PyClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

fn client_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/tls/client.py")
}

impl PyClient {
    /// Connects to `addr` with SNI `sni`; `mode` is `session` or `ws`.
    pub fn start(addr: SocketAddr, sni: &str, ca: &str, mode: &str) -> PyClient {
        let mut child = Command::new("python3")
            .arg(client_script())
            .args([&addr.to_string(), sni, ca, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3 (scripts/install-test-deps.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        PyClient {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The next JSON line the client printed.
    pub fn next(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(PATIENCE + Duration::from_secs(5))
            .expect("the Python client printed nothing (hung or died)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Sends `METHOD PATH [BODY]` on the connection; returns the client's next line.
    pub fn request(&mut self, line: &str) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the Python client");
        stdin.flush().expect("flush");
        self.next()
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response line of `client.py session`: its status, its header `name`, and its body.
pub fn py_status(v: &serde_json::Value) -> u64 {
    assert_eq!(v["event"], "response", "{v}");
    v["status"].as_u64().expect("status")
}

pub fn py_header(v: &serde_json::Value, name: &str) -> Option<String> {
    v["headers"].as_array()?.iter().find_map(|pair| {
        let n = pair[0].as_str()?;
        n.eq_ignore_ascii_case(name)
            .then(|| pair[1].as_str().unwrap_or("").to_string())
    })
}

pub fn py_body(v: &serde_json::Value) -> String {
    v["body"].as_str().expect("body").to_string()
}
