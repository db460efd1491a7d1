//! Service discovery from DNS: the discovery thread looks up every `[[backend]] discover = ...`
//! each `discovery.resolve_interval`, off the reactor, and turns changes in the answers into
//! backend additions and removals.
//!
//! This is how Kubernetes headless Services (A records, one per ready pod) and Consul
//! (`_name._tcp.service.consul` SRV records) publish endpoints. Every address in an answer is a
//! backend named `entry@address`; a new one joins down and takes traffic once it has passed
//! `health.rise` checks; a vanished one is removed (requests in flight on it finish). A failed
//! or empty lookup keeps the last known set and is logged: DNS trouble never empties the pool.
//! A reload (SIGHUP) hands the thread the new entries: a removed or changed entry's backends go,
//! a new one's are looked up at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};

use crate::config::{BackendConfig, DiscoverConfig, DiscoverTarget, DiscoverySettings};
use crate::reactor::{Change, Command, Handle};
use crate::threads::{Worker, STOP_WAIT};

/// How long the thread waits for the reactor to apply one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest DNS answer read over UDP (EDNS sizes; a truncated answer is used as far as it goes).
const MAX_ANSWER: usize = 4096;

/// The DNS servers to ask: the configured ones, else the `nameserver`s of /etc/resolv.conf,
/// else a resolver on this machine.
pub fn resolvers(settings: &DiscoverySettings) -> Vec<SocketAddr> {
    if !settings.resolvers.is_empty() {
        return settings.resolvers.clone();
    }
    let from_file: Vec<SocketAddr> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if from_file.is_empty() {
        vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 53))]
    } else {
        from_file
    }
}

/// The addresses `target` names now.
pub fn resolve(
    target: &DiscoverTarget,
    resolvers: &[SocketAddr],
    timeout: Duration,
) -> Result<BTreeSet<SocketAddr>, String> {
    match target {
        DiscoverTarget::Host { host, port } => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(BTreeSet::from([SocketAddr::new(ip, *port)]));
            }
            let mut found = BTreeSet::new();
            let mut errors = Vec::new();
            for qtype in [TYPE::A, TYPE::AAAA] {
                match query(host, qtype, resolvers, timeout) {
                    Ok(answer) => {
                        found.extend(answer.addresses(host).map(|ip| SocketAddr::new(ip, *port)))
                    }
                    Err(e) => errors.push(e),
                }
            }
            // Either family may legitimately be absent; both failing is a failed lookup.
            if found.is_empty() && errors.len() == 2 {
                return Err(errors.join("; "));
            }
            Ok(found)
        }
        DiscoverTarget::Srv(name) => {
            let answer = query(name, TYPE::SRV, resolvers, timeout)?;
            let mut found = BTreeSet::new();
            for (target, port) in &answer.services {
                let mut ips: Vec<IpAddr> = answer.addresses(target).collect();
                if ips.is_empty() {
                    // The server left the targets' addresses out: ask for them.
                    for qtype in [TYPE::A, TYPE::AAAA] {
                        if let Ok(more) = query(target, qtype, resolvers, timeout) {
                            ips.extend(more.addresses(target));
                        }
                    }
                }
                found.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, *port)));
            }
            Ok(found)
        }
    }
}

/// What an answer said, owned (simple-dns packets borrow the datagram).
#[derive(Debug, Default)]
struct Answer {
    /// (owner name, address) from A and AAAA records in any section.
    addresses: Vec<(String, IpAddr)>,
    /// (target, port) from SRV records.
    services: Vec<(String, u16)>,
    /// CNAME aliases: (alias, canonical name).
    aliases: Vec<(String, String)>,
}

impl Answer {
    /// Addresses of `name`, following CNAMEs within the answer.
    fn addresses<'a>(&'a self, name: &str) -> impl Iterator<Item = IpAddr> + 'a {
        let mut names = vec![name.trim_end_matches('.').to_ascii_lowercase()];
        for _ in 0..8 {
            let next: Vec<String> = self
                .aliases
                .iter()
                .filter(|(alias, _)| names.contains(alias))
                .map(|(_, canonical)| canonical.clone())
                .filter(|c| !names.contains(c))
                .collect();
            if next.is_empty() {
                break;
            }
            names.extend(next);
        }
        self.addresses
            .iter()
            .filter(move |(owner, _)| names.contains(owner))
            .map(|(_, ip)| *ip)
    }
}

