//! The in-memory engine, for tests and the deterministic simulator.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::batch::{check_key, BatchOp, Space, StorageStats, WriteBatch};
use crate::error::StorageError;
use crate::metrics::{count_batch, count_op, timed};
use crate::storage::{Rows, Storage};

/// The contents of a [`MemStorage`]: one sorted map per space, plus the byte total.
#[derive(Debug, Default)]
struct Maps {
    spaces: [BTreeMap<Vec<u8>, Vec<u8>>; 3],
    /// Bytes of keys and values held, kept up to date by every write.
    bytes: u64,
}

/// An engine that keeps each space in a `BTreeMap` behind a lock.
///
/// Cloning gives another handle on the same data. [`MemStorage::reopen`] models a
/// process restart: a fresh handle on the same data, while handles from before a
/// [`Storage::close`] stay closed — so a simulated crash can fence off the old node's
/// tasks and a restarted node finds every write the engine acknowledged (as RocksDB's
/// WAL would give it after a killed process).
///
/// [`MemStorage::set_disk_full`] injects a full disk, for the simulator's faults.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    maps: Arc<RwLock<Maps>>,
    closed: Arc<AtomicBool>,
    /// Shared by every handle on the data, like the disk under a directory.
    disk_full: Arc<AtomicBool>,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, open handle on this store's data (as if the process restarted and opened
    /// the same directory); this handle and its clones are unaffected.
    pub fn reopen(&self) -> MemStorage {
        MemStorage {
            maps: Arc::clone(&self.maps),
            closed: Arc::new(AtomicBool::new(false)),
            disk_full: Arc::clone(&self.disk_full),
        }
    }

    /// Models a full disk (`true`) until it is called with `false`: every write fails with
    /// [`StorageError::DiskFull`] and lands nothing, as the RocksDB engine's do; reads are
    /// served.
    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::Release);
    }

    /// Whether [`MemStorage::set_disk_full`] currently refuses writes.
    pub fn is_disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    // Writes never panic half-way (they only move owned vectors), so a poisoned lock
    // still guards consistent maps.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage for MemStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        count_op("get", space);
        timed("get", || {
            self.check_open()?;
            check_key(key)?;
            Ok(self.read().spaces[space.index()].get(key).cloned())
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        count_batch(&batch);
        timed("write", || {
            self.check_open()?;
            batch.validate()?;
            if self.is_disk_full() {
                metrics::counter!(crate::metrics::DISK_FULL_REFUSALS_TOTAL).increment(1);
                return Err(StorageError::DiskFull);
            }
            let mut maps = self.write_lock();
            // Checked again under the lock: a close that raced with this write wins.
            self.check_open()?;
            for op in batch {
                match op {
                    BatchOp::Put { space, key, value } => {
                        let key_len = key.len() as u64;
                        let added = key_len + value.len() as u64;
                        let replaced = maps.spaces[space.index()]
                            .insert(key, value)
                            .map_or(0, |old| key_len + old.len() as u64);
                        maps.bytes = maps.bytes - replaced + added;
                    }
                    BatchOp::Delete { space, key } => {
                        if let Some(old) = maps.spaces[space.index()].remove(&key) {
                            maps.bytes -= (key.len() + old.len()) as u64;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        count_op("scan", space);
        timed("scan", || {
            self.check_open()?;
            if limit == 0 || end.is_some_and(|end| end <= start) {
                return Ok(Vec::new());
            }
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            let maps = self.read();
            Ok(maps.spaces[space.index()]
                .range::<[u8], _>((Bound::Included(start), upper))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        })
    }

    fn stats(&self) -> StorageStats {
        let maps = self.read();
        StorageStats {
            live_data_bytes: maps.bytes,
            estimated_keys: maps.spaces.iter().map(|m| m.len() as u64).sum(),
            ..StorageStats::default()
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        timed("flush", || self.check_open())
    }

    fn close(&self) -> Result<(), StorageError> {
        timed("close", || {
            // Taking the write lock waits for in-flight writes to finish.
            let _maps = self.write_lock();
            self.closed.store(true, Ordering::Release);
            Ok(())
        })
    }
}
