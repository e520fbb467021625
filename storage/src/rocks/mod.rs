//! The RocksDB engine.

mod disk;
mod object_cache;
mod open;
mod options;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use crate::PartitionId;
use rocksdb::{properties, Cache, ColumnFamily, FlushOptions, ReadOptions, WriteOptions, DB};

use self::disk::DiskGuard;
pub use self::disk::{DiskStatus, SPARE_SPACE_FILE};
use self::object_cache::{Lookup, ObjectCache, WriteGuard};
pub use self::options::{
    BackgroundPriority, Compression, RocksOptions, DEFAULT_BLOCK_CACHE_BYTES,
    DEFAULT_MIN_FREE_BYTES, DEFAULT_OBJECT_CACHE_BYTES, DEFAULT_SPARE_SPACE_BYTES,
    DEFAULT_WRITE_BUFFER_BYTES,
};
use crate::batch::{
    check_key, BatchOp, Durability, Space, StorageStats, WriteBatch, MAX_KEY_BYTES,
};
use crate::error::StorageError;
use crate::keys::partition_bounds;
use crate::metrics::{count_batch, count_op, timed};
use crate::storage::{Rows, Storage};

/// The production engine: RocksDB with one column family per [`Space`].
///
/// A shared LRU block cache serves all column families; the objects column family has a
/// bloom filter; SSTs are LZ4-compressed below L1. Writes honour the configured
/// [`Durability`]. [`Storage::close`] releases the database (and its directory lock)
/// even while other threads still hold the handle.
///
/// A full disk refuses writes with [`StorageError::DiskFull`] and keeps reads working;
/// the engine resumes writing by itself once space is freed (see [`RocksStorage::check_disk`]).
pub struct RocksStorage {
    /// Operations hold the read lock while they use the database, so `close` and a
    /// reopen after a full disk (write lock) wait for them.
    db: RwLock<Handle>,
    cache: Cache,
    write_options: WriteOptions,
    /// Reads that may use only the memtables and the block cache (`get_cached`): one
    /// that would need a table file fails `Incomplete` instead of reading it.
    memory_reads: ReadOptions,
    /// As `write_options`, but a write that would stall fails at once: used while the
    /// disk is nearly full, where a stall waits for a flush that cannot succeed.
    no_stall_write_options: WriteOptions,
    options: RocksOptions,
    path: PathBuf,
    disk: DiskGuard,
    /// The objects this store wrote or read last (`object_cache.rs`).
    objects: ObjectCache,
}

/// The database behind a [`RocksStorage`].
enum Handle {
    Open(DB),
    /// Reopening after a full disk failed (the old handle was already released): every
    /// operation, reads included, answers `DiskFull` until a later attempt succeeds.
    Lost,
    /// [`Storage::close`] ran.
    Closed,
}

impl fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.path)
            .field("durability", &self.options.durability)
            .finish_non_exhaustive()
    }
}

impl RocksStorage {
    /// Opens the store in directory `path`, creating it (and the directory) when missing
    /// or empty.
    ///
    /// Fails with [`StorageError::NotAStore`] when the directory holds something else
    /// (other files, or a RocksDB database without Shoal's column families and marker) —
    /// without modifying it — and with [`StorageError::FormatVersion`] when the store was
    /// written by a build with another [`crate::FORMAT_VERSION`].
    pub fn open(path: &Path, options: RocksOptions) -> Result<RocksStorage, StorageError> {
        options.validate()?;
        let state = open::inspect_dir(path)?;
        let db_opts = options.db_options(state == open::DirState::Fresh);
        let families = match state {
            open::DirState::Fresh => {
                std::fs::create_dir_all(path).map_err(|source| StorageError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Vec::new()
            }
            open::DirState::Existing => open::check_column_families(path, &db_opts)?,
        };
        let disk = DiskGuard::new(
            path,
            options.min_free_bytes,
            stall_margin(&options),
            options.spare_space_bytes,
        );
        if state == open::DirState::Existing {
            // On a full disk, make room for the open (see `disk.rs`).
            disk.spare_before_open();
        }
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let db = open::open_db(path, &db_opts, &families, |space| {
            options.column_family_options(space, &cache)
        })?;
        open::check_format(path, &db, state)?;
        disk.make_spare(disk.refresh());
        disk.publish();
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.durability == Durability::Sync);
        let mut no_stall_write_options = WriteOptions::default();
        no_stall_write_options.set_sync(options.durability == Durability::Sync);
        no_stall_write_options.set_no_slowdown(true);
        let mut memory_reads = ReadOptions::default();
        memory_reads.set_read_tier(rocksdb::ReadTier::BlockCache);
        tracing::info!(
            path = %path.display(),
            durability = options.durability.as_str(),
            created = state == open::DirState::Fresh,
            "opened storage"
        );
        Ok(RocksStorage {
            db: RwLock::new(Handle::Open(db)),
            cache,
            write_options,
            memory_reads,
            no_stall_write_options,
            objects: ObjectCache::new(options.object_cache_bytes),
            options,
            path: path.to_path_buf(),
            disk,
        })
    }

