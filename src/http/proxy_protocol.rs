//! The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4 proxy in front of us
//! sends first on a connection, carrying the original client's address.
//!
//! Only connections from trusted addresses may send it (`proxy_protocol_from`); from anyone
//! else a PROXY line is just a malformed HTTP request, so a client cannot choose the address
//! the backends see.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header took.
    pub len: usize,
    /// The original client, or `None` for `UNKNOWN` / `LOCAL` (the sender's own connection,
    /// such as its health checks): then the peer address stands.
    pub source: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeaderError(pub &'static str);

/// Parses the header at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] == V2_SIGNATURE[..sig_len] {
        return if buf.len() < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let prefix = buf.len().min(6);
    if buf[..prefix] != b"PROXY "[..prefix] {
        return Err(ProxyHeaderError("no PROXY protocol header"));
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    // A line that cannot become a valid one is refused as soon as it shows, rather than when
    // the header timeout gives up on its CRLF: a byte that is not text, or a protocol that is
    // not one of the three.
    let line = &buf[..buf.len().min(V1_MAX)];
    if let Some(i) = line.iter().position(|b| !(b' '..=b'~').contains(b)) {
        if line[i] != b'\r' || line.get(i + 1).is_some_and(|&b| b != b'\n') {
            return Err(ProxyHeaderError("PROXY v1 line is not text"));
        }
    }
    let rest = &line[line.len().min(6)..];
    let protocol = rest
        .split(|&b| b == b' ' || b == b'\r')
        .next()
        .unwrap_or_default();
    // Ended by a space or CR, the protocol must be one; still arriving, the start of one.
    let ended = protocol.len() < rest.len();
    let known = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"];
    let fits = |k: &&[u8]| *k == protocol || (!ended && k.starts_with(protocol));
    if !known.iter().any(fits) {
        return Err(ProxyHeaderError("unknown PROXY v1 protocol"));
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError("PROXY v1 line too long"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyHeaderError("PROXY v1 line is not text"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let source = match parts.next() {
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields.as_slice() else {
                return Err(ProxyHeaderError("PROXY v1 line needs four fields"));
            };
            let src: IpAddr = src
                .parse()
                .map_err(|_| ProxyHeaderError("bad source address"))?;
            let dst: IpAddr = dst
                .parse()
                .map_err(|_| ProxyHeaderError("bad destination address"))?;
            if (family == "TCP4") != (src.is_ipv4() && dst.is_ipv4()) {
                return Err(ProxyHeaderError("address family mismatch"));
            }
            let port = |p: &str| -> Result<u16, ProxyHeaderError> {
                // Decimal without leading zeros or sign, as the specification writes them.
                if p.is_empty()
                    || (p.len() > 1 && p.starts_with('0'))
                    || !p.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(ProxyHeaderError("bad port"));
                }
                p.parse().map_err(|_| ProxyHeaderError("bad port"))
            };
            let sport = port(sport)?;
            port(dport)?;
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyHeaderError("unknown PROXY v1 protocol")),
    };
    Ok(Some(ProxyHeader {
        len: end + 2,
        source,
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    // The version and command are judged as soon as their byte is in, not after the rest.
    if let Some(&version_command) = buf.get(12) {
        if version_command >> 4 != 2 {
            return Err(ProxyHeaderError("PROXY v2 with a version other than 2"));
        }
        if version_command & 0x0f > 1 {
            return Err(ProxyHeaderError("unknown PROXY v2 command"));
        }
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + length;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let source = match version_command & 0x0f {
        // LOCAL: the proxy's own connection; the addresses, if any, are to be ignored.
        0x0 => None,
        0x1 => match buf[13] {
            // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
            0x11 if body.len() >= 12 => {
                let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([body[8], body[9]]),
                ))
            }
            // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
            0x21 if body.len() >= 36 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[..16]);
                let ip = Ipv6Addr::from(octets);
                Some(SocketAddr::new(
                    IpAddr::V6(ip),
                    u16::from_be_bytes([body[32], body[33]]),
                ))
            }
            // UNSPEC, UDP or UNIX sockets: nothing usable for X-Forwarded-For.
            0x00 | 0x12 | 0x22 | 0x31 | 0x32 => None,
            0x11 | 0x21 => return Err(ProxyHeaderError("PROXY v2 address block too short")),
            _ => return Err(ProxyHeaderError("unknown PROXY v2 address family")),
        },
        _ => return Err(ProxyHeaderError("unknown PROXY v2 command")),
    };
    Ok(Some(ProxyHeader { len: total, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(h.len, 43);
        assert_eq!(h.source, Some("203.0.113.7:56324".parse().unwrap()));
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        let h = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, None);
    }

    #[test]
    fn v1_incomplete_then_complete() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        for n in 0..line.len() {
            assert_eq!(parse(&line[..n]), Ok(None), "{n}");
        }
        assert!(parse(line).unwrap().is_some());
    }

    #[test]
    fn v1_refuses_malformed_lines() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            // Refused before the line ends.
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4\x00",
            b"PROXY TCP4 1.2.3.4\rX",
            b"PROXY UDP",
            b"PROXY UDP4 ",
            b"PROXY TCP44",
            b"PROXY TCP4\t",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(parse(&long).is_err());
    }

    #[test]
    fn v2_tcp4_tcp6_local_and_partial() {
        let body4 = [192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 80];
        let h4 = v2(1, 0x11, &body4);
        assert_eq!(
            parse(&h4).unwrap(),
            Some(ProxyHeader {
                len: 28,
                source: Some("192.0.2.9:8080".parse().unwrap())
            })
        );
        for n in 0..h4.len() {
            assert_eq!(parse(&h4[..n]), Ok(None), "{n}");
        }
        let mut body6 = vec![0u8; 36];
        body6[15] = 1;
        body6[32..34].copy_from_slice(&9000u16.to_be_bytes());
        let h6 = v2(1, 0x21, &body6);
        assert_eq!(
            parse(&h6).unwrap().unwrap().source,
            Some("[::1]:9000".parse().unwrap())
        );
        // LOCAL, with a TLV or two after it: skipped whole.
        let local = v2(0, 0x00, &[1, 0, 1, 0xff]);
        assert_eq!(
            parse(&local).unwrap(),
            Some(ProxyHeader {
                len: 20,
                source: None
            })
        );
    }

    #[test]
    fn v2_refuses_bad_versions_commands_and_families() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert!(parse(&bad_version).is_err());
        assert!(parse(&v2(0x2, 0x11, &[0; 12])).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err());
        assert!(parse(&v2(1, 0x99, &[0; 12])).is_err());
        // The version and command byte is judged as soon as it is in.
        assert!(parse(&bad_version[..13]).is_err());
        assert!(parse(&v2(0x2, 0x11, &[0; 12])[..13]).is_err());
    }
}
