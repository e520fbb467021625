//! Tuning of the RocksDB engine.

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Env, Options};
use serde::{Deserialize, Serialize};

use crate::batch::{Durability, Space};
use crate::error::StorageError;

/// How SST files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression anywhere.
    None,
    /// LZ4 on every level below L1; L0 and L1 stay uncompressed because they are
    /// rewritten soon and small, so compressing them costs CPU for little space.
    #[default]
    Lz4,
}

/// The CPU priority of RocksDB's background threads (flushes and compactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackgroundPriority {
    /// Lowest (nice 19, RocksDB's `CpuPriority::kLow`): flushes and compactions run on
    /// the CPU the node's requests leave, so that a flush does not delay the requests
    /// in flight. Under sustained saturation they slow down; RocksDB's own write
    /// slowdown (too many level-0 files) then holds writes back until they catch up.
    #[default]
    Low,
    /// The same as the node's request threads.
    Normal,
}

/// Settings of [`crate::RocksStorage`]. `Default` suits a node with a few GiB of RAM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RocksOptions {
    /// When a write is acknowledged (see [`Durability`]); default `buffered`.
    pub durability: Durability,
    /// Capacity of the LRU block cache shared by all column families (data, index and
    /// filter blocks). Default 192 MiB (with the object cache's 128 MiB: the 320 MiB that
    /// were 256 and 64 before, see [`RocksOptions::object_cache_bytes`]).
    pub block_cache_bytes: usize,
    /// Size of one memtable per column family before it is flushed to an SST. Default
    /// 128 MiB: against 64 MiB, half the flushes and less compaction per write under
    /// write-heavy load (workload A at 64: +9% at the median, p99 13 -> 9 ms;
    /// BENCHMARKS.md). Memtables take memory only as they fill.
    pub write_buffer_bytes: usize,
    /// SST compression. Default LZ4 below L1.
    pub compression: Compression,
    /// Bits per key of the objects column family's bloom filter (0 disables it); point
    /// reads of absent keys skip SSTs with it. Default 10 (about 1% false positives).
    pub bloom_bits_per_key: f64,
    /// Background flush and compaction threads. Default 4.
    pub max_background_jobs: u32,
    /// SST files kept open at once; bounds file descriptors. Default 1024.
    pub max_open_files: u32,
    /// Free space the data directory's filesystem keeps: writes are refused with
    /// [`StorageError::DiskFull`] while less is free, so that flushes and compactions
    /// still find room and RocksDB does not run out of space half-way. 0 disables the
    /// reserve (writes then run until the filesystem is full). Default 256 MiB.
    pub min_free_bytes: u64,
    /// Size of the spare file the store keeps in its directory (`SPARE_SPACE`), deleted
    /// to make room when the store is opened on a filesystem with too little free space
    /// for the open (filled by something else while the node was down), and made again
    /// once free space holds it beside the reserve; while it is given back its size
    /// counts in the reserve (see `disk.rs`). An operator may delete it by hand for room
    /// at once. 0: none. Default 128 MiB (a write-ahead log's replay at the open writes
    /// up to a memtable's worth).
    pub spare_space_bytes: u64,
    /// Capacity of the cache of the objects the store wrote or read last, which answers
    /// their reads without RocksDB's memtable search (see `object_cache.rs`); 0 disables it.
    /// Default 128 MiB, taken from the block cache: against 64 MiB and a 256 MiB block
    /// cache, workload A at 64 (100,000 objects of 1 KiB, about 80% of them fitting) was
    /// faster in 3 of 3 pairs, 7% at the median with 6% less CPU per operation, as a hit
    /// skips the memtable search and the table's index and block (BENCHMARKS.md).
    pub object_cache_bytes: usize,
    /// `try_write` leaves its WAL record in RocksDB's buffer in the process (RocksDB's
    /// `manual_wal_flush`) until `write_out_wal`, so that a caller making many such
    /// writes hands them to the OS with one system call; `write` still writes its record
    /// out before it returns. Only with `buffered` durability (ignored with `sync`).
    /// For a caller that calls `write_out_wal` (the node's driver with `buffered`) or
    /// `sync_wal` (its group-commit committer) before it acknowledges a `try_write`.
    /// Default off.
    pub buffer_try_writes: bool,
    /// CPU priority of the flush and compaction threads. Default `low`: on a busy
    /// machine a memtable flush (about 50 ms of CPU per 128 MiB memtable, on every
    /// replica at about the same time) otherwise takes the CPU from requests in flight,
    /// which showed as a p99 spike at each flush (BENCHMARKS.md). RocksDB's thread pools
    /// are shared by every database of the process, and a priority once lowered stays
    /// lowered for the life of the process.
    pub background_priority: BackgroundPriority,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Buffered,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
            compression: Compression::Lz4,
            bloom_bits_per_key: 10.0,
            max_background_jobs: 4,
            max_open_files: 1024,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            spare_space_bytes: DEFAULT_SPARE_SPACE_BYTES,
            object_cache_bytes: DEFAULT_OBJECT_CACHE_BYTES,
            buffer_try_writes: false,
            background_priority: BackgroundPriority::Low,
        }
    }
}

