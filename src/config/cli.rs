//! Command-line flags and how they override the file.
//!
//! Flags are applied after the file is validated, so a flag always wins, and
//! a bad flag is reported under its own name rather than a file key.

use std::path::PathBuf;

use super::checks::{
    check_backend_name, check_backend_port, default_backend_name, parse_log_level, resolve_address,
};
use super::error::ConfigError;
use super::validate::{conflicting, SAME_ADDRESS};
use super::{BackendConfig, Config, DEFAULT_BACKEND_WEIGHT, DEFAULT_POOL};

/// An HTTP/1.1 load balancer.
///
/// Settings come from the TOML file given with --config (or built-in
/// defaults); the flags below override it.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Parser)]
#[command(name = "lb", version)]
pub struct Cli {
    /// Configuration file (TOML); without it, built-in defaults are used
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept client connections on, overriding the file's listen
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// A backend as NAME=ADDR or just ADDR; repeat for several. When given,
    /// these replace every backend of the config file. Unnamed ones are
    /// called backend-N after their position among the --backend flags
    #[arg(long, value_name = "[NAME=]ADDR")]
    pub backend: Vec<String>,

    /// Address of the management API and dashboard, overriding the file's admin
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// off, error, warn, info, debug or trace, overriding the file's log_level
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Validate the configuration, print a summary and exit
    #[arg(long)]
    pub check: bool,
}

/// The flags are the overrides; `config` and `check` are for the caller and
/// ignored by [`Config::apply`].
pub type Overrides = Cli;

impl Config {
    /// Applies command-line overrides on top of this configuration.
    ///
    /// `--listen`, `--admin` and `--log-level` replace their key; any
    /// `--backend` replaces the whole backend list. Afterwards at least one
    /// backend must exist, since the file may legitimately leave them all to
    /// the command line. On error `self` is left unchanged.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        let mut next = self.clone();
        if let Some(text) = &overrides.listen {
            next.listen =
                resolve_address(text).map_err(|m| ConfigError::flag("--listen", text, m))?;
        }
        if let Some(text) = &overrides.admin {
            next.admin =
                resolve_address(text).map_err(|m| ConfigError::flag("--admin", text, m))?;
            if next.admin_token.is_none() && !next.admin.ip().is_loopback() {
                return Err(ConfigError::flag(
                    "--admin",
                    text,
                    "the admin API may listen beyond loopback only with admin_token set",
                ));
            }
        }
        if let Some(text) = &overrides.log_level {
            next.log_level =
                parse_log_level(text).map_err(|m| ConfigError::flag("--log-level", text, m))?;
        }
        if !overrides.backend.is_empty() {
            let flagged = parse_backend_flags(&overrides.backend)?;
            let taken = next
                .pools
                .iter()
                .filter(|p| p.name != DEFAULT_POOL)
                .flat_map(|p| {
                    p.backends
                        .iter()
                        .map(|b| b.name.as_str())
                        .chain(p.discover.iter().map(|d| d.name.as_str()))
                })
                .find(|name| flagged.iter().any(|f| f.name == *name));
            if let Some(name) = taken {
                return Err(ConfigError::flag(
                    "--backend",
                    name,
                    "this backend name is already used in a [[pool]]; give the flag's backend \
                     another name (--backend NAME=ADDR)",
                ));
            }
            // `--backend` replaces the pool `default`, wherever the file wrote it.
            match next.pools.iter_mut().find(|p| p.name == DEFAULT_POOL) {
                Some(pool) => {
                    pool.backends = flagged;
                    pool.discover.clear();
                }
                None => {
                    next.backends = flagged;
                    next.discover.clear();
                }
            }
        }

        if conflicting(next.listen, next.admin) {
            return Err(match (&overrides.admin, &overrides.listen) {
                (Some(text), _) => ConfigError::flag("--admin", text, SAME_ADDRESS),
                (None, Some(text)) => ConfigError::flag("--listen", text, SAME_ADDRESS),
                (None, None) => ConfigError::at_key("admin", None, SAME_ADDRESS),
            });
        }
        let members = next
            .pools_in_effect()
            .iter()
            .map(|p| p.backends.len() + p.discover.len())
            .sum::<usize>();
        if members == 0 {
            return Err(ConfigError::at_key(
                "backend",
                None,
                "no backends configured: add [[backend]] tables to the config file \
                 or pass --backend [NAME=]ADDR",
            ));
        }
        *self = next;
        Ok(())
    }
}

fn parse_backend_flags(flags: &[String]) -> Result<Vec<BackendConfig>, ConfigError> {
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(flags.len());
    for (index, flag) in flags.iter().enumerate() {
        let fail = |m: String| ConfigError::flag("--backend", flag, m);
        // An address never contains '=', so the first one ends the name.
        let (name, address) = match flag.split_once('=') {
            Some((name, address)) => {
                check_backend_name(name).map_err(fail)?;
                (name.to_string(), address)
            }
            None => (default_backend_name(index), flag.as_str()),
        };
        let address = resolve_address(address)
            .and_then(check_backend_port)
            .map_err(fail)?;
        if let Some(first) = backends.iter().position(|b| b.name == name) {
            return Err(fail(format!(
                "duplicate backend name {name:?}, already used by --backend {:?}",
                flags[first]
            )));
        }
        backends.push(BackendConfig {
            name,
            address,
            weight: DEFAULT_BACKEND_WEIGHT,
            tls: None,
            backup: false,
        });
    }
    Ok(backends)
}
