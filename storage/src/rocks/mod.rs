//! The RocksDB engine.

mod open;
mod options;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use crate::PartitionId;
use rocksdb::{properties, Cache, ColumnFamily, FlushOptions, ReadOptions, WriteOptions, DB};

pub use self::options::{Compression, RocksOptions};
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
pub struct RocksStorage {
    /// `None` once closed. Operations hold the read lock while they use the database, so
    /// `close` (write lock) waits for them.
    db: RwLock<Option<DB>>,
    cache: Cache,
    write_options: WriteOptions,
    durability: Durability,
    path: PathBuf,
}

impl fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.path)
            .field("durability", &self.durability)
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
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let db = open::open_db(path, &db_opts, &families, |space| {
            options.column_family_options(space, &cache)
        })?;
        open::check_format(path, &db, state)?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.durability == Durability::Sync);
        tracing::info!(
            path = %path.display(),
            durability = options.durability.as_str(),
            created = state == open::DirState::Fresh,
            "opened storage"
        );
        Ok(RocksStorage {
            db: RwLock::new(Some(db)),
            cache,
            write_options,
            durability: options.durability,
            path: path.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability every write gets.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Runs `call` with the open database, or fails with [`StorageError::Closed`].
    fn with_db<T>(
        &self,
        call: impl FnOnce(&DB) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        // The lock guards no invariant that a panic could break (just the Option).
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = guard.as_ref().ok_or(StorageError::Closed)?;
        call(db)
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
            self.with_db(|db| Ok(db.get_cf(family(db, space)?, key)?))
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        count_batch(&batch);
        timed("write", || {
            batch.validate()?;
            self.with_db(|db| {
                let mut rocks_batch = rocksdb::WriteBatch::default();
                for op in batch {
                    match op {
                        BatchOp::Put { space, key, value } => {
                            rocks_batch.put_cf(family(db, space)?, key, value);
                        }
                        BatchOp::Delete { space, key } => {
                            rocks_batch.delete_cf(family(db, space)?, key);
                        }
                    }
                }
                Ok(db.write_opt(rocks_batch, &self.write_options)?)
            })
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
        let result = self.with_db(|db| {
            let mut stats = StorageStats {
                block_cache_usage_bytes: self.cache.get_usage() as u64,
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
        timed("flush", || self.with_db(flush_db))
    }

    fn close(&self) -> Result<(), StorageError> {
        timed("close", || {
            let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
            let Some(db) = guard.take() else {
                return Ok(());
            };
            let flushed = flush_db(&db);
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
            self.with_db(|db| {
                let mut batch = rocksdb::WriteBatch::default();
                batch.delete_range_cf(family(db, Space::Objects)?, start, end);
                Ok(db.write_opt(batch, &self.write_options)?)
            })
        })
    }
}
