//! The `--check` summary: every effective value of a [`Config`], in config-file notation.

use std::fmt;
use std::time::Duration;

use super::{format_duration, Config, DiscoverTarget};

/// The `--check` summary: every effective value, in config-file notation.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| format_duration(d);
        let h = &self.health;
        let t = &self.timeouts;
        let l = &self.limits;
        writeln!(f, "listen      {}", self.listen)?;
        writeln!(f, "admin       {}", self.admin)?;
        writeln!(f, "algorithm   {}", self.algorithm)?;
        writeln!(f, "workers     {}", self.workers)?;
        writeln!(
            f,
            "log_level   {}",
            self.log_level.as_str().to_ascii_lowercase()
        )?;
        writeln!(f, "access_log  {}", self.access_log)?;
        writeln!(f, "busy_poll   {}", self.busy_poll)?;
        writeln!(f, "retries     {}", self.retries)?;
        writeln!(
            f,
            "health      GET {} every {}, timeout {}, rise {}, fall {}, expect {}",
            h.path,
            d(h.interval),
            d(h.timeout),
            h.rise,
            h.fall,
            h.expect
        )?;
        writeln!(
            f,
            "timeouts    connect {}, client_header {}, client_idle {}, backend_response {}, \
             backend_idle {}, tunnel {}, drain {}",
            d(t.connect),
            d(t.client_header),
            d(t.client_idle),
            d(t.backend_response),
            d(t.backend_idle),
            d(t.tunnel),
            d(t.drain)
        )?;
        writeln!(
            f,
            "limits      max_connections {}, max_header_bytes {}, max_headers {}, \
             max_target_bytes {}, pool_max_idle {}",
            l.max_connections,
            l.max_header_bytes,
            l.max_headers,
            l.max_target_bytes,
            l.pool_max_idle
        )?;
        if let Some(tls) = &self.tls {
            writeln!(
                f,
                "tls         listen {}, min_version {}, handshake_timeout {}, redirect_http {}, \
                 session_cache {}, session_tickets {}",
                tls.listen,
                tls.min_version.as_str(),
                d(tls.handshake_timeout),
                tls.redirect_http,
                tls.session_cache,
                tls.session_tickets
            )?;
            for c in &tls.certificates {
                writeln!(
                    f,
                    "  certificate {}  key {}",
                    c.cert.display(),
                    c.key.display()
                )?;
            }
        }
        write!(f, "backends    {}", self.backends.len())?;
        for b in &self.backends {
            write!(f, "\n  {}  {}  weight {}", b.name, b.address, b.weight)?;
            if let Some(tls) = &b.tls {
                write!(f, "  tls {}", tls.server_name)?;
                if let Some(ca) = &tls.ca {
                    write!(f, " (ca {})", ca.display())?;
                }
            }
        }
        for entry in &self.discover {
            let target = match &entry.target {
                DiscoverTarget::Host { host, port } => format!("{host}:{port}"),
                DiscoverTarget::Srv(name) => format!("SRV {name}"),
            };
            write!(
                f,
                "\n  {}  discover {target} every {}  weight {}",
                entry.name,
                d(self.discovery.resolve_interval),
                entry.weight
            )?;
        }
        Ok(())
    }
}
