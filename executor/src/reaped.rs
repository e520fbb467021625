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
//! Bounded: the [`REAPED_KEYS_KEPT`] most recent reaps. Kept on disk too, one record per
//! reap in the store's meta space (`reaped/` and the entry's generation), written before
//! the reap's delete and read back at the open, so that a restart or a power cut does
//! not forget them: a copy sent before the restart by another node (a read's repair, an
//! exchange's push computed earlier) is still recognised, and a session's read of the
//! key is still answered. A record is deleted when its entry is forgotten.

use std::collections::{HashMap, VecDeque};

use shoal_proto::CausalContext;
use shoal_ring::PartitionId;
use shoal_storage::{Space, Storage, StorageError};

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

/// Prefix of the records of reaped clocks in the meta space; the entry's generation
/// follows, big-endian, so that a scan reads them oldest first.
const RECORD_PREFIX: &[u8] = b"reaped/";

/// Records read per page at the open.
const LOAD_PAGE: usize = 4096;

/// What [`ReapedKeys::insert`] did: the new entry's generation, whose record the caller
/// writes, and the generations of the entries it forgot, whose records it deletes.
pub(crate) struct Remembered {
    pub generation: u64,
    pub forgotten: Vec<u64>,
}

/// The meta-space key of the record of the entry of `generation`.
pub(crate) fn record_key(generation: u64) -> Vec<u8> {
    let mut key = RECORD_PREFIX.to_vec();
    key.extend_from_slice(&generation.to_be_bytes());
    key
}

/// Writes the record of the entry `remembered` added for `key` and deletes the records
/// of the entries it forgot.
pub(crate) fn write_records<S: Storage>(
    storage: &S,
    remembered: Remembered,
    partition: PartitionId,
    key: &[u8],
    clock: &CausalContext,
) -> Result<(), StorageError> {
    let record = encode_record(partition, key, clock);
    storage.put(Space::Meta, &record_key(remembered.generation), &record)?;
    delete_records(storage, remembered.forgotten)
}

fn delete_records<S: Storage>(storage: &S, generations: Vec<u64>) -> Result<(), StorageError> {
    for generation in generations {
        storage.delete(Space::Meta, &record_key(generation))?;
    }
    Ok(())
}

/// A record's value: the partition, the key's length and the key, then the clock.
fn encode_record(partition: PartitionId, key: &[u8], clock: &CausalContext) -> Vec<u8> {
    let context = shoal_proto::wire::encode_context(clock);
    let mut out = Vec::with_capacity(8 + key.len() + context.len());
    out.extend_from_slice(&partition.0.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&context);
    out
}

fn decode_record(bytes: &[u8]) -> Option<(PartitionId, Vec<u8>, CausalContext)> {
    let partition = PartitionId(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?));
    let len = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
    let key = bytes.get(8..8usize.checked_add(len)?)?.to_vec();
    let clock = shoal_proto::wire::decode_context(&bytes[8 + len..]).ok()?;
    Some((partition, key, clock))
}

impl ReapedKeys {
    /// The entries whose records `storage` holds, oldest first, bounded as always. A
    /// record that does not decode (written by a later build, or damaged) is deleted and
    /// skipped: forgetting a reap only gives up the protection it adds.
    pub(crate) fn load<S: Storage>(storage: &S) -> Result<ReapedKeys, StorageError> {
        let mut reaped = ReapedKeys::default();
        let mut start = RECORD_PREFIX.to_vec();
        let mut end = RECORD_PREFIX.to_vec();
        end.push(0xff);
        loop {
            let rows = storage.scan(Space::Meta, &start, Some(&end), LOAD_PAGE)?;
            let full = rows.len() == LOAD_PAGE;
            for (record, value) in &rows {
                let generation = record
                    .get(RECORD_PREFIX.len()..)
                    .and_then(|g| <[u8; 8]>::try_from(g).ok())
                    .map(u64::from_be_bytes);
                let entry = generation.zip(decode_record(value));
                let Some((generation, (partition, key, clock))) = entry else {
                    tracing::warn!(record = ?record, "a reaped clock's record did not decode: deleted");
                    storage.delete(Space::Meta, record)?;
                    continue;
                };
                delete_records(
                    storage,
                    reaped.insert_as(generation, partition, &key, clock),
                )?;
                reaped.next = reaped.next.max(generation.saturating_add(1));
            }
            match rows.last() {
                Some((last, _)) if full => {
                    start = last.clone();
                    start.push(0);
                }
                _ => return Ok(reaped),
            }
        }
    }

