//! The in-memory engine, for tests and the deterministic simulator.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::batch::{check_key, BatchOp, Space, StorageStats, WriteBatch};
use crate::error::StorageError;
use crate::metrics::{count_batch, count_op, timed};
use crate::storage::{Rows, Storage};

/// One sorted map per space.
type Spaces = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

/// Most batches a store with sync tracking keeps unsynced: past it the store syncs by
/// itself, as a kernel writes dirty pages out under memory pressure.
pub const MAX_UNSYNCED_BATCHES: usize = 65_536;

/// The contents of a [`MemStorage`]: one sorted map per space, plus the byte total.
#[derive(Debug, Default)]
struct Maps {
    spaces: Spaces,
    /// Bytes of keys and values held, kept up to date by every write.
    bytes: u64,
    /// With sync tracking: what a power cut would leave.
    unsynced: Option<Unsynced>,
}

/// What a store with sync tracking has on disk: the spaces as of its last sync, and the
/// batches written since (in the page cache only), in order.
#[derive(Debug, Default)]
struct Unsynced {
    durable: Spaces,
    batches: Vec<WriteBatch>,
    /// Syncs asked for ([`MemStorage::sync`], through the `Storage` methods that sync).
    syncs: u64,
}

/// Applies `ops` to `spaces`, keeping `bytes` (keys and values held), if given, up to
/// date.
fn apply(spaces: &mut Spaces, mut bytes: Option<&mut u64>, ops: impl IntoIterator<Item = BatchOp>) {
    for op in ops {
        match op {
            BatchOp::Put { space, key, value } => {
                let key_len = key.len() as u64;
                let added = key_len + value.len() as u64;
                let replaced = spaces[space.index()]
                    .insert(key, value)
                    .map_or(0, |old| key_len + old.len() as u64);
                if let Some(b) = bytes.as_deref_mut() {
                    *b = *b - replaced + added;
                }
            }
            BatchOp::Delete { space, key } => {
                if let Some(old) = spaces[space.index()].remove(&key) {
                    if let Some(b) = bytes.as_deref_mut() {
                        *b -= (key.len() + old.len()) as u64;
                    }
                }
            }
        }
    }
}

