//! Idle keep-alive connections where every reactor can reach them.
//!
//! Each reactor parks its idle connections on its own shelves, one work-stealing deque per
//! backend. It pushes and pops the most recently used end itself, with no lock (a fence, and a
//! compare-and-swap only on a deque's last item); a reactor that has none to a backend takes the
//! oldest from another reactor's shelf before it opens a new one. With `workers = N` the process
//! then holds about as many connections to a backend as were ever in use at once over all
//! reactors, as one reactor would, instead of the sum of every reactor's own peak.
//!
//! A socket is registered with one poll, under a token naming its slot in the owner's table.
//! The taker takes it off the owner's poll (through a clone of the owner's registry), registers
//! it with its own, and tells the owner, which frees the slot at its next sweep: after it has
//! handled the events it had already fetched for that socket, so none of them can reach a
//! connection that reuses the slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_deque::{Steal, Stealer, Worker};
use mio::Registry;

use crate::transport::Transport;
use crate::upstream::BackendId;

/// An idle connection on a shelf.
pub struct Parked {
    /// Its slot in the owner's table (where its token points).
    pub slot: usize,
    /// The backend it is connected to: a shelf is a backend slot's, which a later backend may
    /// reuse.
    pub backend: BackendId,
    pub stream: Transport,
    pub since: Instant,
}

/// What the reactors of one balancer share: each one's shelves, to take from.
#[derive(Default)]
pub struct IdleExchange {
    members: RwLock<Vec<Arc<Member>>>,
    count: AtomicUsize,
}

/// One reactor as the others see it.
struct Member {
    /// A clone of its poll's registry: a socket taken from its shelves comes off its poll.
    registry: Registry,
    /// Its deques' other ends, by backend; written only when it shelves a backend's first
    /// connection.
    stealers: RwLock<Vec<Option<Stealer<Parked>>>>,
    /// Slots of its table whose connections another reactor took.
    taken: Sender<usize>,
}

impl IdleExchange {
    /// A reactor joins with a clone of its poll's registry; it gets its shelves.
    pub fn join(self: &Arc<Self>, registry: Registry) -> Shelves {
        let (taken, taken_rx) = crossbeam_channel::unbounded();
        let me = Arc::new(Member {
            registry,
            stealers: RwLock::new(Vec::new()),
            taken,
        });
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let index = members.len();
        members.push(Arc::clone(&me));
        self.count.store(members.len(), Ordering::Relaxed);
        Shelves {
            exchange: Arc::clone(self),
            me,
            index,
            deques: Vec::new(),
            taken: taken_rx,
            next_victim: index + 1,
        }
    }

    fn members(&self) -> RwLockReadGuard<'_, Vec<Arc<Member>>> {
        // Writers only push: a panic mid-write cannot leave the list torn.
        self.members.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// One reactor's idle connections, by backend.
pub struct Shelves {
    exchange: Arc<IdleExchange>,
    me: Arc<Member>,
    index: usize,
    /// The owner's end of each deque (most recently parked last) and its own stealer, which
    /// takes the oldest.
    deques: Vec<Option<(Worker<Parked>, Stealer<Parked>)>>,
    taken: Receiver<usize>,
    /// Where the next search of the other reactors starts, so that takes spread over them.
    next_victim: usize,
}

impl Shelves {
    /// How many idle connections to one backend this reactor may always keep of `max`: its
    /// share, so that the shares add up to `max`.
    pub fn share(&self, max: usize) -> usize {
        max.div_ceil(self.exchange.count.load(Ordering::Relaxed).max(1))
    }

    /// Backends with a deque here (an upper bound of the indexes used).
    pub fn backends(&self) -> usize {
        self.deques.len()
    }

    pub fn len(&self, backend: usize) -> usize {
        match self.deques.get(backend) {
            Some(Some((worker, _))) => worker.len(),
            _ => 0,
        }
    }

    /// Idle connections to `backend` on every reactor's shelves, these included.
    pub fn total(&self, backend: usize) -> usize {
        self.exchange
            .members()
            .iter()
            .map(|m| {
                let stealers = m.stealers.read().unwrap_or_else(|p| p.into_inner());
                stealers
                    .get(backend)
                    .and_then(Option::as_ref)
                    .map_or(0, Stealer::len)
            })
            .sum()
    }

    pub fn push(&mut self, backend: usize, parked: Parked) {
        if self.deques.len() <= backend {
            self.deques.resize_with(backend + 1, || None);
        }
        let (worker, _) = self.deques[backend].get_or_insert_with(|| {
            let worker = Worker::new_lifo();
            let stealer = worker.stealer();
            let mut shared = self.me.stealers.write().unwrap_or_else(|p| p.into_inner());
            if shared.len() <= backend {
                shared.resize_with(backend + 1, || None);
            }
            shared[backend] = Some(stealer.clone());
            (worker, stealer)
        });
        worker.push(parked);
    }

    /// The most recently parked connection to `backend` here.
    pub fn pop(&mut self, backend: usize) -> Option<Parked> {
        match self.deques.get(backend) {
            Some(Some((worker, _))) => worker.pop(),
            _ => None,
        }
    }

    /// The least recently parked connection to `backend` here.
    pub fn oldest(&mut self, backend: usize) -> Option<Parked> {
        match self.deques.get(backend) {
            Some(Some((_, stealer))) => steal(stealer),
            _ => None,
        }
    }

    /// Every connection to `backend` here, oldest first.
    pub fn drain(&mut self, backend: usize) -> Vec<Parked> {
        let mut all = Vec::with_capacity(self.len(backend));
        while let Some(p) = self.oldest(backend) {
            all.push(p);
        }
        all
    }

    /// Puts back what [`Shelves::drain`] took, oldest first, in the same order.
    pub fn restore(&mut self, backend: usize, parked: Vec<Parked>) {
        for p in parked {
            self.push(backend, p);
        }
    }

    /// The oldest connection to `backend` on another reactor's shelves, taken off that
    /// reactor's poll; the caller registers it with its own.
    pub fn take_from_others(&mut self, backend: usize) -> Option<Parked> {
        let members = self.exchange.members();
        let n = members.len();
        for k in 0..n {
            let i = (self.next_victim + k) % n;
            if i == self.index {
                continue;
            }
            let victim = &members[i];
            let stealers = victim.stealers.read().unwrap_or_else(|p| p.into_inner());
            let Some(stealer) = stealers.get(backend).and_then(Option::as_ref) else {
                continue;
            };
            while let Some(mut p) = steal(stealer) {
                // Off the owner's poll before the owner hears of it: from then on it may give
                // the slot (and so the token) to another connection.
                let off = p
                    .stream
                    .socket_mut()
                    .and_then(|s| victim.registry.deregister(s));
                let _ = victim.taken.send(p.slot);
                if off.is_ok() {
                    self.next_victim = i + 1;
                    return Some(p);
                }
                // Dropping it closes its only descriptor, which takes it off every poll.
            }
        }
        None
    }

    /// Slots whose connections other reactors took since the last call.
    pub fn taken(&self) -> impl Iterator<Item = usize> + '_ {
        self.taken.try_iter()
    }
}

fn steal(stealer: &Stealer<Parked>) -> Option<Parked> {
    loop {
        match stealer.steal() {
            Steal::Success(p) => return Some(p),
            Steal::Empty => return None,
            Steal::Retry => {}
        }
    }
}
