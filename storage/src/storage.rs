//! The [`Storage`] trait: what the node needs from a local engine.

use std::sync::Arc;

use crate::PartitionId;

use crate::batch::{Space, StorageStats, WriteBatch};
use crate::error::StorageError;
use crate::keys::{object_key, partition_bounds, split_object_key, successor};

/// Rows of a scan: `(key, value)` pairs in ascending key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Operations per page when [`Storage::delete_partition`] deletes key by key.
const DELETE_PAGE_KEYS: usize = 1024;

/// A local, ordered, byte-oriented key-value engine with three independent [`Space`]s.
///
/// The engine stores opaque bytes; it knows nothing of the object format. Engines
/// implement the five required methods (and [`Storage::close`]); everything else is built
/// on them so that every engine behaves the same, which the [`crate::conformance`] suite
/// checks. All methods take `&self`: an engine is shared between threads behind an `Arc`.
pub trait Storage: Send + Sync + 'static {
    /// The value of `key` in `space`, if any.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// The value of `key` in `space` if the engine can give it without reading the disk
    /// (RocksDB: from its memtables and block cache): `Ok(Some(v))`, where `v` is what
    /// [`Storage::get`] returns, or `Ok(None)` when only a disk read could tell. Lets a
    /// caller on a thread that must not block answer such reads at once and send only
    /// the others to a storage thread. The default can never tell.
    fn get_cached(
        &self,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        let _ = (space, key);
        Ok(None)
    }

    /// Applies `batch` atomically (all operations land or none) and in order (the last
    /// operation on a key wins), with the engine's [`crate::Durability`].
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError>;

    /// Applies `batch` as [`Storage::write`] does if the engine can without waiting
    /// (RocksDB: no write stall or slowdown, and the disk not nearly full): `Ok(true)`.
    /// `Ok(false)` when it would have to wait; then nothing was written. Lets a caller on
    /// a thread that must not block write at once and hand only the others to a storage
    /// thread. The default writes.
    ///
    /// An engine that buffers its WAL in the process (RocksDB with
    /// `RocksOptions::buffer_try_writes`) may leave the write's WAL record there: it is as
    /// durable as [`Storage::write`] makes a write (for `buffered`, in the OS, surviving a
    /// killed process) only once [`Storage::write_out_wal`] returned, and on disk once a
    /// [`Storage::sync_wal`] (which writes it out first) returned. A caller writes it out
    /// before it acknowledges the write or lets anything it read leave the process (the
    /// node's driver with `buffered`), or syncs it before it acknowledges the write (the
    /// node's group-commit committer).
    fn try_write(&self, batch: WriteBatch) -> Result<bool, StorageError> {
        self.write(batch).map(|()| true)
    }

    /// Hands the WAL records that [`Storage::try_write`] left in the process to the OS,
    /// all in one system call: many writes, one `write`. Does not sync (see
    /// [`Storage::sync_wal`]). The default has nothing to write out.
    fn write_out_wal(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// At most `limit` entries of `space` with keys in `[start, end)` (`end` `None`: to
    /// the end of the space), ascending. An empty or inverted range gives no rows.
    ///
    /// `limit` bounds the rows, not their bytes: callers that page through large values
    /// choose a limit that fits their memory budget.
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows, StorageError>;

    /// Engine statistics for metrics; the in-memory engine reports what it can.
    fn stats(&self) -> StorageStats;

    /// Makes every acknowledged write durable on disk (WAL fsync, memtable flush); used on
    /// shutdown, and by the executor to sync its actor and dot reservation. In memory a
    /// no-op, except that a store with sync tracking marks every write synced.
    fn flush(&self) -> Result<(), StorageError>;

    /// Makes every write that has returned so far durable, as an fsync of the write-ahead
    /// log does, without flushing memtables: what a caller that acknowledges writes only
    /// once durable (group commit: many writes, then one sync) calls before it answers.
    /// The default flushes.
    fn sync_wal(&self) -> Result<(), StorageError> {
        self.flush()
    }

    /// Flushes, then releases the engine (files, locks): every later call on this handle
    /// (and its clones) fails with [`StorageError::Closed`]. Lets a node shut down
    /// deterministically even while a background task still holds a reference. Closing
    /// twice is not an error.
    fn close(&self) -> Result<(), StorageError>;

    /// Sets `key` to `value` in `space`.
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(space, key, value);
        self.write(batch)
    }

    /// Removes `key` from `space`; absent keys are not an error.
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.delete(space, key);
        self.write(batch)
    }

    /// The stored (encoded) object `key` of partition `p`, if any.
    fn get_object(&self, p: PartitionId, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(Space::Objects, &object_key(p, key))
    }

    /// [`Storage::get_object`] if the engine can answer from memory (see
    /// [`Storage::get_cached`]).
    fn get_object_cached(
        &self,
        p: PartitionId,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        self.get_cached(Space::Objects, &object_key(p, key))
    }

    /// Stores the encoded object `key` of partition `p`.
    fn put_object(&self, p: PartitionId, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.put(Space::Objects, &object_key(p, key), value)
    }

    /// Removes the object `key` of partition `p`.
    fn delete_object(&self, p: PartitionId, key: &[u8]) -> Result<(), StorageError> {
        self.delete(Space::Objects, &object_key(p, key))
    }

    /// [`Storage::put_object`] if the engine can without waiting (see
    /// [`Storage::try_write`]): `Ok(false)`, and nothing written, otherwise.
    fn try_put_object(
        &self,
        p: PartitionId,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, StorageError> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(Space::Objects, object_key(p, key), value);
        self.try_write(batch)
    }

    /// A page of partition `p`'s objects in key order, starting strictly after `after`
    /// (`None`: from the start), at most `limit` rows of `(user key without prefix,
    /// value)`. Pass the last key of a page as `after` to get the next one; an empty page
    /// is the end. Anti-entropy, handoff and transfer stream whole partitions this way
    /// without loading them into memory.
    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        let (first, end) = partition_bounds(p);
        let start = match after {
            Some(after) => successor(&object_key(p, after)),
            None => first,
        };
        let rows = self.scan(Space::Objects, &start, end.as_deref(), limit)?;
        rows.into_iter()
            .map(|(raw, value)| match split_object_key(&raw) {
                Some((found, key)) if found == p => Ok((key.to_vec(), value)),
                _ => Err(StorageError::Corrupt(format!(
                    "scan of partition {} returned a key outside it",
                    p.0
                ))),
            })
            .collect()
    }

    /// Deletes every object of partition `p` (after a transfer moved it elsewhere).
    ///
    /// The provided version deletes page by page, each page atomically; engines with a
    /// range delete override it and delete the whole partition at once.
    fn delete_partition(&self, p: PartitionId) -> Result<(), StorageError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut page = self.scan_partition(p, after.as_deref(), DELETE_PAGE_KEYS)?;
            let full = page.len() == DELETE_PAGE_KEYS;
            if page.is_empty() {
                return Ok(());
            }
            let mut batch = WriteBatch::with_capacity(page.len());
            for (key, _) in &page {
                batch.delete(Space::Objects, object_key(p, key));
            }
            self.write(batch)?;
            if !full {
                return Ok(());
            }
            after = page.pop().map(|(key, _)| key);
        }
    }

    /// The metadata entry `name`, if any.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(Space::Meta, name.as_bytes())
    }

    /// Sets the metadata entry `name`.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.put(Space::Meta, name.as_bytes(), value)
    }

    /// Removes the metadata entry `name`.
    fn delete_meta(&self, name: &str) -> Result<(), StorageError> {
        self.delete(Space::Meta, name.as_bytes())
    }
}

