//! The clocks of the tombstones this node reaped most recently, so that a copy of a
//! value such a tombstone replaced, arriving after the reap, is recognised as superseded
//! and dropped instead of stored as the key's value (see docs/ARCHITECTURE.md,
//! *Deletes and tombstones*).
//!
//! A reap checks that every replica holds the tombstone, but a copy of an older value
//! can still be on its way: a merge queued in this node's storage before the reap and
//! run after it, or a message (an exchange's push, a read's repair, a replica write)
//! sent by a replica that held the value until just before the check. Merged into a key
//! that no longer exists, it would be stored as the key's value: the deleted value back.
//! The executor remembers each reaped tombstone's clock; a merge into the absent key
//! starts from an object holding only that clock, which covers every value the
//! tombstone replaced, so such a copy adds nothing. A new write of the key starts from it
//! too, and its object carries the clock onwards. A read of the key answers that clock
//! with no value, as a read of the tombstone did, so that a reply still includes what the
//! delete replaced (a session that saw such a value is answered, not refused).
//!
//! Bounded: the [`REAPED_KEYS_KEPT`] most recent reaps, in memory (a restart forgets
//! them, and queued merges and connections die with it).

use std::collections::{HashMap, VecDeque};

use shoal_proto::CausalContext;
use shoal_ring::PartitionId;

/// How many reaped keys' tombstone clocks an executor remembers (the oldest is forgotten
/// first): at a few hundred bytes each, some tens of MiB at most.
pub const REAPED_KEYS_KEPT: usize = 65_536;

/// See the module's text.
#[derive(Debug, Default)]
pub(crate) struct ReapedKeys {
    /// Per partition and key, the reaped tombstone's clock and the entry's generation.
    clocks: HashMap<PartitionId, HashMap<Vec<u8>, (CausalContext, u64)>>,
    /// Entries in `clocks`.
    len: usize,
    /// Keys by age of their entry, with the generation they were added under (a key
    /// reaped again gets a newer one; its older place in the queue no longer counts).
    order: VecDeque<(PartitionId, Vec<u8>, u64)>,
    next: u64,
}

impl ReapedKeys {
    /// `key`'s tombstone with `clock` was reaped.
    pub(crate) fn insert(&mut self, partition: PartitionId, key: &[u8], clock: CausalContext) {
        let generation = self.next;
        self.next += 1;
        let keys = self.clocks.entry(partition).or_default();
        if keys.insert(key.to_vec(), (clock, generation)).is_none() {
            self.len += 1;
        }
        self.order.push_back((partition, key.to_vec(), generation));
        while self.len > REAPED_KEYS_KEPT || self.order.len() > 2 * REAPED_KEYS_KEPT {
            let Some((p, old, g)) = self.order.pop_front() else {
                break;
            };
            let Some(keys) = self.clocks.get_mut(&p) else {
                continue;
            };
            if keys.get(&old).is_some_and(|(_, current)| *current == g) {
                keys.remove(&old);
                self.len -= 1;
                if keys.is_empty() {
                    self.clocks.remove(&p);
                }
            }
        }
    }

    /// The clock of `key`'s reaped tombstone, if remembered.
    pub(crate) fn clock(&self, partition: PartitionId, key: &[u8]) -> Option<CausalContext> {
        self.clocks
            .get(&partition)?
            .get(key)
            .map(|(clock, _)| clock.clone())
    }

    /// Keys remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Actor, Dot};

    fn clock(n: u64) -> CausalContext {
        let mut c = CausalContext::new();
        c.insert(Dot::new(Actor(1), n));
        c
    }

    #[test]
    fn the_oldest_reaps_are_forgotten_first_and_a_key_reaped_again_keeps_its_newest_clock() {
        let mut r = ReapedKeys::default();
        let p = PartitionId(3);
        r.insert(p, b"first", clock(1));
        r.insert(p, b"again", clock(2));
        for i in 0..REAPED_KEYS_KEPT as u64 - 2 {
            r.insert(p, &i.to_be_bytes(), clock(3));
        }
        assert_eq!(r.len(), REAPED_KEYS_KEPT);
        // Reaped again: its entry is the newest now.
        r.insert(p, b"again", clock(4));
        assert_eq!(r.len(), REAPED_KEYS_KEPT);
        r.insert(p, b"one more", clock(5));
        assert_eq!(r.len(), REAPED_KEYS_KEPT);
        assert_eq!(r.clock(p, b"first"), None, "the oldest forgotten");
        assert_eq!(r.clock(p, b"again"), Some(clock(4)));
        assert_eq!(r.clock(PartitionId(4), b"again"), None);
    }
}