    /// Reopens the existing store in place of the current handle (after RocksDB stopped
    /// on a full disk: a fresh open replays the write-ahead log and clears the error).
    ///
    /// Returns `Ok(false)`, doing nothing, while other operations use the database: a
    /// write stuck in RocksDB must not make the reopen (and every operation queued behind
    /// it) wait; the next attempt comes within [`disk::REOPEN_INTERVAL`].
    fn reopen(&self) -> Result<bool, StorageError> {
        let mut guard = match self.db.try_write() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(false),
        };
        if matches!(*guard, Handle::Closed) {
            return Err(StorageError::Closed);
        }
        // The old handle holds the directory lock: release it first. The object cache
        // stays: the new handle replays the log of every write that succeeded, and a
        // failed write's objects were taken out of the cache. (Taking the cache's locks
        // here could deadlock: a write holds them while it waits for this lock.)
        *guard = Handle::Lost;
        let db_opts = self.options.db_options(false);
        let families = open::check_column_families(&self.path, &db_opts)?;
        let db = open::open_db(&self.path, &db_opts, &families, |space| {
            self.options.column_family_options(space, &self.cache)
        })?;
        open::check_format(&self.path, &db, open::DirState::Existing)?;
        *guard = Handle::Open(db);
        tracing::info!(path = %self.path.display(), "reopened storage");
        Ok(true)
    }

    /// Checks the data directory's free space, publishes it (gauges
    /// `shoal_storage_disk_full`, `shoal_storage_free_bytes`) and, when RocksDB stopped on
    /// a full disk and space is back, reopens the database. The node calls this
    /// periodically so that writes resume even when none arrive; writes also check.
    pub fn check_disk(&self) -> DiskStatus {
        let free = self.disk.refresh();
        if self.disk.is_stopped() {
            self.disk.resume_with(free, || self.reopen());
        }
        let free = self.disk.make_spare(free);
        // Unlike a write, a check that finds too little free space refuses nothing.
        self.disk.check_reserve(free);
        self.disk.publish();
        self.disk.status()
    }

    /// The disk state as last observed (by a write or [`RocksStorage::check_disk`]).
    pub fn disk_status(&self) -> DiskStatus {
        self.disk.status()
    }

    /// Refuses a write when the disk is full (below the reserve, unless the write is of
    /// meta keys only: `only_meta`); reopens the database first when RocksDB had stopped
    /// and space is back. Returns the write options to use: with little free space, ones
    /// that fail a write that would stall instead of waiting.
    fn admit_write(&self, only_meta: bool) -> Result<&WriteOptions, StorageError> {
        let free = self.disk.refresh_for_write();
        let writable = self.disk.resume_with(free, || self.reopen());
        let low = self.disk.check_reserve(free);
        if !writable || (low && !only_meta) {
            return Err(self.disk.refuse());
        }
        Ok(if self.disk.is_tight(free) {
            &self.no_stall_write_options
        } else {
            &self.write_options
        })
    }

    /// Runs a write `call` on the database, refusing it on a full disk and noting when
    /// RocksDB runs out of space during it.
    ///
    /// With little free space a write that would stall is not left waiting inside
    /// RocksDB: if a flush failed (a background error), RocksDB waits for space its own
    /// recovery may never see, so the write is treated as out of space (refused, and the
    /// database reopened once space is back); otherwise the flush is only slow, and the
    /// write is retried every [`STALL_POLL`] for at most [`STALL_WAIT`]. `only_meta`: the
    /// write is of meta keys only (see [`RocksStorage::admit_write`]).
    fn with_db_write<T>(
        &self,
        only_meta: bool,
        call: impl Fn(&DB, &WriteOptions) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let options = self.admit_write(only_meta)?;
        let no_stall = std::ptr::eq(options, &self.no_stall_write_options);
        let deadline = Instant::now() + STALL_WAIT;
        let result = loop {
            match self.with_db(|db| call(db, options)) {
                Err(StorageError::Rocks(message))
                    if no_stall && message.contains("Write stall") =>
                {
                    let failed_flush = self
                        .with_db(|db| Ok(db.property_int_value(properties::BACKGROUND_ERRORS)?))
                        .map_or(true, |errors| errors.unwrap_or(0) > 0);
                    if failed_flush || Instant::now() >= deadline {
                        tracing::warn!(error = %message, failed_flush, "a write stalled with the disk nearly full");
                        break Err(StorageError::DiskFull);
                    }
                    metrics::counter!(crate::metrics::WRITE_STALL_RETRIES_TOTAL).increment(1);
                    std::thread::sleep(STALL_POLL);
                }
                other => break other,
            }
        };
        self.note_no_space(result)
    }

    /// A `DiskFull` from RocksDB means it stopped accepting writes: so note it.
    fn note_no_space<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(StorageError::DiskFull) = result {
            self.disk.stop();
            return Err(self.disk.refuse());
        }
        result
    }

    /// Writes a consistent point-in-time copy of the store into `dir`, which must not
    /// exist (its parent must): a RocksDB checkpoint, which flushes the memtables and
    /// hard-links the table files when `dir` is on the same filesystem (copies them
    /// otherwise), so it costs little space and does not stop writes. The copy opens
    /// with [`RocksStorage::open`] like any data directory.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        self.with_db(|db| {
            rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(dir)?;
            Ok(())
        })
    }

    /// Reads `key` in `space` from the object cache, or else with `read` (RocksDB), and
    /// caches an object `read` found (see `object_cache.rs`). `read` gives `None` when
    /// it could not tell (a read from memory only).
    fn read_through(
        &self,
        space: Space,
        key: &[u8],
        read: impl FnOnce() -> Result<Option<Option<Vec<u8>>>, StorageError>,
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        if space != Space::Objects {
            return read();
        }
        let ticket = match self.objects.lookup(key) {
            Lookup::Hit(value) => return Ok(Some(Some(value))),
            Lookup::Miss(ticket) => ticket,
        };
        let found = read()?;
        if let (Some(ticket), Some(Some(value))) = (ticket, &found) {
            self.objects.fill(key, ticket, value);
        }
        Ok(found)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability every write gets.
    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    /// Runs `call` with the open database, or fails with [`StorageError::Closed`].
    fn with_db<T>(
        &self,
        call: impl FnOnce(&DB) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        // The lock guards no invariant that a panic could break (just the handle).
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match &*guard {
            Handle::Open(db) => call(db),
            Handle::Lost => Err(StorageError::DiskFull),
            Handle::Closed => Err(StorageError::Closed),
        }
    }
}

