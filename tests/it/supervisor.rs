//! The `supervisor` binary as a whole: real backends and a real balancer as its children, driven
//! through its control API; process liveness read from `/proc`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Ports already handed to a test of this process, so parallel tests never share one.
static RESERVED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// `n` consecutive free ports (backends listen on base-port..base-port+n-1). They are taken
/// below the kernel's ephemeral range, where no outgoing connection can grab one between this
/// check and the backend's bind; each is checked free by binding it.
fn free_port_run(n: u16) -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 {
        (10_000, ephemeral_low - n)
    } else {
        // An unusual range: fall back to the top of the port space.
        (61_000, 65_000)
    };
    let mut reserved = RESERVED.lock().expect("reserved ports");
    for _ in 0..1000 {
        let base = fastrand::u16(low..high);
        let ports: Vec<u16> = (base..base + n).collect();
        if ports.iter().any(|p| reserved.contains(p)) {
            continue;
        }
        let held: Vec<TcpListener> = ports
            .iter()
            .filter_map(|&p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == ports.len() {
            reserved.extend(&ports);
            return base;
        }
    }
    panic!("no run of {n} free ports found");
}

/// Whether `pid` is a live process. A zombie counts as dead: a child orphaned by a SIGKILLed
/// supervisor is reparented to PID 1, which in a container may never reap it.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether `/proc/PID` exists at all: a killed child that is still there is an unreaped zombie.
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// A GET that reports a refused connection instead of panicking.
fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(PATIENCE)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    Some(read_response(&mut s, false))
}

fn json(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", resp.text()))
}

static CONFIG_SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A running supervisor with `--control 127.0.0.1:0`, its backends on free fixed ports and its
/// balancer on port 0; its output is collected and parsed for the two addresses.
struct Supervised {
    child: Child,
    control: SocketAddr,
    base_port: u16,
    backends: u16,
    config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    /// Every `listening on` address the balancer announced, newest last.
    lb_addrs: Arc<Mutex<Vec<SocketAddr>>>,
    exit: Option<ExitStatus>,
}

