//! Backend tables wherever they stand: the top-level `[[backend]]` list (the pool `default`)
//! and each `[[pool.backend]]` list. Names are unique across every pool, so the admin API,
//! the logs and the metrics can name a backend without its pool.

use std::collections::HashMap;
use std::net::SocketAddr;

use toml::Spanned;

use super::checks::*;
use super::error::{line_of, ConfigError};
use super::raw::RawBackend;
use super::validate::Values;
use super::{BackendConfig, DiscoverConfig, DEFAULT_BACKEND_WEIGHT};

/// The largest `weight`: HAProxy's bound, and what keeps a consistent-hash ring (points per
/// unit of weight) and smooth weighted round-robin arithmetic small.
pub const MAX_BACKEND_WEIGHT: i64 = 256;

/// Backend names already given, with the key and line of the table that gave each.
pub(super) type SeenNames = HashMap<String, (String, usize)>;

/// A backend table: a fixed address, or a name to look up.
enum Entry {
    Static(BackendConfig),
    Discover(DiscoverConfig),
}

impl Values<'_> {
    /// The tables of one list, keyed `{list}[N]` (`backend`, `pool[1].backend`), joining
    /// `pool`; `default_name` names a table without `name` by its index.
    pub(super) fn backend_list(
        &self,
        list: &str,
        pool: &str,
        entries: &[Spanned<RawBackend>],
        seen: &mut SeenNames,
        default_name: impl Fn(usize) -> String,
    ) -> Result<(Vec<BackendConfig>, Vec<DiscoverConfig>), ConfigError> {
        let mut backends = Vec::with_capacity(entries.len());
        let mut discover = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let table = format!("{list}[{index}]");
            let table_line = line_of(self.text, entry.span().start);
            let raw = entry.get_ref();
            let name = match &raw.name {
                Some(n) => {
                    check_backend_name(n.get_ref())
                        .map_err(|m| self.fail(&format!("{table}.name"), n.span(), m))?;
                    n.get_ref().clone()
                }
                None => default_name(index),
            };
            if let Some((first, first_line)) = seen.get(&name) {
                let used = format!("already used by {first} on line {first_line}");
                return Err(match &raw.name {
                    Some(n) => self.fail(
                        &format!("{table}.name"),
                        n.span(),
                        format!("duplicate backend name (names are unique across pools), {used}"),
                    ),
                    None => ConfigError::at_key(
                        &format!("{table}.name"),
                        Some(table_line),
                        format!(
                            "the default name {name:?} is {used}; give one of them another name"
                        ),
                    ),
                });
            }
            let name_line = raw
                .name
                .as_ref()
                .map_or(table_line, |n| line_of(self.text, n.span().start));
            seen.insert(name.clone(), (table.clone(), name_line));
            match self.backend(&table, name, pool, raw, table_line)? {
                Entry::Static(b) => backends.push(b),
                Entry::Discover(d) => discover.push(d),
            }
        }
        Ok((backends, discover))
    }

    fn backend(
        &self,
        table: &str,
        name: String,
        pool: &str,
        raw: &RawBackend,
        line: usize,
    ) -> Result<Entry, ConfigError> {
        let weight_key = format!("{table}.weight");
        let weight = self.int(&weight_key, raw.weight.as_ref(), DEFAULT_BACKEND_WEIGHT, 1)?;
        if let Some(w) = &raw.weight {
            if *w.get_ref() > MAX_BACKEND_WEIGHT {
                return Err(self.fail(
                    &weight_key,
                    w.span(),
                    format!("must be at most {MAX_BACKEND_WEIGHT}"),
                ));
            }
        }
        let backup = raw.backup.unwrap_or(false);
        let written = raw.address.as_ref().or(raw.discover.as_ref());
        let tls = super::tls::backend(self, table, raw, written.map(|w| w.get_ref().as_str()))?;
        match (&raw.address, &raw.discover) {
            (Some(address), None) => {
                let address: SocketAddr = resolve_address(address.get_ref())
                    .and_then(check_backend_port)
                    .map_err(|m| self.fail(&format!("{table}.address"), address.span(), m))?;
                Ok(Entry::Static(BackendConfig {
                    name,
                    address,
                    weight,
                    tls,
                    backup,
                }))
            }
            (None, Some(discover)) => {
                let target = parse_discover(discover.get_ref())
                    .map_err(|m| self.fail(&format!("{table}.discover"), discover.span(), m))?;
                Ok(Entry::Discover(DiscoverConfig {
                    name,
                    pool: pool.to_string(),
                    backup,
                    target,
                    weight,
                    tls,
                }))
            }
            (Some(_), Some(discover)) => Err(self.fail(
                &format!("{table}.discover"),
                discover.span(),
                "a backend has either address or discover, not both",
            )),
            (None, None) => Err(ConfigError::at_key(
                &format!("{table}.address"),
                Some(line),
                "missing: give address = \"host:port\" or discover = \"name:port\"",
            )),
        }
    }
}
