//! `supervisor`: runs the demo — the backends (`backend-1..N`) and the balancer (`lb`) — as child
//! processes, forwards their output line by line with a `[name]` prefix, and serves the control
//! API of `docs/ADMIN_API.md` ("Supervisor"): list the processes, SIGKILL one (a crash on
//! demand), start it again.
//!
//! It owns the children's whole life: it spawns them, reaps them when they die (so none is left
//! a zombie and the API shows it `stopped`), and stops them all when it is told to stop (Ctrl-C,
//! SIGTERM, SIGHUP). On Linux every child also carries `PR_SET_PDEATHSIG = SIGKILL`, so even a
//! SIGKILLed supervisor leaves no orphan behind.
//!
//! Plain std on purpose: the main thread owns every `Child` and is the only one that spawns,
//! signals or reaps; connection threads and output forwarders talk to it over a channel. Nothing
//! needs a lock, and all spawns come from one thread that lives as long as the process, which is
//! what `PR_SET_PDEATHSIG` requires (it fires when the *thread* that forked the child exits).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::json;

/// How often the main thread looks for children that died on their own when no command
/// arrives: the longest a dead child may still be shown `running`.
const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// Between SIGTERM and SIGKILL at shutdown. The children need no cleanup, so this only lets
/// them finish a write; a second Ctrl-C skips it.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Bounds a control connection that stalls (slowloris) so it cannot pin a thread.
const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a control request waits for the main thread before answering 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Control connections served at once; more are closed at once. The API is for one dashboard
/// and a few curls.
const MAX_CONTROL_CONNECTIONS: usize = 64;
/// Request head size limit of the control API (larger gets 431).
const MAX_HEAD: usize = 16 * 1024;
/// Request bodies are read and ignored (no endpoint takes one); larger ones get 413.
const MAX_BODY: usize = 64 * 1024;
/// A child's output line longer than this is forwarded in pieces, so a child that never writes
/// a newline cannot grow the supervisor's memory.
const MAX_LINE: u64 = 16 * 1024;

/// Runs the demo backends and the balancer, and a control API to kill and restart them.
#[derive(Parser, Debug)]
// A flag given twice takes the last value, so `scripts/start.sh --config other.toml` can
// override the `--config lb.toml` the script passes.
#[command(name = "supervisor", version, args_override_self = true)]
struct Args {
    /// Configuration file for the balancer (`lb --config FILE`).
    #[arg(long, value_name = "FILE", default_value = "lb.toml")]
    config: PathBuf,
    /// Directory holding the `backend` and `lb` executables [default: the directory of this
    /// executable, so target/release/supervisor runs target/release/lb].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Address of the control API; port 0 picks a free one (see the `control on ADDR` line).
    /// It has no authentication: keep it on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8005")]
    control: String,
    /// Number of demo backends (backend-1..N).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(0..=100))]
    backends: u16,
    /// Port of backend-1; backend-K listens on base-port + K - 1.
    #[arg(long, value_name = "PORT", default_value_t = 8001,
          value_parser = clap::value_parser!(u16).range(1..))]
    base_port: u16,
    /// Let the backends log every request they answer (they run with --quiet otherwise, since
    /// the balancer's access log already shows each request).
    #[arg(long)]
    backend_logs: bool,
    /// Extra arguments for the balancer, after `--` (e.g. `-- --log-level debug`).
    #[arg(last = true, value_name = "LB_ARGS")]
    lb_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Backend,
    Balancer,
}

/// One supervised program: how to start it and, while it runs, its `Child`.
struct Proc {
    name: String,
    kind: Kind,
    /// For a backend, the port it is told to use; for the balancer, the port it last reported
    /// (`listening on ADDR`), since it comes from the config file or flags.
    port: Option<u16>,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Counts spawns, so that a port report from a previous run's output is not mistaken for
    /// the current one's.
    generation: u64,
}

/// A process as the API shows it.
#[derive(Serialize)]
struct View<'a> {
    name: &'a str,
    kind: Kind,
    port: Option<u16>,
    pid: Option<u32>,
    state: &'static str,
}