impl Supervised {
    fn start(backends: u16) -> Supervised {
        let base_port = free_port_run(backends);
        let serial = CONFIG_SERIAL.fetch_add(1, Ordering::SeqCst);
        let config = std::env::temp_dir().join(format!(
            "lb-supervisor-test-{}-{serial}.toml",
            std::process::id()
        ));
        let mut toml =
            String::from("listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\naccess_log = false\n");
        for k in 0..backends {
            toml.push_str(&format!(
                "[[backend]]\nname = \"backend-{}\"\naddress = \"127.0.0.1:{}\"\n",
                k + 1,
                base_port + k
            ));
        }
        std::fs::write(&config, toml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_supervisor"))
            .arg("--config")
            .arg(&config)
            .args(["--control", "127.0.0.1:0"])
            .args(["--backends", &backends.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn supervisor");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let lb_addrs = Arc::new(Mutex::new(Vec::new()));
        let control = Arc::new(Mutex::new(None));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect(stdout, "", &lines, Some((&control, &lb_addrs)));
        collect(stderr, "stderr: ", &lines, None);
        let mut supervised = Supervised {
            child,
            control: "0.0.0.0:0".parse().expect("placeholder"),
            base_port,
            backends,
            config,
            lines,
            lb_addrs,
            exit: None,
        };
        supervised.wait_for("the control address", || {
            control.lock().expect("control").is_some()
        });
        supervised.control = control.lock().expect("control").expect("control address");
        supervised.wait_for("the balancer's address", || {
            !supervised.lb_addrs.lock().expect("lb").is_empty()
        });
        // Backends announce themselves once bound: from then on the balancer can reach them (and
        // their output is seen forwarded under their names).
        for k in 1..=backends {
            let line = format!("[backend-{k}] listening on {}", supervised.backend_addr(k));
            supervised.wait_for(&line, || supervised.output().contains(&line));
        }
        supervised
    }

    /// Like `support::wait_until`, with the supervisor's output in the failure message.
    fn wait_for(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; supervisor output:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    fn lb_addr(&self) -> SocketAddr {
        *self
            .lb_addrs
            .lock()
            .expect("lb")
            .last()
            .expect("lb address")
    }

    fn backend_addr(&self, k: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + k - 1))
    }

    fn request(&self, method: &str, path: &str) -> Response {
        roundtrip(
            self.control,
            format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
    }

    fn list(&self) -> Vec<Value> {
        let resp = self.request("GET", "/api/processes");
        assert_eq!(resp.status, 200, "{}", resp.text());
        match json(&resp) {
            Value::Array(items) => items,
            other => panic!("not a list: {other}"),
        }
    }

    fn process(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the list"))
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.process(name)["pid"]
            .as_u64()
            .map(|p| u32::try_from(p).expect("pid"))
    }

    fn post(&self, name: &str, action: &str) -> Response {
        self.request("POST", &format!("/api/processes/{name}/{action}"))
    }

    /// Sends `sig` to the supervisor and waits for it to exit.
    fn stop_with(&mut self, sig: libc::c_int) -> ExitStatus {
        signal(self.child.id(), sig);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "supervisor did not exit; output:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // SIGTERM makes it stop its children; if that hangs, SIGKILL still takes them along
        // (PR_SET_PDEATHSIG).
        if self.exit.is_none() {
            let _ = signal_quietly(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + PATIENCE;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        let mine: HashSet<u16> = (self.base_port..self.base_port + self.backends).collect();
        reserved.retain(|p| !mine.contains(p));
        if thread::panicking() {
            eprintln!("supervisor output:\n{}", self.output());
        }
    }
}

fn signal_quietly(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

type Addrs<'a> = (
    &'a Arc<Mutex<Option<SocketAddr>>>,
    &'a Arc<Mutex<Vec<SocketAddr>>>,
);

/// Reads the supervisor's output into `lines`; on stdout, also picks out `control on ADDR` and
/// every `[lb] ... listening on ADDR`.
fn collect(
    stream: impl Read + Send + 'static,
    tag: &'static str,
    lines: &Arc<Mutex<Vec<String>>>,
    addrs: Option<Addrs>,
) {
    let lines = Arc::clone(lines);
    let addrs = addrs.map(|(c, l)| (Arc::clone(c), Arc::clone(l)));
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if let Some((control, lb)) = &addrs {
                let addr_after = |marker: &str| -> Option<SocketAddr> {
                    line.split(marker).nth(1)?.trim().parse().ok()
                };
                if line.starts_with("[supervisor] ") {
                    if let Some(addr) = addr_after("control on ") {
                        *control.lock().expect("control") = Some(addr);
                    }
                }
                if line.starts_with("[lb] ") {
                    if let Some(addr) = addr_after("listening on ") {
                        lb.lock().expect("lb").push(addr);
                    }
                }
            }
            lines.lock().expect("lines").push(format!("{tag}{line}"));
        }
    });
}

const NAMES: [&str; 4] = ["backend-1", "backend-2", "backend-3", "lb"];

#[test]
fn lists_every_process_then_kills_and_restarts_a_backend() {
    let sup = Supervised::start(3);
    sup.wait_for("every process running", || {
        sup.list().iter().all(|p| p["state"] == "running")
    });
    let list = sup.list();
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, NAMES);
    for (k, p) in list.iter().take(3).enumerate() {
        assert_eq!(p["kind"], "backend");
        assert_eq!(p["port"], u64::from(sup.base_port) + k as u64);
    }
    assert_eq!(list[3]["kind"], "balancer");
    assert_eq!(list[3]["port"], u64::from(sup.lb_addr().port()));
    for name in NAMES {
        let pid = sup.pid(name).expect("pid");
        assert!(alive(pid), "{name} (pid {pid}) is not alive");
    }
    // The balancer reaches the backends.
    let resp = get(sup.lb_addr(), "/");
    assert_eq!(resp.status, 200);
    assert!(NAMES.contains(&resp.backend()), "{:?}", resp.headers);

    let old = sup.pid("backend-2").expect("pid");
    let others: Vec<Option<u32>> = ["backend-1", "backend-3", "lb"]
        .iter()
        .map(|n| sup.pid(n))
        .collect();
    let resp = sup.post("backend-2", "kill");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let killed = json(&resp);
    assert_eq!(killed["name"], "backend-2");
    assert_eq!(killed["state"], "stopped");
    assert!(killed["pid"].is_null(), "{killed}");
    // Reaped before the answer: not even a zombie is left.
    assert!(!exists(old), "backend-2 (pid {old}) still in /proc");
    assert_eq!(sup.process("backend-2")["state"], "stopped");
    assert!(try_get(sup.backend_addr(2), "/health").is_none());
    let still: Vec<Option<u32>> = ["backend-1", "backend-3", "lb"]
        .iter()
        .map(|n| sup.pid(n))
        .collect();
    assert_eq!(still, others, "only backend-2 was to die");

    let resp = sup.post("backend-2", "start");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let started = json(&resp);
    assert_eq!(started["state"], "running");
    let new = started["pid"].as_u64().expect("new pid") as u32;
    assert_ne!(new, old);
    assert!(alive(new));
    assert_eq!(sup.pid("backend-2"), Some(new));
    sup.wait_for("the restarted backend-2 to answer", || {
        try_get(sup.backend_addr(2), "/health").is_some_and(|r| r.status == 200)
    });
    assert_eq!(get(sup.backend_addr(2), "/").backend(), "backend-2");

    let resp = sup.post("backend-2", "start");
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert!(json(&resp)["error"].is_string());
}

#[test]
fn restarted_balancer_is_listed_with_its_new_port() {
    let sup = Supervised::start(1);
    let first = sup.lb_addr();
    let old = sup.pid("lb").expect("lb pid");
    assert_eq!(sup.post("lb", "kill").status, 200);
    assert!(!exists(old));
    assert!(
        try_get(first, "/").is_none(),
        "the killed balancer still answers"
    );
    let resp = sup.post("lb", "start");
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Port 0 in the config: the new balancer listens elsewhere, and the list follows it.
    sup.wait_for("the new balancer's address", || {
        sup.lb_addrs.lock().expect("lb").len() == 2
    });
    let second = sup.lb_addr();
    sup.wait_for("the list to show the new port", || {
        sup.process("lb")["port"] == u64::from(second.port())
    });
    assert_eq!(get(second, "/").backend(), "backend-1");
}

#[test]
fn a_child_that_dies_by_itself_is_reaped_and_shown_stopped() {
    let sup = Supervised::start(3);
    let pid = sup.pid("backend-3").expect("pid");
    signal(pid, libc::SIGKILL);
    sup.wait_for("backend-3 shown stopped", || {
        let p = sup.process("backend-3");
        p["state"] == "stopped" && p["pid"].is_null()
    });
    sup.wait_for("backend-3 reaped", || !exists(pid));
    // The log line comes through the supervisor's output pipe, after the state change.
    let exited = format!("backend-3 (pid {pid}) exited");
    sup.wait_for("the exit to be logged", || sup.output().contains(&exited));
    // It can be started again like a killed one.
    assert_eq!(sup.post("backend-3", "start").status, 200);
    sup.wait_for("backend-3 back", || {
        try_get(sup.backend_addr(3), "/health").is_some_and(|r| r.status == 200)
    });
}

#[test]
fn sigterm_stops_every_child_and_the_supervisor() {
    let mut sup = Supervised::start(3);
    let pids: Vec<u32> = NAMES.iter().filter_map(|n| sup.pid(n)).collect();
    assert_eq!(pids.len(), 4);
    let status = sup.stop_with(libc::SIGTERM);
    assert!(status.success(), "supervisor exit: {status}");
    // The supervisor reaped them all before exiting: gone from /proc, not zombies of init.
    for pid in pids {
        assert!(!exists(pid), "child {pid} survived the supervisor");
    }
    assert!(sup.output().contains("[supervisor] stopped"));
}

#[test]
fn children_die_with_a_sigkilled_supervisor() {
    let mut sup = Supervised::start(2);
    let pids: Vec<u32> = ["backend-1", "backend-2", "lb"]
        .iter()
        .filter_map(|n| sup.pid(n))
        .collect();
    assert_eq!(pids.len(), 3);
    sup.stop_with(libc::SIGKILL);
    // No chance to clean up: PR_SET_PDEATHSIG has the kernel kill them.
    let deadline = Instant::now() + PATIENCE;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let orphans: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    // Do not leave them running for the rest of the suite.
    for &pid in &orphans {
        signal_quietly(pid, libc::SIGKILL);
    }
    assert!(orphans.is_empty(), "orphans survived: {orphans:?}");
}

#[test]
fn control_api_answers_errors_as_json_and_preflights() {
    let sup = Supervised::start(1);
    let expect = |resp: Response, status: u16| {
        assert_eq!(resp.status, status, "{}", resp.text());
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        if status != 204 {
            assert!(json(&resp)["error"].is_string(), "{}", resp.text());
        }
    };
    expect(sup.request("GET", "/"), 404);
    expect(sup.request("GET", "/api/processesx"), 404);
    expect(sup.request("POST", "/api/processes/nobody/kill"), 404);
    expect(sup.request("POST", "/api/processes/nobody/start"), 404);
    expect(sup.request("GET", "/api/processes/nobody"), 404);
    expect(sup.request("POST", "/api/processes/backend-1/explode"), 404);
    expect(sup.request("POST", "/api/processes//kill"), 404);
    expect(sup.request("GET", "/api/processes/backend-1/kill"), 405);
    expect(sup.request("DELETE", "/api/processes"), 405);
    expect(sup.request("POST", "/api/processes/backend-1/start"), 409);

    let single = sup.request("GET", "/api/processes/backend-1?x=1");
    assert_eq!(single.status, 200);
    assert_eq!(json(&single)["name"], "backend-1");

    assert_eq!(sup.post("backend-1", "kill").status, 200);
    expect(sup.post("backend-1", "kill"), 409);

    let preflight = roundtrip(
        sup.control,
        b"OPTIONS /api/processes/backend-1/kill HTTP/1.1\r\nHost: t\r\n\
          Origin: null\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    );
    expect(preflight.clone(), 204);
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or("");
    assert!(methods.contains("POST"), "{:?}", preflight.headers);

    // Not HTTP, a bad length, an oversized head: 400, 400, 431, and the API goes on.
    expect(roundtrip(sup.control, b"HELLO THERE\r\n\r\n"), 400);
    expect(
        roundtrip(
            sup.control,
            b"POST /api/processes/backend-1/start HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        ),
        400,
    );
    let huge = format!(
        "GET /api/processes HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    expect(roundtrip(sup.control, huge.as_bytes()), 431);
    // A client that leaves mid-request costs nothing.
    drop(TcpStream::connect(sup.control).expect("connect"));
    let mut half = TcpStream::connect(sup.control).expect("connect");
    half.write_all(b"GET /api/proc").expect("write");
    drop(half);

    assert_eq!(sup.list().len(), 2);
    let resp = sup.post("backend-1", "start");
    assert_eq!(resp.status, 200, "{}", resp.text());
}
