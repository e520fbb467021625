//! A cache of the objects written and read last, in front of RocksDB.
//!
//! Under load a node's top symbol was RocksDB's memtable skip-list search: every write
//! reads its object first (to merge into it) and the keys written recently, the hot ones,
//! live in memtables of ~100,000 entries, each search a chain of cache misses. This cache
//! holds the values the store wrote or read last, keyed by their stored key, so a read of
//! such a key is one hash lookup.
//!
//! Writes fill it, and so do reads that miss: under a read-heavy load the hot keys are
//! ones no write touched since the node started. A write holds the locks of its keys'
//! shards across its RocksDB write and the cache update, so two writes of one key update
//! the cache in the order RocksDB applied them, and a cached value is always the one
//! RocksDB holds. A read tries its shard's lock and, when a write holds it, reads RocksDB
//! instead (never waiting for a write).
//!
//! A read that misses must not cache what it then reads from RocksDB if a write of the
//! shard came in between: that value may be older than the one the write just cached.
//! So every write that locks a shard advances the shard's generation; the miss hands the
//! reader a [`FillTicket`] with the generation it saw, and [`ObjectCache::fill`] caches
//! the value only if the generation is unchanged (no write entered the shard since the
//! lookup, so the value read after it is the one RocksDB holds) and the key is not
//! cached meanwhile.
//!
//! Bounds: `capacity` bytes (keys, values and a fixed overhead per entry), split evenly
//! over the shards; each evicts by second chance (an entry read since it was last
//! considered goes round once more). Metrics: hits, misses and bytes held, through
//! [`crate::StorageStats`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use crate::batch::{BatchOp, Space};

/// Shards, each with its own lock; a power of two.
const SHARDS: usize = 64;
/// Bytes counted per entry besides its key and value (map slot, queue slot, allocations).
const ENTRY_OVERHEAD: usize = 96;

/// What a read that missed needs to cache the value it then reads from RocksDB
/// ([`ObjectCache::fill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FillTicket {
    shard: usize,
    generation: u64,
}

/// What [`ObjectCache::lookup`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The value the store holds for the key.
    Hit(Vec<u8>),
    /// Not cached; with a ticket to cache what RocksDB holds, unless a write held the
    /// shard (or the cache is off).
    Miss(Option<FillTicket>),
}

/// Locks `shard` for a write, advancing its generation.
fn lock_for_write(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    let mut guard = lock(shard);
    guard.generation += 1;
    guard
}

/// The cache; a capacity of 0 disables it (every lookup misses, writes store nothing).
pub(crate) struct ObjectCache {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Vec<u8>, Slot>,
    /// Advanced by every write that locks the shard (see the module doc).
    generation: u64,
    /// Keys in insertion order, for eviction; may hold keys no longer in `map`.
    order: VecDeque<Vec<u8>>,
    bytes: usize,
}

struct Slot {
    value: Vec<u8>,
    /// Read since eviction last looked at it.
    referenced: bool,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

fn shard_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) as usize) & (SHARDS - 1)
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic cannot leave a shard inconsistent with RocksDB in a way a later write
    // would not fix: a panicking writer's keys are removed below before any reads.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, capacity: usize) {
        let added = cost(&key, &value);
        if added > capacity {
            self.remove(&key);
            return;
        }
        match self.map.get_mut(&key) {
            Some(slot) => {
                self.bytes = self.bytes - cost(&key, &slot.value) + added;
                slot.value = value;
            }
            None => {
                self.bytes += added;
                self.order.push_back(key.clone());
                self.map.insert(
                    key,
                    Slot {
                        value,
                        referenced: false,
                    },
                );
            }
        }
        self.evict(capacity);
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= cost(key, &slot.value);
        }
    }

    /// Second chance over the insertion order until the shard fits `capacity`; drops the
    /// queue's stale keys on the way, and rebuilds the queue when those dominate it.
    fn evict(&mut self, capacity: usize) {
        while self.bytes > capacity {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            match self.map.get_mut(&key) {
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    self.order.push_back(key);
                }
                Some(_) => self.remove(&key),
                None => {}
            }
        }
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order.retain(|key| map.contains_key(key));
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