impl Proc {
    fn view(&self) -> View<'_> {
        let pid = self.child.as_ref().map(Child::id);
        View {
            name: &self.name,
            kind: self.kind,
            port: self.port,
            pid,
            state: if pid.is_some() { "running" } else { "stopped" },
        }
    }
}

/// What the API answers: a status and a JSON body.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(status: u16, value: &impl Serialize) -> Answer {
        match serde_json::to_string(value) {
            Ok(body) => Answer { status, body },
            Err(e) => Answer::error(500, &format!("cannot encode the answer: {e}")),
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            body: json!({ "error": message }).to_string(),
        }
    }
}

/// Where the main thread sends a control request's answer.
type Reply = mpsc::SyncSender<Answer>;

/// Everything that changes the children goes through the main thread as one of these.
enum Command {
    List(Reply),
    Get(String, Reply),
    Kill(String, Reply),
    Start(String, Reply),
    /// A child printed `listening on ADDR`.
    Port {
        index: usize,
        generation: u64,
        port: u16,
    },
    /// A stop signal arrived.
    Shutdown(i32),
}

/// Writes one line to stdout in a single call, so lines from different threads never mix.
/// Errors are ignored: with nobody reading the output the children still have to be run.
fn emit(prefix: &str, line: &[u8]) {
    let mut out = Vec::with_capacity(prefix.len() + line.len() + 4);
    out.push(b'[');
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(line);
    out.push(b'\n');
    let _ = io::stdout().lock().write_all(&out);
}

fn say(message: &str) {
    emit("supervisor", message.as_bytes());
}

fn main() -> ExitCode {
    let args = Args::parse();
    let procs = match plan(&args) {
        Ok(procs) => procs,
        Err(message) => {
            eprintln!("supervisor: {message}");
            return ExitCode::from(2);
        }
    };
    // Bound before any child exists, so a taken port fails cleanly with nothing to clean up.
    let listener = match bind_control(&args.control) {
        Ok(listener) => listener,
        Err(message) => {
            eprintln!("supervisor: {message}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::channel();
    let stops = Arc::new(AtomicUsize::new(0));
    if let Err(e) = watch_signals(tx.clone(), Arc::clone(&stops)) {
        eprintln!("supervisor: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match listener.local_addr() {
        Ok(addr) => {
            if !addr.ip().is_loopback() {
                say("warning: the control API has no authentication and is not on loopback");
            }
            say(&format!("control on {addr}"));
        }
        Err(e) => say(&format!("control address unknown: {e}")),
    }
    let control_tx = tx.clone();
    let spawned = thread::Builder::new()
        .name("control".into())
        .spawn(move || serve_control(listener, control_tx));
    if let Err(e) = spawned {
        eprintln!("supervisor: cannot start the control thread: {e}");
        return ExitCode::FAILURE;
    }

    let mut supervisor = Supervisor { procs, tx };
    // Backends first, so the balancer's first health checks find them.
    for index in 0..supervisor.procs.len() {
        if let Err(message) = supervisor.spawn(index) {
            say(&message);
        }
    }
    let signal = supervisor.run(&rx);
    say(&format!("signal {signal}: stopping every child"));
    supervisor.stop_all(&stops);
    say("stopped");
    ExitCode::SUCCESS
}

/// The processes to run, from the flags; checks what can be checked before starting anything.
fn plan(args: &Args) -> Result<Vec<Proc>, String> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot locate this executable (use --bin-dir): {e}"))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("cannot locate this executable's directory (use --bin-dir)")?,
    };
    let backend = bin_dir.join("backend");
    let lb = bin_dir.join("lb");
    for program in [&backend, &lb] {
        if !program.is_file() {
            return Err(format!(
                "{} not found (cargo build --release --bins, or --bin-dir DIR)",
                program.display()
            ));
        }
    }
    if !args.config.is_file() {
        return Err(format!("config file {} not found", args.config.display()));
    }
    let mut procs = Vec::new();
    for k in 1..=args.backends {
        let port = args
            .base_port
            .checked_add(k - 1)
            .ok_or("--base-port + --backends goes past port 65535")?;
        let name = format!("backend-{k}");
        let mut child_args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--name".to_owned(),
            name.clone(),
        ];
        if !args.backend_logs {
            child_args.push("--quiet".to_owned());
        }
        procs.push(Proc {
            name,
            kind: Kind::Backend,
            port: Some(port),
            program: backend.clone(),
            args: child_args,
            child: None,
            generation: 0,
        });
    }
    let mut lb_args = vec![
        "--config".to_owned(),
        args.config.to_string_lossy().into_owned(),
    ];
    lb_args.extend(args.lb_args.iter().cloned());
    procs.push(Proc {
        name: "lb".to_owned(),
        kind: Kind::Balancer,
        port: None,
        program: lb,
        args: lb_args,
        child: None,
        generation: 0,
    });
    Ok(procs)
}

fn bind_control(text: &str) -> Result<TcpListener, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("--control {text}: {e}"))?
        .collect();
    TcpListener::bind(&addrs[..]).map_err(|e| format!("cannot listen on {text}: {e}"))
}

