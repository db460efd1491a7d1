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
//!
//! - `control`: the control API's HTTP server and its routes;
//! - `output`: the children's output, prefixed, and the `listening on` lines watched for.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

mod control;
mod output;

use output::{forward, PortWatch};

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
        .spawn(move || control::serve_control(listener, control_tx));
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