fn normalize(name: &Name) -> String {
    name.to_string().trim_end_matches('.').to_ascii_lowercase()
}

fn query(
    name: &str,
    qtype: TYPE,
    resolvers: &[SocketAddr],
    timeout: Duration,
) -> Result<Answer, String> {
    let id = fastrand::u16(..);
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| format!("{name}: {e}"))?;
    packet
        .questions
        .push(Question::new(qname, qtype.into(), CLASS::IN.into(), false));
    let request = packet
        .build_bytes_vec()
        .map_err(|e| format!("{name}: {e}"))?;
    let mut last_error = String::from("no DNS server configured");
    for &server in resolvers {
        match exchange(&request, id, server, timeout) {
            Ok(datagram) => return parse_answer(&datagram, name),
            Err(e) => last_error = format!("{name} via {server}: {e}"),
        }
    }
    Err(last_error)
}

fn exchange(request: &[u8], id: u16, server: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.send(request)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_ANSWER];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        let n = socket.recv(&mut buf)?;
        // A stray datagram (a late answer to an earlier query) is not ours.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

fn parse_answer(datagram: &[u8], name: &str) -> Result<Answer, String> {
    let packet = Packet::parse(datagram).map_err(|e| format!("{name}: bad DNS answer: {e}"))?;
    match packet.rcode() {
        RCODE::NoError => {}
        // The name has no records: an answer, and an empty one.
        RCODE::NameError => return Ok(Answer::default()),
        code => return Err(format!("{name}: DNS server answered {code:?}")),
    }
    let mut answer = Answer::default();
    for record in packet
        .answers
        .iter()
        .chain(packet.additional_records.iter())
    {
        let owner = normalize(&record.name);
        match &record.rdata {
            RData::A(a) => answer
                .addresses
                .push((owner, IpAddr::V4(Ipv4Addr::from(a.address)))),
            RData::AAAA(aaaa) => answer
                .addresses
                .push((owner, IpAddr::V6(Ipv6Addr::from(aaaa.address)))),
            RData::SRV(srv) => answer.services.push((normalize(&srv.target), srv.port)),
            RData::CNAME(cname) => answer.aliases.push((owner, normalize(&cname.0))),
            _ => {}
        }
    }
    Ok(answer)
}

/// What the discovery thread is told.
enum Control {
    /// The entries and settings of a reloaded configuration (SIGHUP).
    Reload(Vec<DiscoverConfig>, DiscoverySettings),
    Stop,
}

/// Controls the discovery thread; stops it when dropped, waiting at most [`STOP_WAIT`].
pub struct DiscoveryHandle {
    control: Sender<Control>,
    worker: Option<Worker>,
}

impl DiscoveryHandle {
    /// A way for another thread (the signal watcher) to hand the thread a reload.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.control.clone())
    }

    /// Stops the thread and waits for it until `deadline` (a lookup under way may hold it up
    /// to `discovery.timeout`); returns whether it ended in time.
    pub fn stop(mut self, deadline: Instant) -> bool {
        let _ = self.control.send(Control::Stop);
        self.worker.take().is_none_or(|w| w.join_by(deadline))
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(worker) = self.worker.take() {
            worker.join_by(Instant::now() + STOP_WAIT);
        }
    }
}

/// Hands the discovery thread a reloaded configuration's `discover` entries.
#[derive(Clone)]
pub struct Reloader(Sender<Control>);

impl Reloader {
    /// From now on the thread looks up `entries` (at once, then each `resolve_interval`): the
    /// backends of an entry that is gone or changed are removed, a new or changed entry's are
    /// added as its lookups find them.
    pub fn reload(&self, entries: Vec<DiscoverConfig>, settings: DiscoverySettings) {
        let _ = self.0.send(Control::Reload(entries, settings));
    }
}