/// Default block cache: 192 MiB.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 192 * 1024 * 1024;
/// Default memtable size: 128 MiB (see [`RocksOptions::write_buffer_bytes`]).
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 128 * 1024 * 1024;

/// Default object cache: 128 MiB.
pub const DEFAULT_OBJECT_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Default free-space reserve: room for a few memtable flushes and a compaction.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// Default spare file: 128 MiB (see [`RocksOptions::spare_space_bytes`]).
pub const DEFAULT_SPARE_SPACE_BYTES: u64 = 128 * 1024 * 1024;

/// Smallest accepted memtable: RocksDB itself rejects tiny write buffers.
const MIN_WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Largest accepted memtable; beyond it flushes stall for too long.
const MAX_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024 * 1024;
/// Fewest open files that leave room for the WAL, manifest and a few SSTs.
const MIN_OPEN_FILES: u32 = 16;
/// Most bloom bits per key worth paying for.
const MAX_BLOOM_BITS_PER_KEY: f64 = 32.0;
/// Most background jobs: more only contend for cores and disk.
const MAX_BACKGROUND_JOBS: u32 = 64;
/// Informational LOG files kept, and the size at which one rolls over: bounds the disk
/// the engine's own logging can take.
const KEEP_LOG_FILES: usize = 5;
const MAX_LOG_FILE_BYTES: usize = 16 * 1024 * 1024;

impl RocksOptions {
    /// Checks each setting's range; [`crate::RocksStorage::open`] calls it first.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid = |message: String| Err(StorageError::InvalidOptions(message));
        if !(MIN_WRITE_BUFFER_BYTES..=MAX_WRITE_BUFFER_BYTES).contains(&self.write_buffer_bytes) {
            return invalid(format!(
                "write_buffer_bytes {} is outside [{MIN_WRITE_BUFFER_BYTES}, {MAX_WRITE_BUFFER_BYTES}]",
                self.write_buffer_bytes
            ));
        }
        if !(self.bloom_bits_per_key.is_finite()
            && (0.0..=MAX_BLOOM_BITS_PER_KEY).contains(&self.bloom_bits_per_key))
        {
            return invalid(format!(
                "bloom_bits_per_key {} is outside [0, {MAX_BLOOM_BITS_PER_KEY}]",
                self.bloom_bits_per_key
            ));
        }
        if !(1..=MAX_BACKGROUND_JOBS).contains(&self.max_background_jobs) {
            return invalid(format!(
                "max_background_jobs {} is outside [1, {MAX_BACKGROUND_JOBS}]",
                self.max_background_jobs
            ));
        }
        if self.max_open_files < MIN_OPEN_FILES {
            return invalid(format!(
                "max_open_files {} is below {MIN_OPEN_FILES}",
                self.max_open_files
            ));
        }
        Ok(())
    }

    /// Database-wide options (not per column family).
    pub(crate) fn db_options(&self, create: bool) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(create);
        opts.create_missing_column_families(create);
        // validate() bounds both to well under i32::MAX.
        opts.set_max_background_jobs(clamp_i32(self.max_background_jobs));
        opts.set_max_open_files(clamp_i32(self.max_open_files));
        opts.set_keep_log_file_num(KEEP_LOG_FILES);
        opts.set_max_log_file_size(MAX_LOG_FILE_BYTES);
        // Smooth writeback instead of large bursts of dirty pages.
        opts.set_bytes_per_sync(1024 * 1024);
        opts.set_manual_wal_flush(self.buffers_wal());
        if self.background_priority == BackgroundPriority::Low {
            // The process's default environment (the one RocksDB uses anyway): its LOW
            // pool runs compactions, its HIGH pool flushes. Each thread lowers its own
            // priority before its next job.
            if let Ok(mut env) = Env::new() {
                env.lower_thread_pool_cpu_priority();
                env.lower_high_priority_thread_pool_cpu_priority();
                opts.set_env(&env);
            }
        }
        opts
    }

    /// Whether RocksDB keeps WAL records in the process until they are written out
    /// ([`RocksOptions::buffer_try_writes`]).
    pub(crate) fn buffers_wal(&self) -> bool {
        self.buffer_try_writes && self.durability == Durability::Buffered
    }

    /// Options of one space's column family, sharing `cache`.
    pub(crate) fn column_family_options(&self, space: Option<Space>, cache: &Cache) -> Options {
        let mut opts = Options::default();
        opts.set_write_buffer_size(self.write_buffer_bytes);
        opts.set_level_compaction_dynamic_level_bytes(true);
        match self.compression {
            Compression::None => opts.set_compression_type(DBCompressionType::None),
            Compression::Lz4 => {
                let mut levels = [DBCompressionType::Lz4; 7];
                levels[0] = DBCompressionType::None;
                levels[1] = DBCompressionType::None;
                opts.set_compression_per_level(&levels);
            }
        }
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        // Index and filter blocks count against the cache, so memory stays bounded by it.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        if space == Some(Space::Objects) && self.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(self.bloom_bits_per_key, false);
            table.set_whole_key_filtering(true);
        }
        opts.set_block_based_table_factory(&table);
        if space == Some(Space::Objects) && self.bloom_bits_per_key > 0.0 {
            // A bloom filter over the memtables' keys: a get of a key that is only in the
            // table files skips the memtables' skip-list searches (under a read workload
            // those were about 9% of a node's CPU), for MEMTABLE_BLOOM_RATIO of the
            // write buffer in memory and a hash per insert.
            opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
            opts.set_memtable_whole_key_filtering(true);
        }
        let opts = with_flushes_in_block_cache(opts);
        if space == Some(Space::Objects) {
            with_insert_hints_per_partition(opts)
        } else {
            opts
        }
    }
}

