//! Two reactors' pools on one exchange, with real loopback sockets and real polls.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::{IdleExchange, Pool};
use crate::token::{self, Target};
use crate::transport::Transport;
use crate::upstream::BackendId;

const IDLE: Duration = Duration::from_secs(30);
/// The backend in slot 0, as the tests' connections go to.
const B0: BackendId = BackendId::initial(0);

struct Reactor {
    poll: Poll,
    pool: Pool,
}

fn reactors(max_idle: usize) -> (Reactor, Reactor) {
    let exchange = Arc::new(IdleExchange::default());
    let one = || {
        let poll = Poll::new().expect("poll");
        let shelves = exchange.join(poll.registry().try_clone().expect("registry"));
        Reactor {
            pool: Pool::new(shelves, max_idle, IDLE),
            poll,
        }
    };
    (one(), one())
}

/// A connection to `backend` opened by `r` for session `session`: its id, the socket, and the
/// backend's end.
fn open(
    r: &mut Reactor,
    backend: &TcpListener,
    session: usize,
) -> (usize, mio::net::TcpStream, std::net::TcpStream) {
    let addr = backend.local_addr().expect("addr");
    let mut stream = mio::net::TcpStream::connect(addr).expect("connect");
    let (far, _) = backend.accept().expect("accept");
    let id = r
        .pool
        .open(&mut stream, B0, session, r.poll.registry())
        .expect("register");
    (id, stream, far)
}

/// The backend connection ids `r`'s poll reports events for within `wait`.
fn backend_events(r: &mut Reactor, wait: Duration) -> Vec<usize> {
    let mut events = Events::with_capacity(16);
    let deadline = Instant::now() + wait;
    let mut ids = Vec::new();
    while ids.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        r.poll.poll(&mut events, Some(left)).expect("poll");
        ids.extend(
            events
                .iter()
                .filter_map(|e| match token::target(e.token()) {
                    Target::Backend(id) => Some(id),
                    _ => None,
                }),
        );
    }
    ids
}

fn parked(r: &Reactor) -> usize {
    r.pool.shelves.len(0)
}

#[test]
fn idle_connections_move_between_reactors_and_their_events_follow() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut a, mut b) = reactors(8);
    let (id_a, stream, mut far) = open(&mut a, &backend, 1);
    // The connect's writable edge, on a's poll.
    assert_eq!(backend_events(&mut a, Duration::from_secs(5)), [id_a]);
    let now = Instant::now();
    a.pool.put(id_a, Transport::Plain(stream), now);
    assert_eq!(parked(&a), 1);

    // b has none of its own: it takes a's, registered with b's poll under b's token.
    let (mut taken, id_b) = b
        .pool
        .take(B0, 2, b.poll.registry(), now)
        .expect("a's idle connection");
    assert_eq!(b.pool.session_of(id_b), Some(2));
    assert_eq!(parked(&a), 0);
    assert!(a.pool.take(B0, 3, a.poll.registry(), now).is_none());
    far.write_all(b"pong").expect("backend writes");
    assert_eq!(backend_events(&mut b, Duration::from_secs(5)), [id_b]);
    assert!(
        backend_events(&mut a, Duration::from_millis(100)).is_empty(),
        "the socket left a's poll"
    );
    let mut got = [0u8; 4];
    let Transport::Plain(s) = &mut taken else {
        panic!("a plain connection");
    };
    s.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"pong");

    // a's slot for it waits for a's sweep (an event a had fetched could still name it).
    assert!(a.pool.conns.contains(id_a));
    a.pool.expire(now);
    assert!(!a.pool.conns.contains(id_a));

    // Back to b's shelf; a takes it back the same way.
    b.pool.put(id_b, taken, now);
    let (_taken_back, id_a2) = a
        .pool
        .take(B0, 4, a.poll.registry(), now)
        .expect("b's idle connection");
    far.write_all(b"ping").expect("backend writes");
    assert_eq!(backend_events(&mut a, Duration::from_secs(5)), [id_a2]);
}

#[test]
fn pool_max_idle_bounds_both_reactors_together() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    // 4 in all: each reactor may always keep 2, and more while the other leaves room.
    let (mut a, mut b) = reactors(4);
    let now = Instant::now();
    let mut far = Vec::new();
    let mut park = |r: &mut Reactor, session: usize| {
        let (id, stream, backend_end) = open(r, &backend, session);
        far.push(backend_end);
        r.pool.put(id, Transport::Plain(stream), now);
    };
    for s in 0..4 {
        park(&mut a, s);
    }
    assert_eq!(parked(&a), 4, "a may use the room b leaves");
    park(&mut a, 4);
    assert_eq!(parked(&a), 4, "the oldest went");
    for s in 0..2 {
        park(&mut b, 10 + s);
    }
    assert_eq!(parked(&b), 2, "b keeps its share");
    // a gives room back at its next sweep.
    a.pool.expire(now);
    assert_eq!(parked(&a), 2);
    assert_eq!(a.pool.shelves.total(0), 4);
}

#[test]
fn idle_connections_expire_and_closed_ones_go_at_the_sweep() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut a, _b) = reactors(8);
    let start = Instant::now();
    let mut far = Vec::new();
    let mut ids = Vec::new();
    for s in 0..3 {
        let (id, stream, backend_end) = open(&mut a, &backend, s);
        far.push(backend_end);
        ids.push(id);
        a.pool.put(
            id,
            Transport::Plain(stream),
            start + Duration::from_secs(s as u64),
        );
    }
    // The backend closes the newest. As in the reactor, every event for a parked connection
    // marks it (the connects' writable edges too); the sweep looks, and closes only that one.
    drop(far.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while parked(&a) == 3 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is still parked"
        );
        for id in backend_events(&mut a, Duration::from_millis(50)) {
            a.pool.on_idle_event(id);
        }
        a.pool.expire(start + Duration::from_secs(2));
    }
    assert_eq!(parked(&a), 2);
    // The oldest passes the idle timeout first.
    a.pool.expire(start + IDLE);
    assert_eq!(parked(&a), 1);
    let (_, id) = a
        .pool
        .take(B0, 9, a.poll.registry(), start + IDLE)
        .expect("the one left");
    assert_eq!(id, ids[1]);
}

#[test]
fn a_connection_parked_for_a_slots_earlier_backend_is_not_lent_to_its_successor() {
    let (mut a, _b) = reactors(8);
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = backend.local_addr().expect("addr");
    let old = BackendId::initial(3);
    let new = old.successor();
    let now = Instant::now();
    let park = |r: &mut Reactor, id: BackendId| {
        let mut stream = mio::net::TcpStream::connect(addr).expect("connect");
        let _ = backend.accept().expect("accept");
        let conn = r
            .pool
            .open(&mut stream, id, 0, r.poll.registry())
            .expect("register");
        r.pool.put(conn, Transport::Plain(stream), now);
        conn
    };
    park(&mut a, old);
    assert!(a.pool.take(new, 1, a.poll.registry(), now).is_none());
    assert!(
        a.pool.take(old, 1, a.poll.registry(), now).is_none(),
        "closed when found"
    );
    let fresh = park(&mut a, new);
    let taken = a.pool.take(new, 1, a.poll.registry(), now);
    assert_eq!(taken.map(|(_, id)| id), Some(fresh));

    // Forgetting the old backend leaves the new one's connections alone.
    let fresh = park(&mut a, new);
    a.pool.forget(old);
    let taken = a.pool.take(new, 2, a.poll.registry(), now);
    assert_eq!(taken.map(|(_, id)| id), Some(fresh));
}
