//! Striped per-key locks for read-modify-write of one object.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::PartitionId;

/// Stripes of [`KeyLocks::default`].
pub const DEFAULT_LOCK_STRIPES: usize = 1024;

/// A fixed set of mutexes, one chosen per `(partition, key)` by hash, so a caller can
/// read an object, merge into it and write it back without a concurrent writer of the same
/// key slipping in between, while writers of other keys (almost always on other stripes)
/// proceed.
///
/// Bounded: memory is the number of stripes, whatever the number of keys. Two keys may
/// share a stripe, so a caller must hold at most one guard at a time (taking a second one
/// could deadlock on itself). The guard is a blocking lock: hold it for the get-merge-put
/// only, never across an `.await`.
#[derive(Debug)]
pub struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
}

/// Holds the stripe of one key; dropping it releases the key.
#[derive(Debug)]
#[must_use = "the key is unlocked as soon as the guard is dropped"]
pub struct KeyLockGuard<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl KeyLocks {
    /// Locks with `stripes` stripes (at least one).
    pub fn new(stripes: usize) -> Self {
        let stripes = stripes.max(1);
        Self {
            stripes: (0..stripes).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Number of stripes.
    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// Blocks until the stripe of `(p, key)` is free and returns its guard.
    pub fn lock(&self, p: PartitionId, key: &[u8]) -> KeyLockGuard<'_> {
        let guard = self.stripes[self.stripe_of(p, key)]
            .lock()
            // The mutex guards no data, so a panic while it was held left nothing broken.
            .unwrap_or_else(PoisonError::into_inner);
        KeyLockGuard { _guard: guard }
    }

    /// The guard of `(p, key)`'s stripe if it is free now; `None` when another holds it.
    pub fn try_lock(&self, p: PartitionId, key: &[u8]) -> Option<KeyLockGuard<'_>> {
        match self.stripes[self.stripe_of(p, key)].try_lock() {
            Ok(guard) => Some(KeyLockGuard { _guard: guard }),
            // The mutex guards no data, so a panic while it was held left nothing broken.
            Err(std::sync::TryLockError::Poisoned(e)) => Some(KeyLockGuard {
                _guard: e.into_inner(),
            }),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The stripe index of `(p, key)`: stable for the life of the process.
    fn stripe_of(&self, p: PartitionId, key: &[u8]) -> usize {
        // DefaultHasher::new() uses fixed keys: the same key always maps to one stripe.
        let mut hasher = DefaultHasher::new();
        p.0.hash(&mut hasher);
        key.hash(&mut hasher);
        (hasher.finish() % self.stripes.len() as u64) as usize
    }
}

impl Default for KeyLocks {
    fn default() -> Self {
        Self::new(DEFAULT_LOCK_STRIPES)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread;

    use super::*;

    #[test]
    fn try_lock_fails_while_the_key_is_held_and_succeeds_after() {
        let locks = KeyLocks::new(8);
        let p = PartitionId(3);
        let held = locks.lock(p, b"k");
        assert!(locks.try_lock(p, b"k").is_none());
        drop(held);
        assert!(locks.try_lock(p, b"k").is_some());
    }

    #[test]
    fn read_modify_write_under_the_lock_loses_no_increment() {
        let locks = Arc::new(KeyLocks::new(4));
        // A non-atomic read-then-write counter: without the lock, increments would be lost.
        let value = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (locks, value) = (Arc::clone(&locks), Arc::clone(&value));
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _guard = locks.lock(PartitionId(3), b"counter");
                        let read = value.load(Ordering::Relaxed);
                        std::hint::black_box(read);
                        value.store(read + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(value.load(Ordering::Relaxed), 40_000);
    }

    #[test]
    fn same_key_always_maps_to_the_same_stripe_and_keys_spread() {
        let locks = KeyLocks::default();
        assert_eq!(locks.stripes(), DEFAULT_LOCK_STRIPES);
        assert_eq!(
            locks.stripe_of(PartitionId(9), b"k"),
            locks.stripe_of(PartitionId(9), b"k")
        );
        let used: std::collections::HashSet<_> = (0..10_000u32)
            .map(|i| locks.stripe_of(PartitionId(i % 7), &i.to_be_bytes()))
            .collect();
        assert!(
            used.len() > DEFAULT_LOCK_STRIPES / 2,
            "only {} stripes used",
            used.len()
        );
        assert_eq!(KeyLocks::new(0).stripes(), 1);
    }

    #[test]
    fn a_held_key_does_not_block_a_key_on_another_stripe() {
        let locks = KeyLocks::new(64);
        let first = (0u32..).find(|i| locks.stripe_of(PartitionId(0), &i.to_be_bytes()) == 0);
        let other = (0u32..).find(|i| locks.stripe_of(PartitionId(0), &i.to_be_bytes()) == 1);
        let (first, other) = (first.unwrap(), other.unwrap());
        let _held = locks.lock(PartitionId(0), &first.to_be_bytes());
        // Would deadlock (and hang the test) if stripes were not independent.
        let stripe = &locks.stripes[locks.stripe_of(PartitionId(0), &other.to_be_bytes())];
        assert!(stripe.try_lock().is_ok());
    }
}