/// The shard locks a write holds across its RocksDB write (see the module doc).
pub(crate) struct WriteGuard<'a> {
    cache: &'a ObjectCache,
    /// By shard index, ascending.
    shards: Vec<(usize, MutexGuard<'a, Shard>)>,
}

impl WriteGuard<'_> {
    fn shard(&mut self, key: &[u8]) -> Option<&mut Shard> {
        let i = shard_of(key);
        self.shards
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .map(|at| &mut *self.shards[at].1)
    }

    /// RocksDB applied `ops`: the objects' new values replace the cached ones.
    pub(crate) fn applied(mut self, ops: Vec<BatchOp>) {
        let capacity = self.cache.shard_capacity;
        for op in ops {
            match op {
                BatchOp::Put {
                    space: Space::Objects,
                    key,
                    value,
                } => {
                    if let Some(shard) = self.shard(&key) {
                        shard.insert(key, value, capacity);
                    }
                }
                BatchOp::Delete {
                    space: Space::Objects,
                    key,
                } => {
                    if let Some(shard) = self.shard(&key) {
                        shard.remove(&key);
                    }
                }
                _ => {}
            }
        }
    }

    /// The write failed or was not made: forget the objects it touched (RocksDB is
    /// authoritative; a miss only costs a read).
    pub(crate) fn forget(mut self, ops: &[BatchOp]) {
        for op in ops {
            if let BatchOp::Put {
                space: Space::Objects,
                key,
                ..
            }
            | BatchOp::Delete {
                space: Space::Objects,
                key,
            } = op
            {
                if let Some(shard) = self.shard(key) {
                    shard.remove(key);
                }
            }
        }
    }
}