    /// `key`'s tombstone with `clock` was reaped.
    pub(crate) fn insert(
        &mut self,
        partition: PartitionId,
        key: &[u8],
        clock: CausalContext,
    ) -> Remembered {
        let generation = self.next;
        self.next += 1;
        let forgotten = self.insert_as(generation, partition, key, clock);
        Remembered {
            generation,
            forgotten,
        }
    }

    /// Adds the entry of `generation` (newer than every entry held); returns the
    /// generations of the entries forgotten to stay within the bound.
    fn insert_as(
        &mut self,
        generation: u64,
        partition: PartitionId,
        key: &[u8],
        clock: CausalContext,
    ) -> Vec<u64> {
        let keys = self.clocks.entry(partition).or_default();
        if keys.insert(key.to_vec(), (clock, generation)).is_none() {
            self.len += 1;
        }
        self.order.push_back((partition, key.to_vec(), generation));
        let mut forgotten = Vec::new();
        while self.len > REAPED_KEYS_KEPT || self.order.len() > 2 * REAPED_KEYS_KEPT {
            let Some((p, old, g)) = self.order.pop_front() else {
                break;
            };
            forgotten.push(g);
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
        forgotten
    }

    /// Whether nothing is remembered.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
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
    use shoal_storage::MemStorage;

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

    /// An entry added and its records written, as the executor does.
    fn remember(
        r: &mut ReapedKeys,
        storage: &MemStorage,
        p: PartitionId,
        key: &[u8],
        c: CausalContext,
    ) {
        let done = r.insert(p, key, c.clone());
        write_records(storage, done, p, key, &c).unwrap();
    }

    fn records(storage: &MemStorage) -> usize {
        let mut end = RECORD_PREFIX.to_vec();
        end.push(0xff);
        storage
            .scan(Space::Meta, RECORD_PREFIX, Some(&end), usize::MAX)
            .unwrap()
            .len()
    }

    /// The records on disk hold what the memory holds, within the same bound: a load
    /// gives back the newest entries (a key reaped again with its newest clock), and a
    /// record that does not decode is deleted and skipped.
    #[test]
    fn a_load_gives_back_the_newest_entries_within_the_bound() {
        let storage = MemStorage::new();
        let mut r = ReapedKeys::default();
        let p = PartitionId(3);
        remember(&mut r, &storage, p, b"first", clock(1));
        remember(&mut r, &storage, p, b"again", clock(2));
        for i in 0..REAPED_KEYS_KEPT as u64 {
            remember(&mut r, &storage, p, &i.to_be_bytes(), clock(3));
        }
        remember(&mut r, &storage, p, b"again", clock(4));
        assert_eq!(records(&storage), REAPED_KEYS_KEPT);
        storage
            .put(Space::Meta, &record_key(u64::MAX), b"not a record")
            .unwrap();

        let loaded = ReapedKeys::load(&storage).unwrap();
        assert_eq!(loaded.len(), REAPED_KEYS_KEPT);
        assert_eq!(loaded.clock(p, b"first"), None, "forgotten");
        assert_eq!(loaded.clock(p, b"again"), Some(clock(4)));
        assert_eq!(loaded.clock(p, &0u64.to_be_bytes()), None, "forgotten");
        assert_eq!(loaded.clock(p, &1u64.to_be_bytes()), Some(clock(3)));
        assert_eq!(
            records(&storage),
            REAPED_KEYS_KEPT,
            "the bad record deleted"
        );
        // New entries continue after the newest loaded one.
        let mut loaded = loaded;
        assert_eq!(loaded.insert(p, b"next", clock(5)).generation, r.next);
    }
}