/// Brings the object cache up to date once a write of `batch` ended (`written`: it
/// succeeded), releasing the shards `cached` holds.
fn settle(cached: Option<WriteGuard<'_>>, written: bool, batch: WriteBatch) {
    match cached {
        Some(cached) if written => cached.applied(batch.into_ops()),
        Some(cached) => cached.forget(batch.ops()),
        None => {}
    }
}

/// The column family of `space`; every one is created or checked by `open`.
fn family(db: &DB, space: Space) -> Result<&ColumnFamily, StorageError> {
    db.cf_handle(space.name())
        .ok_or_else(|| StorageError::Corrupt(format!("column family {} is missing", space.name())))
}

/// Syncs the WAL and flushes every memtable.
fn flush_db(db: &DB) -> Result<(), StorageError> {
    db.flush_wal(true)?;
    let mut families = Vec::with_capacity(Space::ALL.len());
    for space in Space::ALL {
        families.push(family(db, space)?);
    }
    let mut opts = FlushOptions::default();
    opts.set_wait(true);
    db.flush_cfs_opt(&families, &opts)?;
    Ok(())
}

impl Storage for RocksStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        count_op("get", space);
        timed("get", || {
            check_key(key)?;
            self.with_db(|db| {
                let found = self
                    .read_through(space, key, || Ok(Some(db.get_cf(family(db, space)?, key)?)))?;
                Ok(found.flatten())
            })
        })
    }

    fn get_cached(
        &self,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>, StorageError> {
        count_op("get_cached", space);
        timed("get_cached", || {
            check_key(key)?;
            self.with_db(|db| {
                self.read_through(space, key, || {
                    match db.get_cf_opt(family(db, space)?, key, &self.memory_reads) {
                        Ok(value) => Ok(Some(value)),
                        Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
                        Err(e) => Err(e.into()),
                    }
                })
            })
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        count_batch(&batch);
        timed("write", || {
            batch.validate()?;
            let cached = self.objects.lock_for(batch.ops());
            let buffers_wal = self.options.buffers_wal();
            let result = self.with_db_write(batch.only_meta(), |db, options| {
                db.write_opt(rocks_batch(db, &batch)?, options)?;
                // With `buffer_try_writes` the record is still in the process: a write
                // returns as durable as without.
                if buffers_wal {
                    db.flush_wal(false)?;
                }
                Ok(())
            });
            settle(cached, result.is_ok(), batch);
            result
        })
    }

    fn try_write(&self, batch: WriteBatch) -> Result<bool, StorageError> {
        timed("try_write", || {
            batch.validate()?;
            // A nearly full disk needs the stall handling of `with_db_write`: leave the
            // write to a storage thread.
            let options = self.admit_write(batch.only_meta())?;
            if std::ptr::eq(options, &self.no_stall_write_options) {
                return Ok(false);
            }
            // A write elsewhere holds one of its objects' cache shards: leave this one
            // to a thread that may wait.
            let Ok(cached) = self.objects.try_lock_for(batch.ops()) else {
                return Ok(false);
            };
            let result = self.with_db(|db| {
                Ok(db.write_opt(rocks_batch(db, &batch)?, &self.no_stall_write_options)?)
            });
            let result = self.note_no_space(result);
            if result.is_ok() {
                count_batch(&batch);
            }
            settle(cached, result.is_ok(), batch);
            match result {
                Ok(()) => Ok(true),
                // `no_slowdown`: RocksDB gives up instead of stalling or slowing down.
                Err(StorageError::Rocks(message)) if message.contains("Write stall") => Ok(false),
                Err(e) => Err(e),
            }
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
            self.with_db(|db| {
                if limit == 0 || end.is_some_and(|end| end <= start) {
                    return Ok(Vec::new());
                }
                let mut read = ReadOptions::default();
                // Scans are background traffic (anti-entropy, handoff, transfer): they
                // must not evict the point reads' working set from the block cache.
                read.fill_cache(false);
                if let Some(end) = end {
                    read.set_iterate_upper_bound(end);
                }
                let mut iter = db.raw_iterator_cf_opt(family(db, space)?, read);
                iter.seek(start);
                let mut rows = Vec::new();
                while rows.len() < limit {
                    let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                        break;
                    };
                    rows.push((key.to_vec(), value.to_vec()));
                    iter.next();
                }
                iter.status()?;
                Ok(rows)
            })
        })
    }

    fn stats(&self) -> StorageStats {
        // Outside the database lock: writes take the cache's locks before it.
        let (hits, misses, bytes) = self.objects.stats();
        let result = self.with_db(|db| {
            let mut stats = StorageStats {
                block_cache_usage_bytes: self.cache.get_usage() as u64,
                object_cache_bytes: bytes,
                object_cache_hits: hits,
                object_cache_misses: misses,
                ..StorageStats::default()
            };
            for space in Space::ALL {
                let cf = family(db, space)?;
                let int = |name| {
                    db.property_int_value_cf(cf, name)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                stats.live_data_bytes += int(properties::ESTIMATE_LIVE_DATA_SIZE);
                stats.pending_compaction_bytes +=
                    int(properties::ESTIMATE_PENDING_COMPACTION_BYTES);
                stats.memtable_bytes += int(properties::CUR_SIZE_ALL_MEM_TABLES);
                stats.estimated_keys += int(properties::ESTIMATE_NUM_KEYS);
            }
            Ok(stats)
        });
        result.unwrap_or_default()
    }

    fn flush(&self) -> Result<(), StorageError> {
        timed("flush", || self.note_no_space(self.with_db(flush_db)))
    }

    fn write_out_wal(&self) -> Result<(), StorageError> {
        if !self.options.buffers_wal() {
            return Ok(());
        }
        timed("write_out_wal", || {
            self.note_no_space(self.with_db(|db| Ok(db.flush_wal(false)?)))
        })
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        timed("sync_wal", || {
            self.note_no_space(self.with_db(|db| Ok(db.flush_wal(true)?)))
        })
    }

    fn close(&self) -> Result<(), StorageError> {
        timed("close", || {
            let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
            let Handle::Open(db) = std::mem::replace(&mut *guard, Handle::Closed) else {
                return Ok(());
            };
            // A database stopped on a full disk cannot flush; its write-ahead log holds
            // every acknowledged write, which the next open replays.
            let flushed = if self.disk.is_stopped() {
                Ok(())
            } else {
                flush_db(&db)
            };
            drop(db);
            tracing::info!(path = %self.path.display(), "closed storage");
            flushed
        })
    }

    /// One range delete over the partition's key range: constant work whatever its size.
    fn delete_partition(&self, p: PartitionId) -> Result<(), StorageError> {
        count_op("delete_partition", Space::Objects);
        timed("delete_partition", || {
            let (start, end) = partition_bounds(p);
            // The last partition has no next prefix; every stored key is at most
            // MAX_KEY_BYTES long, so a longer all-0xFF key is above all of them.
            let end = end.unwrap_or_else(|| vec![0xFF; MAX_KEY_BYTES + 1]);
            // Every shard stays locked until the range is gone and the cache empty, so
            // that no read finds a deleted object in it.
            self.objects.clear_around(|| {
                self.with_db_write(false, |db, options| {
                    let mut batch = rocksdb::WriteBatch::default();
                    batch.delete_range_cf(family(db, Space::Objects)?, &start, &end);
                    Ok(db.write_opt(batch, options)?)
                })
            })
        })
    }
}

/// Longest a write waits for a slow flush while the disk is nearly full.
const STALL_WAIT: Duration = Duration::from_secs(2);
/// Pause between two tries of a stalled write while the disk is nearly full.
const STALL_POLL: Duration = Duration::from_millis(10);

/// Free space, beyond the reserve, below which a write that would stall fails instead:
/// room to flush every column family's memtables twice over (RocksDB keeps up to two per
/// family before it stops writes).
fn stall_margin(options: &RocksOptions) -> u64 {
    let families = Space::ALL.len() as u64 + 1; // and RocksDB's `default`
    (options.write_buffer_bytes as u64).saturating_mul(2 * families)
}

/// The RocksDB batch holding `batch`'s operations.
fn rocks_batch(db: &DB, batch: &WriteBatch) -> Result<rocksdb::WriteBatch, StorageError> {
    let mut rocks_batch = rocksdb::WriteBatch::default();
    for op in batch.ops() {
        match op {
            BatchOp::Put { space, key, value } => {
                rocks_batch.put_cf(family(db, *space)?, key, value);
            }
            BatchOp::Delete { space, key } => {
                rocks_batch.delete_cf(family(db, *space)?, key);
            }
        }
    }
    Ok(rocks_batch)
}
