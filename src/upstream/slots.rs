//! The table the backends live in: slots that a removed backend gives back, and the ids that
//! name a backend for as long as it exists and never its successor in the same slot.
//!
//! DNS discovery adds and removes backends as records change, so a long-running balancer sees
//! an unbounded number of them come and go. The table stays as large as the most backends it
//! held at once (plus the few removed ones kept on show): a slot is reused once its backend is
//! forgotten, under a new generation, and an id still held somewhere (a request in flight, an
//! idle connection in a reactor's pool, a probe under way, an admin answer being written)
//! finds nothing instead of the slot's next backend.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::Backend;

/// How many removed backends stay listed (state `removed`, their counters readable) before
/// their slots are reused, the oldest first: enough for an operator or a script to see what a
/// removal did, few enough that churn costs nothing.
pub const RETAINED_REMOVED: usize = 16;

/// Names one backend: its slot and the slot's generation when the backend was put there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    slot: u32,
    generation: u32,
}

impl BackendId {
    /// The slot, for tables indexed by it (each must still compare the whole id).
    pub fn slot(self) -> usize {
        self.slot as usize
    }

    /// The id a backend put in slot `slot` of a new table gets.
    #[cfg(test)]
    pub(crate) const fn initial(slot: usize) -> BackendId {
        BackendId {
            slot: slot as u32,
            generation: 0,
        }
    }

    /// The id the next backend in the same slot gets.
    #[cfg(test)]
    pub(crate) fn successor(self) -> BackendId {
        BackendId {
            slot: self.slot,
            generation: self.generation.wrapping_add(1),
        }
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    /// When it was filled, counting every insertion: listings follow the order backends came.
    serial: u64,
    backend: Option<Arc<Backend>>,
}

/// Every slot, the empty ones to reuse, and the removed backends still listed.
#[derive(Debug, Default)]
pub struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Removed backends still listed, oldest first.
    retired: VecDeque<BackendId>,
    inserted: u64,
}

impl Slots {
    pub fn get(&self, id: BackendId) -> Option<&Arc<Backend>> {
        self.slots
            .get(id.slot())
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.backend.as_ref())
    }

    /// Slots allocated: the most backends, live and removed-but-listed, held at once.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every backend listed, removed ones included, with its id, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (BackendId, &Arc<Backend>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let id = BackendId {
                slot: i as u32,
                generation: s.generation,
            };
            s.backend.as_ref().map(|b| (id, b))
        })
    }

    /// Every backend listed, in the order they were put in.
    pub fn in_order(&self) -> Vec<Arc<Backend>> {
        let mut listed: Vec<(u64, &Arc<Backend>)> = self
            .slots
            .iter()
            .filter_map(|s| s.backend.as_ref().map(|b| (s.serial, b)))
            .collect();
        listed.sort_unstable_by_key(|(serial, _)| *serial);
        listed.into_iter().map(|(_, b)| Arc::clone(b)).collect()
    }

    /// The backend in slot `slot` now, whatever its generation (tests name configured
    /// backends by their position).
    pub fn in_slot(&self, slot: usize) -> Option<&Arc<Backend>> {
        self.slots.get(slot).and_then(|s| s.backend.as_ref())
    }

    /// Puts `backend` in a free slot, else a new one.
    pub fn insert(&mut self, backend: Arc<Backend>) -> BackendId {
        self.inserted += 1;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                // More than 4 billion backends at once is not a configuration.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.backend = Some(backend);
        entry.serial = self.inserted;
        BackendId {
            slot,
            generation: entry.generation,
        }
    }

    /// Records that the backend `id` names was removed: it stays listed until
    /// [`RETAINED_REMOVED`] newer removals push it out, and its slot is reused then.
    pub fn retire(&mut self, id: BackendId) {
        self.retired.push_back(id);
        while self.retired.len() > RETAINED_REMOVED {
            if let Some(oldest) = self.retired.pop_front() {
                self.forget(oldest);
            }
        }
    }

    fn forget(&mut self, id: BackendId) {
        let Some(slot) = self.slots.get_mut(id.slot()) else {
            return;
        };
        if slot.generation != id.generation || slot.backend.is_none() {
            return;
        }
        slot.backend = None;
        // Every id of the old backend stops matching here.
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn backend(name: &str) -> Arc<Backend> {
        let config = BackendConfig {
            name: name.into(),
            address: ([127, 0, 0, 1], 1).into(),
            weight: 1,
            tls: None,
            backup: false,
        };
        Arc::new(Backend::new(&config, 0, "default"))
    }

    #[test]
    fn a_reused_slot_is_not_reached_by_its_old_ids() {
        let mut slots = Slots::default();
        let first = slots.insert(backend("first"));
        slots.retire(first);
        assert_eq!(slots.get(first).map(|b| b.name.as_str()), Some("first"));
        for i in 0..RETAINED_REMOVED {
            let id = slots.insert(backend(&format!("filler-{i}")));
            slots.retire(id);
        }
        assert!(slots.get(first).is_none(), "pushed out by newer removals");
        let next = slots.insert(backend("next"));
        assert_eq!(next.slot(), first.slot(), "the slot is reused");
        assert_ne!(next, first);
        assert!(slots.get(first).is_none());
        assert_eq!(slots.get(next).map(|b| b.name.as_str()), Some("next"));
    }

    #[test]
    fn churn_keeps_the_table_as_large_as_the_most_held_at_once() {
        let mut slots = Slots::default();
        let stable = slots.insert(backend("stable"));
        for i in 0..100_000 {
            let id = slots.insert(backend(&format!("pod-{i}")));
            slots.retire(id);
        }
        assert_eq!(slots.len(), 1 + RETAINED_REMOVED + 1);
        assert_eq!(slots.iter().count(), 1 + RETAINED_REMOVED);
        assert!(slots.get(stable).is_some());
        let names: Vec<String> = slots.in_order().iter().map(|b| b.name.clone()).collect();
        assert_eq!(names[0], "stable");
        assert_eq!(
            names[RETAINED_REMOVED], "pod-99999",
            "listed in the order they came"
        );
    }
}
