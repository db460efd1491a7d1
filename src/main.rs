//! `lb`: command line → configuration → logging → the reactor.

use std::process::ExitCode;

use clap::Parser;
use log::{error, LevelFilter};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

use lb::admin::{self, Admin};
use lb::config::{Cli, Config};
use lb::reactor::Reactor;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match load_config(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("lb: {message}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{config}");
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_level);
    let mut reactor = match Reactor::bind(&config) {
        Ok(reactor) => reactor,
        Err(e) => {
            error!("cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    for backend in reactor.backends().snapshot() {
        log::info!("backend {} at {}", backend.name, backend.address);
    }
    let admin_listener = match std::net::TcpListener::bind(config.admin) {
        Ok(listener) => listener,
        Err(e) => {
            error!("cannot listen on {} (admin): {e}", config.admin);
            return ExitCode::FAILURE;
        }
    };
    // The admin API reports the addresses it serves on: with port 0 in the configuration
    // (tests, `--listen 127.0.0.1:0`) the configured ones would say `:0`, which no dashboard or
    // operator can use.
    config.listen = reactor.local_addr();
    if let Ok(addr) = admin_listener.local_addr() {
        config.admin = addr;
    }
    let admin = Admin::new(
        &config,
        reactor.backends(),
        reactor.events(),
        reactor.totals(),
        reactor.handle(),
    );
    if let Err(e) = admin::spawn(admin_listener, admin) {
        error!("cannot start the admin API: {e}");
        return ExitCode::FAILURE;
    }
    let _health = match reactor.start_health_checks(&config.health) {
        Ok(handle) => handle,
        Err(e) => {
            error!("cannot start health checks: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
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