/// RocksDB's `prepopulate_block_cache = kFlushOnly`, which the Rust binding has no setter
/// for, in the form its options parser takes. It keeps the rest of the table options set
/// above (the parser starts from a copy of the current block-based table options, block
/// cache included).
const PREPOPULATE_ON_FLUSH: &str = "block_based_table_factory={prepopulate_block_cache=kFlushOnly}";

/// `opts` with the blocks a flush writes also put into the block cache, so that a key
/// read soon after its memtable was flushed is still answered from memory, on the
/// driver's thread, instead of by a storage thread reading the table file (under
/// workload A at concurrency 64, 14% of reads and 10% of writes had gone to the storage
/// threads for blocks flushed during the run; BENCHMARKS.md). Falls back to `opts` as
/// they are, with a warning, should the parser refuse the option.
fn with_flushes_in_block_cache(opts: Options) -> Options {
    with_parsed_option(opts, PREPOPULATE_ON_FLUSH)
}

/// RocksDB's `memtable_insert_with_hint_prefix_extractor` on the partition prefix of the
/// objects' keys, which the Rust binding has no setter for.
const INSERT_HINTS_PER_PARTITION: &str = "memtable_insert_with_hint_prefix_extractor=fixed:4";
const _: () = assert!(crate::keys::PARTITION_PREFIX_BYTES == 4);

/// `opts` with memtable inserts starting from where the last insert into the same
/// partition ended (one remembered skip-list position per partition), instead of from
/// the top of the memtable's skip list: the search touches the few nodes around that
/// position rather than a path from the top through a 128 MiB memtable. Under a zipfian
/// workload, where a hot key's partition takes insert after insert, write-only at 64 did
/// 12-14% more writes and workload A at 64 7% more operations (BENCHMARKS.md). Only for
/// inserts by one writer at a time, as the node's are (RocksDB's concurrent memtable
/// writes skip it). Falls back to `opts` as they are, with a warning, should the parser
/// refuse the option.
fn with_insert_hints_per_partition(opts: Options) -> Options {
    with_parsed_option(opts, INSERT_HINTS_PER_PARTITION)
}

/// `opts` with `option` (in the form RocksDB's options parser takes) applied on top, or
/// as they are, with a warning, should the parser refuse it.
fn with_parsed_option(mut opts: Options, option: &str) -> Options {
    match opts.get_options_from_string(option) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!("RocksDB refused {option:?}: {e}");
            opts
        }
    }
}

/// The memtable bloom filter's size as a fraction of the write buffer (RocksDB's
/// `memtable_prefix_bloom_size_ratio`; its documentation suggests 0.02 to 0.1).
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

fn clamp_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let opts = RocksOptions::default();
        assert!(opts.validate().is_ok());
        assert_eq!(opts.durability, Durability::Buffered);
        assert_eq!(opts.block_cache_bytes, 192 << 20);
        assert_eq!(opts.object_cache_bytes, 128 << 20);
        assert_eq!(opts.write_buffer_bytes, 128 << 20);
        assert_eq!(opts.compression, Compression::Lz4);
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        let bad = [
            RocksOptions {
                write_buffer_bytes: 1024,
                ..RocksOptions::default()
            },
            RocksOptions {
                bloom_bits_per_key: f64::NAN,
                ..RocksOptions::default()
            },
            RocksOptions {
                bloom_bits_per_key: -1.0,
                ..RocksOptions::default()
            },
            RocksOptions {
                max_background_jobs: 0,
                ..RocksOptions::default()
            },
            RocksOptions {
                max_open_files: 2,
                ..RocksOptions::default()
            },
        ];
        for opts in bad {
            assert!(
                matches!(opts.validate(), Err(StorageError::InvalidOptions(_))),
                "{opts:?} accepted"
            );
        }
    }
}