/// Turns SIGINT, SIGTERM and SIGHUP into `Command::Shutdown`, counting them in `stops`.
fn watch_signals(tx: mpsc::Sender<Command>, stops: Arc<AtomicUsize>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                stops.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Command::Shutdown(signal));
            }
        })?;
    Ok(())
}

/// The children and the main thread's side of the command channel.
struct Supervisor {
    procs: Vec<Proc>,
    /// Handed to output forwarders, which report ports through it.
    tx: mpsc::Sender<Command>,
}

impl Supervisor {
    /// Serves commands until a stop signal; returns the signal.
    fn run(&mut self, rx: &mpsc::Receiver<Command>) -> i32 {
        loop {
            let command = match rx.recv_timeout(REAP_INTERVAL) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.reap();
                    continue;
                }
                // Cannot happen while `self.tx` exists; stop rather than spin.
                Err(mpsc::RecvTimeoutError::Disconnected) => return 0,
            };
            // Reaping first makes every answer reflect children that died since the last tick.
            self.reap();
            match command {
                Command::Shutdown(signal) => return signal,
                Command::List(reply) => {
                    let views: Vec<View> = self.procs.iter().map(Proc::view).collect();
                    let _ = reply.send(Answer::json(200, &views));
                }
                Command::Get(name, reply) => {
                    let _ =
                        reply.send(self.with(&name, |s, i| Answer::json(200, &s.procs[i].view())));
                }
                Command::Kill(name, reply) => {
                    let _ = reply.send(self.with(&name, Supervisor::kill));
                }
                Command::Start(name, reply) => {
                    let _ = reply.send(self.with(&name, Supervisor::start));
                }
                Command::Port {
                    index,
                    generation,
                    port,
                } => {
                    if let Some(proc) = self.procs.get_mut(index) {
                        if proc.generation == generation {
                            proc.port = Some(port);
                        }
                    }
                }
            }
        }
    }

    /// Runs `action` on the process called `name`, or answers 404.
    fn with(&mut self, name: &str, action: impl FnOnce(&mut Self, usize) -> Answer) -> Answer {
        match self.procs.iter().position(|p| p.name == name) {
            Some(index) => action(self, index),
            None => Answer::error(404, &format!("no process named {name:?}")),
        }
    }

    fn kill(&mut self, index: usize) -> Answer {
        let proc = &mut self.procs[index];
        let Some(mut child) = proc.child.take() else {
            return Answer::error(409, &format!("{} is not running", proc.name));
        };
        let pid = child.id();
        signal_group(pid, libc::SIGKILL);
        // SIGKILL cannot be caught, so this wait is short; it reaps the child before the
        // answer, so the caller never sees a zombie.
        match child.wait() {
            Ok(status) => say(&format!(
                "{} (pid {pid}) killed on request: {}",
                proc.name,
                describe(status)
            )),
            Err(e) => say(&format!("{} (pid {pid}): wait failed: {e}", proc.name)),
        }
        Answer::json(200, &proc.view())
    }

    fn start(&mut self, index: usize) -> Answer {
        let proc = &self.procs[index];
        if proc.child.is_some() {
            return Answer::error(409, &format!("{} is already running", proc.name));
        }
        match self.spawn(index) {
            Ok(()) => Answer::json(200, &self.procs[index].view()),
            Err(message) => {
                say(&message);
                Answer::error(500, &message)
            }
        }
    }

    /// Starts process `index` with its output forwarded. Only ever called on the main thread
    /// (see the module doc: `PR_SET_PDEATHSIG` is tied to the forking thread).
    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let tx = self.tx.clone();
        let proc = &mut self.procs[index];
        let mut command = Process::new(&proc.program);
        command
            .args(&proc.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches only the supervisor,
            // which then stops the children in order and logs it, instead of every process
            // dying at once in the middle of a line.
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", proc.program.display()))?;
        proc.generation += 1;
        let pid = child.id();
        say(&format!("started {} (pid {pid})", proc.name));
        let port_watch = PortWatch {
            tx,
            index,
            generation: proc.generation,
        };
        if let Some(stdout) = child.stdout.take() {
            forward(&proc.name, stdout, Some(port_watch.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            forward(&proc.name, stderr, Some(port_watch));
        }
        proc.child = Some(child);
        Ok(())
    }

    /// Collects every child that has exited, so none stays a zombie and the API shows it
    /// `stopped`.
    fn reap(&mut self) {
        for proc in &mut self.procs {
            let Some(child) = proc.child.as_mut() else {
                continue;
            };
            let pid = child.id();
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    say(&format!(
                        "{} (pid {pid}) exited: {}",
                        proc.name,
                        describe(status)
                    ));
                    proc.child = None;
                }
                // Only ECHILD is possible, i.e. it is already gone.
                Err(e) => {
                    say(&format!("{} (pid {pid}): {e}", proc.name));
                    proc.child = None;
                }
            }
        }
    }

    /// SIGTERM to every child, SIGKILL to those still there after the grace period (or at
    /// once after a second stop signal), and every one reaped.
    fn stop_all(&mut self, stops: &AtomicUsize) {
        self.reap();
        for child in self.procs.iter().filter_map(|p| p.child.as_ref()) {
            signal_group(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.procs.iter().any(|p| p.child.is_some())
            && Instant::now() < deadline
            && stops.load(Ordering::SeqCst) < 2
        {
            thread::sleep(Duration::from_millis(10));
            self.reap();
        }
        for proc in &mut self.procs {
            if let Some(mut child) = proc.child.take() {
                let pid = child.id();
                signal_group(pid, libc::SIGKILL);
                match child.wait() {
                    Ok(status) => say(&format!(
                        "{} (pid {pid}) killed after the grace period: {}",
                        proc.name,
                        describe(status)
                    )),
                    Err(e) => say(&format!("{} (pid {pid}): wait failed: {e}", proc.name)),
                }
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Sends `signal` to the child's process group (it leads one, see `spawn`), so anything it
/// started itself goes too; falls back to the child alone.
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions. The pid is an unreaped child of ours,
    // so neither it nor its group id can have been reused.
    unsafe {
        if libc::kill(-pid, signal) != 0 {
            libc::kill(pid, signal);
        }
    }
}

/// Makes the kernel SIGKILL the child when the supervisor dies, however it dies: a SIGKILLed
/// supervisor has no chance to stop its children, and orphaned backends would keep the demo's
/// ports taken. Linux only; elsewhere a killed supervisor may leave orphans.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Process) {
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl and getppid are, and the error path does not allocate.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died between fork and prctl; then no signal will come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Process) {}

/// Where a forwarder reports a `listening on ADDR` line.
#[derive(Clone)]
struct PortWatch {
    tx: mpsc::Sender<Command>,
    index: usize,
    generation: u64,
}

/// Copies a child's output to stdout, line by line, as `[name] line`, on its own thread, until
/// the child closes it (exits).
fn forward(name: &str, stream: impl Read + Send + 'static, mut watch: Option<PortWatch>) {
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

/// Accepts control connections, one thread each.
fn serve_control(listener: TcpListener, tx: mpsc::Sender<Command>) {
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