/// Bytes of keys and values in `spaces`.
fn bytes_of(spaces: &Spaces) -> u64 {
    spaces
        .iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

impl Unsynced {
    /// The durable spaces plus the first `keep` unsynced batches: the disk after a power
    /// cut that lost the rest.
    fn after_power_cut(&self, keep: usize) -> Spaces {
        let mut spaces = self.durable.clone();
        for batch in self.batches.iter().take(keep) {
            apply(&mut spaces, None, batch.clone());
        }
        spaces
    }

    fn sync(&mut self) {
        for batch in self.batches.drain(..) {
            apply(&mut self.durable, None, batch);
        }
    }
}

/// An engine that keeps each space in a `BTreeMap` behind a lock.
///
/// Cloning gives another handle on the same data. [`MemStorage::reopen`] models a
/// process restart: a fresh handle on the same data, while handles from before a
/// [`Storage::close`] stay closed — so a simulated crash can fence off the old node's
/// tasks and a restarted node finds every write the engine acknowledged (as RocksDB's
/// WAL would give it after a killed process).
///
/// A store made with [`MemStorage::with_sync_tracking`] also models a machine that can
/// lose power under `buffered` durability: a write is durable only once synced
/// ([`Storage::flush`], [`MemStorage::sync`], or past [`MAX_UNSYNCED_BATCHES`]), and
/// [`MemStorage::power_cut`] loses a suffix of the writes not synced yet.
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

    /// An empty store that tracks which writes are synced, so that a test can cut its
    /// power ([`MemStorage::power_cut`]).
    pub fn with_sync_tracking() -> Self {
        let store = Self::default();
        store.write_lock().unsynced = Some(Unsynced::default());
        store
    }

    /// Batches written since the last sync (0 without sync tracking).
    pub fn unsynced_writes(&self) -> usize {
        self.read().unsynced.as_ref().map_or(0, |u| u.batches.len())
    }

    /// Makes every write durable, as an fsync of the WAL does. Works on a closed handle
    /// too: the kernel writes the page cache out after the process died.
    pub fn sync(&self) {
        if let Some(u) = self.write_lock().unsynced.as_mut() {
            u.sync();
            u.syncs += 1;
        }
    }

    /// Syncs asked of a store with sync tracking so far (0 without it): how many fsyncs
    /// a disk would have seen.
    pub fn syncs(&self) -> u64 {
        self.read().unsynced.as_ref().map_or(0, |u| u.syncs)
    }

    /// The process dies: this handle and its clones are closed at once, nothing is
    /// synced (unlike [`Storage::close`]); the data stays for [`MemStorage::reopen`].
    pub fn kill(&self) {
        // Taking the write lock waits for in-flight writes to finish.
        let _maps = self.write_lock();
        self.closed.store(true, Ordering::Release);
    }

    /// A new store (with sync tracking) holding what this one's disk would after a power
    /// cut that kept the first `keep` unsynced writes: for looking before cutting. Without
    /// sync tracking every write is durable and it holds everything.
    pub fn after_power_cut(&self, keep: usize) -> MemStorage {
        let maps = self.read();
        let spaces = match &maps.unsynced {
            Some(u) => u.after_power_cut(keep),
            None => maps.spaces.clone(),
        };
        MemStorage {
            maps: Arc::new(RwLock::new(Maps {
                bytes: bytes_of(&spaces),
                unsynced: Some(Unsynced {
                    durable: spaces.clone(),
                    ..Unsynced::default()
                }),
                spaces,
            })),
            closed: Arc::new(AtomicBool::new(false)),
            disk_full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The rows of `space` whose keys start with `prefix` that are on the disk for good:
    /// what a power cut that kept no unsynced write would leave of them. Without sync
    /// tracking, every such row.
    pub fn durable_rows(&self, space: Space, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let maps = self.read();
        let spaces = match &maps.unsynced {
            Some(u) => &u.durable,
            None => &maps.spaces,
        };
        spaces[space.index()]
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The machine loses power: of the writes not synced, the first `keep` reached the
    /// disk and the rest are lost. Returns how many were lost. Kill the process's handle
    /// first ([`MemStorage::kill`]); a later [`MemStorage::reopen`] finds what is left.
    /// Without sync tracking nothing is lost.
    pub fn power_cut(&self, keep: usize) -> usize {
        let mut maps = self.write_lock();
        let Some(u) = maps.unsynced.as_mut() else {
            return 0;
        };
        let lost = u.batches.len().saturating_sub(keep);
        let spaces = u.after_power_cut(keep);
        u.durable = spaces.clone();
        u.batches.clear();
        maps.bytes = bytes_of(&spaces);
        maps.spaces = spaces;
        lost
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
    /// [`StorageError::DiskFull`] and lands nothing, as the RocksDB engine's do below its
    /// free-space reserve, except a write of meta keys only (the node's own bookkeeping,
    /// which the reserve and the spare file keep room for; see
    /// `RocksOptions::spare_space_bytes`); reads are served.
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

    /// Everything is in memory: always answers.
    fn get_cached(
        &self,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        self.get(space, key).map(Some)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        count_batch(&batch);
        timed("write", || {
            self.check_open()?;
            batch.validate()?;
            if self.is_disk_full() && !batch.only_meta() {
                metrics::counter!(crate::metrics::DISK_FULL_REFUSALS_TOTAL).increment(1);
                return Err(StorageError::DiskFull);
            }
            let mut maps = self.write_lock();
            // Checked again under the lock: a close that raced with this write wins.
            self.check_open()?;
            let logged = maps.unsynced.is_some().then(|| batch.clone());
            let Maps {
                spaces,
                bytes,
                unsynced,
            } = &mut *maps;
            apply(spaces, Some(bytes), batch);
            if let (Some(u), Some(batch)) = (unsynced.as_mut(), logged) {
                u.batches.push(batch);
                if u.batches.len() >= MAX_UNSYNCED_BATCHES {
                    u.sync();
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
        timed("flush", || {
            self.check_open()?;
            self.sync();
            Ok(())
        })
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        timed("sync_wal", || {
            self.check_open()?;
            self.sync();
            Ok(())
        })
    }

    fn close(&self) -> Result<(), StorageError> {
        timed("close", || {
            // Taking the write lock waits for in-flight writes to finish.
            let mut maps = self.write_lock();
            if !self.closed.load(Ordering::Acquire) {
                if let Some(u) = maps.unsynced.as_mut() {
                    u.sync();
                }
            }
            self.closed.store(true, Ordering::Release);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &MemStorage, key: &str) -> Option<Vec<u8>> {
        s.get(Space::Meta, key.as_bytes()).unwrap()
    }

    #[test]
    fn a_power_cut_loses_the_unsynced_suffix_and_keeps_what_was_synced() {
        let s = MemStorage::with_sync_tracking();
        s.put_meta("a", b"1").unwrap();
        s.flush().unwrap();
        s.put_meta("b", b"2").unwrap();
        s.put_meta("a", b"3").unwrap();
        s.delete_meta("b").unwrap();
        assert_eq!(s.unsynced_writes(), 3);
        // Looking does not cut.
        let look = s.after_power_cut(1);
        assert_eq!(value(&look, "b"), Some(b"2".to_vec()));
        assert_eq!(value(&look, "a"), Some(b"1".to_vec()));
        assert_eq!(value(&s, "a"), Some(b"3".to_vec()));
        s.kill();
        assert!(matches!(s.get_meta("a"), Err(StorageError::Closed)));
        assert_eq!(s.power_cut(1), 2);
        let after = s.reopen();
        assert_eq!(value(&after, "a"), Some(b"1".to_vec()));
        assert_eq!(value(&after, "b"), Some(b"2".to_vec()));
        assert_eq!(after.unsynced_writes(), 0);
        assert_eq!(after.stats().live_data_bytes, 4);
    }

    #[test]
    fn a_wal_sync_makes_every_returned_write_survive_a_power_cut() {
        let s = MemStorage::with_sync_tracking();
        s.put_meta("a", b"1").unwrap();
        s.put_meta("b", b"2").unwrap();
        assert_eq!(s.unsynced_writes(), 2);
        s.sync_wal().unwrap();
        assert_eq!(s.unsynced_writes(), 0);
        s.kill();
        assert_eq!(s.power_cut(0), 0);
        let after = s.reopen();
        assert_eq!(value(&after, "a"), Some(b"1".to_vec()));
        assert_eq!(value(&after, "b"), Some(b"2".to_vec()));
    }

    #[test]
    fn close_syncs_and_kill_does_not() {
        let s = MemStorage::with_sync_tracking();
        s.put_meta("a", b"1").unwrap();
        s.close().unwrap();
        assert_eq!(s.power_cut(0), 0);
        let s = s.reopen();
        assert_eq!(value(&s, "a"), Some(b"1".to_vec()));
        s.put_meta("b", b"2").unwrap();
        s.kill();
        assert_eq!(s.power_cut(0), 1);
        assert_eq!(value(&s.reopen(), "b"), None);
    }

    #[test]
    fn without_sync_tracking_every_write_survives_a_power_cut() {
        let s = MemStorage::new();
        s.put_meta("a", b"1").unwrap();
        assert_eq!(s.unsynced_writes(), 0);
        s.kill();
        assert_eq!(s.power_cut(0), 0);
        assert_eq!(value(&s.reopen(), "a"), Some(b"1".to_vec()));
    }

    #[test]
    fn unsynced_writes_are_bounded() {
        let s = MemStorage::with_sync_tracking();
        for i in 0..MAX_UNSYNCED_BATCHES + 10 {
            s.put_meta("a", &(i as u64).to_be_bytes()).unwrap();
        }
        assert_eq!(s.unsynced_writes(), 10);
    }
}