/// Every `discover` entry of every pool of `config`.
pub fn entries(config: &crate::config::Config) -> Vec<DiscoverConfig> {
    config
        .pools_in_effect()
        .into_iter()
        .flat_map(|p| p.discover)
        .collect()
}

/// Starts the discovery thread (with no entries it waits for a reload that brings some);
/// changes go to `reactor`.
pub fn spawn(
    entries: Vec<DiscoverConfig>,
    settings: DiscoverySettings,
    reactor: Handle,
) -> io::Result<DiscoveryHandle> {
    let (control, orders) = crossbeam_channel::unbounded();
    let worker = Worker::spawn("discovery", move || {
        let mut discoverer = Discoverer {
            entries: Vec::new(),
            settings: settings.clone(),
            servers: Vec::new(),
            known: BTreeMap::new(),
            reactor,
        };
        discoverer.reload(entries, settings);
        discoverer.run(&orders);
    })?;
    Ok(DiscoveryHandle {
        control,
        worker: Some(worker),
    })
}

/// The discovery thread's state.
struct Discoverer {
    entries: Vec<DiscoverConfig>,
    settings: DiscoverySettings,
    servers: Vec<SocketAddr>,
    /// Per entry name, the addresses the reactor accepted as backends.
    known: BTreeMap<String, BTreeSet<SocketAddr>>,
    reactor: Handle,
}

impl Discoverer {
    fn run(&mut self, orders: &Receiver<Control>) {
        loop {
            let interrupted = self.round(orders);
            let order = match interrupted {
                Some(order) => Ok(order),
                // Nothing to look up: nothing to do until told.
                None if self.entries.is_empty() => orders.recv().map_err(|_| ()),
                None => match orders.recv_timeout(self.settings.resolve_interval) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(order) => Ok(order),
                    Err(RecvTimeoutError::Disconnected) => Err(()),
                },
            };
            match order {
                Ok(Control::Reload(entries, settings)) => self.reload(entries, settings),
                Ok(Control::Stop) | Err(()) => return,
            }
        }
    }

    /// Looks every entry up once and applies what changed; an order that arrives meanwhile
    /// ends the round early and is returned.
    fn round(&mut self, orders: &Receiver<Control>) -> Option<Control> {
        for entry in &self.entries {
            if let Ok(order) = orders.try_recv() {
                return Some(order);
            }
            match resolve(&entry.target, &self.servers, self.settings.timeout) {
                Ok(found) if found.is_empty() => {
                    warn!(
                        "discovery: {} has no addresses; keeping the last known set",
                        entry.name
                    );
                }
                Ok(found) => {
                    let before = self.known.entry(entry.name.clone()).or_default();
                    apply(entry, before, &found, &self.reactor);
                }
                Err(e) => warn!(
                    "discovery: lookup for {} failed ({e}); keeping the last known set",
                    entry.name
                ),
            }
        }
        None
    }

    /// Takes a reload's entries: the backends of an entry that is gone, or changed in any way
    /// (target, pool, weight, TLS, backup), are removed now; the new ones are looked up next.
    fn reload(&mut self, entries: Vec<DiscoverConfig>, settings: DiscoverySettings) {
        for old in &self.entries {
            if entries.contains(old) {
                continue;
            }
            let known = self.known.remove(&old.name).unwrap_or_default();
            info!(
                "discovery: {} is no longer configured as it was; removing its {} backends",
                old.name,
                known.len()
            );
            for address in known {
                // Its pool may have gone with the reload, and its backends with it.
                ask(
                    &self.reactor,
                    Change::Remove(backend_name(&old.name, address)),
                );
            }
        }
        let servers = resolvers(&settings);
        if !entries.is_empty()
            && (self.entries.is_empty() || servers != self.servers || settings != self.settings)
        {
            info!(
                "discovery: asking {servers:?} every {:?}",
                settings.resolve_interval
            );
        }
        self.entries = entries;
        self.settings = settings;
        self.servers = servers;
    }
}

/// The backend name for one discovered address.
pub fn backend_name(entry: &str, address: SocketAddr) -> String {
    format!("{entry}@{address}")
}