impl ObjectCache {
    /// A cache of at most `capacity` bytes; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        ObjectCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.shard_capacity > 0
    }

    /// The value the store holds for objects key `key`, if cached; `None` also when a
    /// write holds its shard.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.lookup(key) {
            Lookup::Hit(value) => Some(value),
            Lookup::Miss(_) => None,
        }
    }

    /// The value the store holds for objects key `key`, or a miss (also when a write
    /// holds its shard), with a ticket to [`ObjectCache::fill`] the cache with what
    /// RocksDB holds.
    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup {
        if !self.enabled() {
            return Lookup::Miss(None);
        }
        let i = shard_of(key);
        let found = match self.shards[i].try_lock() {
            Ok(mut shard) => match shard.map.get_mut(key) {
                Some(slot) => {
                    slot.referenced = true;
                    Lookup::Hit(slot.value.clone())
                }
                None => Lookup::Miss(Some(FillTicket {
                    shard: i,
                    generation: shard.generation,
                })),
            },
            Err(TryLockError::Poisoned(_)) | Err(TryLockError::WouldBlock) => Lookup::Miss(None),
        };
        let counter = if matches!(found, Lookup::Hit(_)) {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `value`, read from RocksDB after the lookup of `key` that gave `ticket`,
    /// unless a write entered the key's shard since (the value may be stale), the key
    /// was cached meanwhile, or a write holds the shard now. Never waits.
    pub(crate) fn fill(&self, key: &[u8], ticket: FillTicket, value: &[u8]) {
        debug_assert_eq!(ticket.shard, shard_of(key));
        let Ok(mut shard) = self.shards[ticket.shard].try_lock() else {
            return;
        };
        if shard.generation != ticket.generation || shard.map.contains_key(key) {
            return;
        }
        shard.insert(key.to_vec(), value.to_vec(), self.shard_capacity);
    }

    /// Locks the shards of the objects `ops` write, for the duration of their write;
    /// `None` when they write no object (or the cache is off).
    pub(crate) fn lock_for(&self, ops: &[BatchOp]) -> Option<WriteGuard<'_>> {
        let indices = self.shards_of(ops)?;
        Some(WriteGuard {
            cache: self,
            shards: indices
                .into_iter()
                .map(|i| (i, lock_for_write(&self.shards[i])))
                .collect(),
        })
    }

    /// As [`ObjectCache::lock_for`] without waiting: `Err(())` when another write holds
    /// one of the shards (a caller that must not wait leaves the write to one that may).
    pub(crate) fn try_lock_for(&self, ops: &[BatchOp]) -> Result<Option<WriteGuard<'_>>, ()> {
        let Some(indices) = self.shards_of(ops) else {
            return Ok(None);
        };
        let mut shards = Vec::with_capacity(indices.len());
        for i in indices {
            let mut guard = match self.shards[i].try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(()),
            };
            guard.generation += 1;
            shards.push((i, guard));
        }
        Ok(Some(WriteGuard {
            cache: self,
            shards,
        }))
    }

    /// The shards of the objects `ops` write, ascending; `None` when none (or the cache
    /// is off).
    fn shards_of(&self, ops: &[BatchOp]) -> Option<Vec<usize>> {
        if !self.enabled() {
            return None;
        }
        let mut indices: Vec<usize> = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put {
                    space: Space::Objects,
                    key,
                    ..
                }
                | BatchOp::Delete {
                    space: Space::Objects,
                    key,
                } => Some(shard_of(key)),
                _ => None,
            })
            .collect();
        if indices.is_empty() {
            return None;
        }
        indices.sort_unstable();
        indices.dedup();
        Some(indices)
    }

    /// Runs `call` (which changes objects other than by a batch: a range delete, a
    /// reopen) with every shard locked, then empties the cache.
    pub(crate) fn clear_around<T>(&self, call: impl FnOnce() -> T) -> T {
        let mut guards: Vec<_> = self.shards.iter().map(lock_for_write).collect();
        let result = call();
        for shard in &mut guards {
            shard.clear();
        }
        result
    }

    /// (hits, misses, bytes held).
    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        let bytes = self.shards.iter().map(|s| lock(s).bytes as u64).sum();
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> BatchOp {
        BatchOp::Put {
            space: Space::Objects,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn a_write_fills_and_a_delete_or_failure_empties() {
        let cache = ObjectCache::new(1 << 20);
        let ops = vec![put(b"pppka", b"1"), put(b"pppkb", b"2")];
        cache.lock_for(&ops).unwrap().applied(ops);
        assert_eq!(cache.get(b"pppka").as_deref(), Some(&b"1"[..]));
        assert_eq!(cache.get(b"pppkb").as_deref(), Some(&b"2"[..]));
        let delete = vec![BatchOp::Delete {
            space: Space::Objects,
            key: b"pppka".to_vec(),
        }];
        cache.lock_for(&delete).unwrap().applied(delete);
        assert_eq!(cache.get(b"pppka"), None);
        let failed = vec![put(b"pppkb", b"3")];
        cache.lock_for(&failed).unwrap().forget(&failed);
        assert_eq!(cache.get(b"pppkb"), None);
        let (hits, misses, bytes) = cache.stats();
        assert_eq!((hits, misses, bytes), (2, 2, 0));
    }

    #[test]
    fn other_spaces_are_not_cached_and_a_disabled_cache_holds_nothing() {
        let cache = ObjectCache::new(1 << 20);
        let meta = vec![BatchOp::Put {
            space: Space::Meta,
            key: b"m".to_vec(),
            value: b"v".to_vec(),
        }];
        assert!(cache.lock_for(&meta).is_none());
        let off = ObjectCache::new(0);
        let ops = vec![put(b"pppka", b"1")];
        assert!(off.lock_for(&ops).is_none());
        assert_eq!(off.get(b"pppka"), None);
    }

    #[test]
    fn the_cache_stays_within_its_capacity_and_keeps_what_is_read() {
        let capacity = SHARDS * 4096;
        let cache = ObjectCache::new(capacity);
        let hot = b"hot-key".to_vec();
        let hot_op = vec![put(&hot, &[1u8; 200])];
        cache.lock_for(&hot_op).unwrap().applied(hot_op);
        for i in 0..20_000u32 {
            let ops = vec![put(&i.to_be_bytes(), &[0u8; 200])];
            cache.lock_for(&ops).unwrap().applied(ops);
            // Read the hot key often enough that second chance keeps it.
            if i % 8 == 0 {
                assert!(cache.get(&hot).is_some(), "the hot key was evicted at {i}");
            }
            let (_, _, bytes) = cache.stats();
            assert!(bytes as usize <= capacity, "{bytes} bytes held");
        }
        for shard in cache.shards.iter() {
            let shard = lock(shard);
            assert!(shard.order.len() <= 2 * shard.map.len() + 64 + 1);
        }
    }

    fn ticket(cache: &ObjectCache, key: &[u8]) -> FillTicket {
        match cache.lookup(key) {
            Lookup::Miss(Some(ticket)) => ticket,
            other => panic!("expected a miss with a ticket, got {other:?}"),
        }
    }

    /// A read's miss fills the cache with what it read, unless a write of the shard came
    /// between the lookup and the fill: then the value read may be older than the one the
    /// write cached, and the fill leaves the cache alone.
    #[test]
    fn a_read_fills_a_miss_unless_a_write_of_its_shard_came_in_between() {
        let cache = ObjectCache::new(1 << 20);
        let t = ticket(&cache, b"pppka");
        cache.fill(b"pppka", t, b"read");
        assert_eq!(cache.get(b"pppka").as_deref(), Some(&b"read"[..]));

        // A write of the key between lookup and fill: the write's value stays.
        let t = ticket(&cache, b"pppkb");
        let ops = vec![put(b"pppkb", b"new")];
        cache.lock_for(&ops).unwrap().applied(ops);
        cache.fill(b"pppkb", t, b"old");
        assert_eq!(cache.get(b"pppkb").as_deref(), Some(&b"new"[..]));

        // A write of another key of the same shard, even one that failed: no fill.
        let key = b"pppkc";
        let other = (0u32..)
            .map(|i| format!("other{i}").into_bytes())
            .find(|k| shard_of(k) == shard_of(key))
            .unwrap();
        let t = ticket(&cache, key);
        let ops = vec![put(&other, b"x")];
        cache.try_lock_for(&ops).unwrap().unwrap().forget(&ops);
        cache.fill(key, t, b"maybe-stale");
        assert_eq!(cache.get(key), None);

        // A write holding the shard at the lookup: no ticket; at the fill: no fill.
        let t = ticket(&cache, key);
        let ops = vec![put(&other, b"y")];
        let guard = cache.lock_for(&ops).unwrap();
        assert_eq!(cache.lookup(key), Lookup::Miss(None));
        cache.fill(key, t, b"v");
        guard.applied(ops);
        assert_eq!(cache.get(key), None);

        // A range delete (or reopen) empties the cache and voids the tickets out.
        let t = ticket(&cache, key);
        cache.clear_around(|| ());
        cache.fill(key, t, b"deleted");
        assert_eq!(cache.get(key), None);

        // A disabled cache hands out no tickets.
        assert_eq!(ObjectCache::new(0).lookup(key), Lookup::Miss(None));
    }

    #[test]
    fn a_read_never_waits_for_a_write_of_its_shard() {
        let cache = ObjectCache::new(1 << 20);
        let ops = vec![put(b"pppka", b"1")];
        cache.lock_for(&ops).unwrap().applied(ops.clone());
        let guard = cache.lock_for(&ops).unwrap();
        assert_eq!(cache.get(b"pppka"), None, "answered while a write held it");
        assert!(
            cache.try_lock_for(&ops).is_err(),
            "a second write got the shard"
        );
        guard.applied(vec![put(b"pppka", b"2")]);
        assert_eq!(cache.get(b"pppka").as_deref(), Some(&b"2"[..]));
    }
}