/// A shared engine is an engine: `Arc<dyn Storage>` and `Arc<RocksStorage>` can be passed
/// wherever a `Storage` is expected. Every method forwards, so engine overrides (such as
/// a range delete) are kept.
impl<S: Storage + ?Sized> Storage for Arc<S> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(space, key)
    }
    fn get_cached(
        &self,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        (**self).get_cached(space, key)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        (**self).write(batch)
    }
    fn try_write(&self, batch: WriteBatch) -> Result<bool, StorageError> {
        (**self).try_write(batch)
    }
    fn write_out_wal(&self) -> Result<(), StorageError> {
        (**self).write_out_wal()
    }
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        (**self).scan(space, start, end, limit)
    }
    fn stats(&self) -> StorageStats {
        (**self).stats()
    }
    fn flush(&self) -> Result<(), StorageError> {
        (**self).flush()
    }
    fn sync_wal(&self) -> Result<(), StorageError> {
        (**self).sync_wal()
    }
    fn close(&self) -> Result<(), StorageError> {
        (**self).close()
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        (**self).put(space, key, value)
    }
    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StorageError> {
        (**self).delete(space, key)
    }
    fn get_object(&self, p: PartitionId, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get_object(p, key)
    }
    fn get_object_cached(
        &self,
        p: PartitionId,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        (**self).get_object_cached(p, key)
    }
    fn put_object(&self, p: PartitionId, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        (**self).put_object(p, key, value)
    }
    fn try_put_object(
        &self,
        p: PartitionId,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, StorageError> {
        (**self).try_put_object(p, key, value)
    }
    fn delete_object(&self, p: PartitionId, key: &[u8]) -> Result<(), StorageError> {
        (**self).delete_object(p, key)
    }
    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        (**self).scan_partition(p, after, limit)
    }
    fn delete_partition(&self, p: PartitionId) -> Result<(), StorageError> {
        (**self).delete_partition(p)
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get_meta(name)
    }
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        (**self).put_meta(name, value)
    }
    fn delete_meta(&self, name: &str) -> Result<(), StorageError> {
        (**self).delete_meta(name)
    }
}
