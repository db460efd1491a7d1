//! `lb`: command line → configuration → logging → the reactor.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use log::{error, warn, LevelFilter};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

use lb::access::Sink;
use lb::admin::{self, Admin, AdminHandle};
use lb::config::{Cli, Config};
use lb::discovery;
use lb::reactor::{bind_listener, Command, Handle, Reactor, Shared};
use lb::threads::{Worker, STOP_WAIT};
use lb::transport::tls::TlsAcceptor;
use log::info;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("lb: {message}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        // A reader that stops early (`lb --check | head`) is not an error worth a panic.
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{config}");
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_level);
    match run(&cli, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the reactors (`workers` of them, each on its own SO_REUSEPORT listener), the
/// management thread, the health thread and the signal watcher; returns when the reactors do
/// and those threads have stopped.
fn run(cli: &Cli, config: &Config) -> Result<(), String> {
    let shared = Shared::new(config).map_err(|e| e.to_string())?;
    let workers = config.workers.max(1);
    let mut listen = config.listen;
    let mut tls_listen = config.tls.as_ref().map(|t| t.listen);
    let mut reactors = Vec::with_capacity(workers);
    for _ in 0..workers {
        let listener = bind_listener(listen, workers > 1)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        // With port 0, every reactor must share the port the first one got.
        listen = listener.local_addr().map_err(|e| e.to_string())?;
        let tls_listener = match tls_listen {
            Some(addr) => {
                let l = bind_listener(addr, workers > 1)
                    .map_err(|e| format!("cannot listen on {addr} (tls.listen): {e}"))?;
                tls_listen = Some(l.local_addr().map_err(|e| e.to_string())?);
                Some(l)
            }
            None => None,
        };
        let reactor = Reactor::with_shared(listener, tls_listener, config, shared.clone())
            .map_err(|e| format!("cannot start a reactor: {e}"))?;
        reactors.push(reactor);
    }
    let handles: Vec<Handle> = reactors.iter().map(Reactor::handle).collect();
    for backend in shared.backends.snapshot() {
        info!("backend {} at {}", backend.name, backend.address);
    }
    // Accepted (the admin API can fill it), but worth saying: until then its requests get 503.
    for pool in config.pools_in_effect() {
        if pool.backends.is_empty() && pool.discover.is_empty() {
            warn!(
                "pool {} has no backends: requests routed to it get 503 until one is added",
                pool.name
            );
        }
    }
    let admin_listener = std::net::TcpListener::bind(config.admin)
        .map_err(|e| format!("cannot listen on {} (admin): {e}", config.admin))?;
    // The admin API reports the addresses it serves on: with port 0 in the configuration
    // (tests, `--listen 127.0.0.1:0`) the configured ones would say `:0`, which no dashboard or
    // operator can use.
    let mut reported = config.clone();
    reported.listen = listen;
    if let (Some(tls), Some(addr)) = (&mut reported.tls, tls_listen) {
        tls.listen = addr;
    }
    if let Ok(addr) = admin_listener.local_addr() {
        reported.admin = addr;
    }
    let admin = Admin::new(
        &reported,
        Arc::clone(&shared.backends),
        Arc::clone(&shared.events),
        Arc::clone(&shared.totals),
        handles[0].clone(),
    )
    .with_tls(shared.tls.clone())
    .with_routes(Arc::clone(&shared.routes));
    let admin = admin::spawn(admin_listener, admin)
        .map_err(|e| format!("cannot start the admin API: {e}"))?;
    // One health thread for all: its results update the shared backends through the first
    // reactor.
    let health = reactors[0]
        .start_health_checks()
        .map_err(|e| format!("cannot start health checks: {e}"))?;
    // Started even without `discover` entries: a reload may bring some.
    let discovery = discovery::spawn(
        discovery::entries(config),
        config.discovery.clone(),
        handles[0].clone(),
    )
    .map_err(|e| format!("cannot start discovery: {e}"))?;
    let signals = watch_signals(
        handles.clone(),
        shared.tls.clone(),
        Arc::clone(&shared.access),
        discovery.reloader(),
        cli.clone(),
    )
    .map_err(|e| format!("cannot watch signals: {e}"))?;

    let mut first = reactors.remove(0);
    let others: Vec<_> = reactors
        .into_iter()
        .enumerate()
        .map(|(i, mut reactor)| {
            std::thread::Builder::new()
                .name(format!("reactor-{}", i + 1))
                .spawn(move || reactor.run())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start a reactor thread: {e}"))?;
    let result = first.run();
    // The first reactor stopped (a drain ended or a shutdown): make sure the others do too.
    for handle in &handles[1..] {
        handle.send(Command::Drain);
    }
    for thread in others {
        if let Ok(Err(e)) = thread.join() {
            error!("a reactor failed: {e}");
        }
    }
    // Every reactor has handed over its last lines.
    shared.access.stop();
    stop_helpers(signals, admin, health, discovery);
    result.map_err(|e| format!("event loop failed: {e}"))
}

/// The reactors are done: the helper threads are told to stop and joined, all within
/// [`STOP_WAIT`]. One stuck past that (a DNS lookup, an admin change waiting on a reactor) is
/// named in the log and left to end with the process.
fn stop_helpers(
    (signals, watcher): (signal_hook::iterator::Handle, Worker),
    admin: AdminHandle,
    health: lb::health::HealthHandle,
    discovery: discovery::DiscoveryHandle,
) {
    let deadline = Instant::now() + STOP_WAIT;
    // First, so that a SIGHUP now reloads nothing.
    signals.close();
    let mut ended = watcher.join_by(deadline);
    let (connections, admin_ended) = admin.stop(deadline);
    ended &= admin_ended;
    ended &= health.stop(deadline);
    ended &= discovery.stop(deadline);
    if ended {
        info!(
            "stopped: admin API ({connections} connections closed), event streams, health \
             checks, discovery"
        );
    }
}

/// SIGTERM or SIGINT: a graceful stop (a second one stops at once). SIGHUP: re-read the
/// configuration file and apply it; a file that does not validate changes nothing.
fn watch_signals(
    reactors: Vec<Handle>,
    tls: Option<Arc<TlsAcceptor>>,
    access: Arc<Sink>,
    discovery: discovery::Reloader,
    cli: Cli,
) -> std::io::Result<(signal_hook::iterator::Handle, Worker)> {
    let broadcast = move |make: &dyn Fn() -> Command| {
        for reactor in &reactors {
            reactor.send(make());
        }
    };
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let watcher = Worker::spawn("signals", move || {
        let mut stopping = false;
        for signal in signals.forever() {
            match signal {
                SIGHUP => match load_config(&cli) {
                    Ok(config) => {
                        info!("SIGHUP: reloading the configuration");
                        // After a rotation the file is opened again under its name.
                        access.reopen(config.access_log_path.clone());
                        // Once for every reactor: they share the acceptor. New connections
                        // get the new certificates; open ones keep theirs.
                        match (&tls, &config.tls) {
                            (Some(acceptor), Some(new)) => {
                                if let Err(e) = acceptor.reload(new) {
                                    error!(
                                        "SIGHUP: certificates refused, the running ones stay: {e}"
                                    );
                                }
                            }
                            (None, Some(_)) | (Some(_), None) => {
                                warn!("SIGHUP: adding or removing [tls] needs a restart")
                            }
                            (None, None) => {}
                        }
                        broadcast(&|| Command::Reload(Box::new(config.clone())));
                        // After the reactors' reload in their queues: the pools a new entry
                        // names exist by the time its first backends are added.
                        discovery.reload(discovery::entries(&config), config.discovery.clone());
                    }
                    Err(message) => {
                        error!("SIGHUP: configuration refused, the running one stays: {message}")
                    }
                },
                _ if stopping => {
                    info!("second stop signal: stopping now");
                    broadcast(&|| Command::Shutdown);
                }
                _ => {
                    stopping = true;
                    broadcast(&|| Command::Drain);
                }
            }
        }
    })?;
    Ok((handle, watcher))
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    config.apply(cli).map_err(|e| e.to_string())?;
    Ok(config)
}

/// `RUST_LOG` (a level name such as `debug`) wins over the configured level, so a running
/// setup can be made verbose without editing its file.
fn init_logging(configured: LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(configured);
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Error)
        .set_thread_level(LevelFilter::Off)
        .build();
    let _ = TermLogger::init(level, config, TerminalMode::Stderr, ColorChoice::Never);
}