/// Sends the additions and removals that turn `known` into `found`; `known` follows what the
/// reactor accepted.
fn apply(
    entry: &DiscoverConfig,
    known: &mut BTreeSet<SocketAddr>,
    found: &BTreeSet<SocketAddr>,
    reactor: &Handle,
) {
    for &address in found.difference(&known.clone()) {
        let config = BackendConfig {
            name: backend_name(&entry.name, address),
            address,
            weight: entry.weight,
            tls: entry.tls.clone(),
            backup: entry.backup,
        };
        if ask(reactor, Change::Discovered(entry.pool.clone(), config)) {
            info!("discovery: {} gained {address}", entry.name);
            known.insert(address);
        }
    }
    for &address in known.clone().difference(found) {
        if ask(reactor, Change::Remove(backend_name(&entry.name, address))) {
            info!("discovery: {} lost {address}", entry.name);
        }
        known.remove(&address);
    }
}

fn ask(reactor: &Handle, change: Change) -> bool {
    let (reply, answer) = crossbeam_channel::bounded(1);
    reactor.send(Command::Change(change, reply));
    matches!(answer.recv_timeout(CHANGE_TIMEOUT), Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, SRV};
    use simple_dns::ResourceRecord;

    fn reply(
        records: Vec<ResourceRecord<'static>>,
        additional: Vec<ResourceRecord<'static>>,
    ) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.answers = records;
        p.additional_records = additional;
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn srv_answers_with_additional_addresses() {
        let srv = |target: &'static str, port| {
            ResourceRecord::new(
                Name::new_unchecked("_http._tcp.app.test"),
                CLASS::IN,
                5,
                RData::SRV(SRV {
                    priority: 0,
                    weight: 0,
                    port,
                    target: Name::new_unchecked(target),
                }),
            )
        };
        let a = |owner: &'static str, ip: Ipv4Addr| {
            ResourceRecord::new(
                Name::new_unchecked(owner),
                CLASS::IN,
                5,
                RData::A(A { address: ip.into() }),
            )
        };
        let datagram = reply(
            vec![srv("a.app.test", 8001), srv("b.app.test", 8002)],
            vec![
                a("a.app.test", Ipv4Addr::new(10, 0, 0, 1)),
                a("B.app.test.", Ipv4Addr::new(10, 0, 0, 2)),
            ],
        );
        let answer = parse_answer(&datagram, "_http._tcp.app.test").unwrap();
        assert_eq!(
            answer.services,
            [
                ("a.app.test".to_string(), 8001),
                ("b.app.test".to_string(), 8002)
            ]
        );
        assert_eq!(
            answer.addresses("b.app.test").collect::<Vec<_>>(),
            [IpAddr::from([10, 0, 0, 2])]
        );
    }

    #[test]
    fn cnames_are_followed_within_the_answer() {
        let datagram = reply(
            vec![
                ResourceRecord::new(
                    Name::new_unchecked("api.test"),
                    CLASS::IN,
                    5,
                    RData::CNAME(simple_dns::rdata::CNAME(Name::new_unchecked("pods.test"))),
                ),
                ResourceRecord::new(
                    Name::new_unchecked("pods.test"),
                    CLASS::IN,
                    5,
                    RData::A(A {
                        address: 0x0a000009,
                    }),
                ),
            ],
            vec![],
        );
        let answer = parse_answer(&datagram, "api.test").unwrap();
        assert_eq!(
            answer.addresses("api.test").collect::<Vec<_>>(),
            [IpAddr::from([10, 0, 0, 9])]
        );
    }

    #[test]
    fn literal_addresses_need_no_lookup() {
        let target = DiscoverTarget::Host {
            host: "127.0.0.1".into(),
            port: 80,
        };
        let found = resolve(&target, &[], Duration::from_millis(10)).unwrap();
        assert_eq!(found, BTreeSet::from(["127.0.0.1:80".parse().unwrap()]));
    }

    #[test]
    fn an_unreachable_server_is_a_failed_lookup() {
        // A UDP port nobody listens on: the query gets a refusal or times out.
        let target = DiscoverTarget::Host {
            host: "api.test".into(),
            port: 80,
        };
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = socket.local_addr().unwrap();
        drop(socket);
        assert!(resolve(&target, &[dead], Duration::from_millis(200)).is_err());
    }
}
