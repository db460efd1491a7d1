//! TCP connections as the kernel lists them in /proc/net/tcp.

use std::net::SocketAddr;

/// TCP states as `/proc/net/tcp` writes them.
pub const TCP_ESTABLISHED: &str = "01";
pub const TCP_SYN_SENT: &str = "02";
pub const TCP_CLOSE_WAIT: &str = "08";

/// One row of `/proc/net/tcp`: addresses as the kernel writes them (`0100007F:1F90`), the state
/// (`01` ESTABLISHED ...) and the receive queue in bytes.
struct TcpRow {
    local: String,
    remote: String,
    state: String,
    rx_queue: u64,
}

/// The IPv4 TCP sockets of this machine, from `/proc/net/tcp`.
fn tcp_table() -> Vec<TcpRow> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, remote, state, queues, ..] = fields.as_slice() else {
                return None;
            };
            let (_, rx) = queues.split_once(':')?;
            Some(TcpRow {
                local: local.to_string(),
                remote: remote.to_string(),
                state: state.to_string(),
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// An IPv4 address as `/proc/net/tcp` writes it.
fn tcp_table_address(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        panic!("/proc/net/tcp is IPv4 only");
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    )
}

/// IPv4 connections from this machine to `remote` in one of `states`, from `/proc/net/tcp`.
pub fn connections_to(remote: SocketAddr, states: &[&str]) -> usize {
    let remote = tcp_table_address(remote);
    tcp_table()
        .iter()
        .filter(|row| row.remote == remote && states.contains(&row.state.as_str()))
        .count()
}

/// Bytes that arrived on IPv4 sockets bound to `local` and are not read yet, from the
/// `rx_queue` column of `/proc/net/tcp` (for the listening socket: connections not yet
/// accepted). Zero once the process behind `local` has taken in everything sent to it.
pub fn unread_bytes_at(local: SocketAddr) -> u64 {
    let local = tcp_table_address(local);
    tcp_table()
        .iter()
        .filter(|row| row.local == local)
        .map(|row| row.rx_queue)
        .sum()
}

/// The kernel's TCP state of the IPv4 connection `local` → `remote`, from `/proc/net/tcp`
/// (1 ESTABLISHED, 8 CLOSE_WAIT, ...); `None` once the socket is gone. Lets a test wait until a
/// close has actually reached the other side, not merely been sent.
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let (local, remote) = (tcp_table_address(local), tcp_table_address(remote));
    tcp_table()
        .iter()
        .find(|row| row.local == local && row.remote == remote)
        .and_then(|row| u8::from_str_radix(&row.state, 16).ok())
}
