//! A DNS server on loopback for the discovery tests.

use std::net::SocketAddr;
use std::thread;

use super::DemoBackend;

/// Records a test DNS server answers with; change them while it runs.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// name -> IPv4 addresses (A records).
    pub a: std::collections::HashMap<String, Vec<std::net::Ipv4Addr>>,
    /// name -> (target, port) (SRV records); the targets' A records go in the additional section.
    pub srv: std::collections::HashMap<String, Vec<(String, u16)>>,
}

impl Zone {
    /// An SRV record `srv` naming each backend as `NAME.domain` (an A record to loopback) at
    /// its port.
    pub fn srv_of(srv: &str, domain: &str, backends: &[&DemoBackend]) -> Zone {
        let mut zone = Zone::default();
        let mut targets = Vec::new();
        for b in backends {
            let host = format!("{}.{domain}", b.name);
            zone.a
                .insert(host.clone(), vec![std::net::Ipv4Addr::LOCALHOST]);
            targets.push((host, b.addr.port()));
        }
        zone.srv.insert(srv.to_string(), targets);
        zone
    }
}

/// A DNS server on UDP 127.0.0.1, port 0, answering from a [`Zone`] the test can change.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub zone: std::sync::Arc<std::sync::Mutex<Zone>>,
    pub queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> DnsServer {
        let zone = std::sync::Arc::new(std::sync::Mutex::new(zone));
        let shared = std::sync::Arc::clone(&zone);
        DnsServer::serve(zone, move || shared.lock().expect("zone").clone())
    }

    /// A server that answers each query from the zone `answer` gives then: for records that
    /// change at every lookup, faster than a test could [`DnsServer::set`] them.
    pub fn answering(answer: impl FnMut() -> Zone + Send + 'static) -> DnsServer {
        DnsServer::serve(std::sync::Arc::default(), answer)
    }

    fn serve(
        zone: std::sync::Arc<std::sync::Mutex<Zone>>,
        mut answer: impl FnMut() -> Zone + Send + 'static,
    ) -> DnsServer {
        use simple_dns::rdata::{RData, A, SRV};
        use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
        use std::sync::atomic::Ordering;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        let addr = socket.local_addr().expect("dns addr");
        let queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&queries);
        thread::Builder::new()
            .name("dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let Ok(query) = Packet::parse(&buf[..n]) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let zone = answer();
                    let mut reply = Packet::new_reply(query.id());
                    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
                    let mut found = false;
                    for q in &query.questions {
                        reply.questions.push(q.clone());
                        let name = q.qname.to_string().trim_end_matches('.').to_string();
                        let a_records = |owner: &str| -> Vec<ResourceRecord<'static>> {
                            zone.a
                                .get(owner)
                                .into_iter()
                                .flatten()
                                .map(|ip| {
                                    ResourceRecord::new(
                                        Name::new_unchecked(owner).into_owned(),
                                        CLASS::IN,
                                        1,
                                        RData::A(A {
                                            address: u32::from(*ip),
                                        }),
                                    )
                                })
                                .collect()
                        };
                        if q.qtype == QTYPE::TYPE(TYPE::A) {
                            let records = a_records(&name);
                            found |= zone.a.contains_key(&name);
                            reply.answers.extend(records);
                        } else if q.qtype == QTYPE::TYPE(TYPE::SRV) {
                            for (target, port) in zone.srv.get(&name).into_iter().flatten() {
                                found = true;
                                reply.answers.push(ResourceRecord::new(
                                    Name::new_unchecked(&name).into_owned(),
                                    CLASS::IN,
                                    1,
                                    RData::SRV(SRV {
                                        priority: 0,
                                        weight: 1,
                                        port: *port,
                                        target: Name::new_unchecked(target).into_owned(),
                                    }),
                                ));
                                reply.additional_records.extend(a_records(target));
                            }
                        } else {
                            found |= zone.a.contains_key(&name) || zone.srv.contains_key(&name);
                        }
                    }
                    if !found {
                        *reply.rcode_mut() = RCODE::NameError;
                    }
                    if let Ok(bytes) = reply.build_bytes_vec() {
                        let _ = socket.send_to(&bytes, peer);
                    }
                }
            })
            .expect("spawn dns");
        DnsServer {
            addr,
            zone,
            queries,
        }
    }

    pub fn set(&self, zone: Zone) {
        *self.zone.lock().expect("zone") = zone;
    }
}
