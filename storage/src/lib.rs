//! Shoal's local storage: the [`Storage`] trait every engine implements, its
//! [`conformance`] suite, an in-memory engine ([`MemStorage`]) for tests and the
//! simulator, and the production engine on RocksDB (`RocksStorage`, behind the default
//! `rocksdb` feature: builds that need only the in-memory engine skip RocksDB's C++).
//!
//! The storage layer stores opaque bytes. It does not know the object format (causal
//! contexts, siblings, tombstones): `shoal-proto` encodes objects and the node decides
//! what to write; this crate makes it ordered, atomic and durable.
//!
//! # Spaces
//!
//! A store holds three independent sorted keyspaces, [`Space`]s, each a RocksDB column
//! family of the same name:
//!
//! - `objects` — encoded objects, one per user key;
//! - `hints` — hinted-handoff records kept for replicas that were unreachable;
//! - `meta` — small named entries (node identity, ring, membership) via
//!   [`Storage::get_meta`] / [`Storage::put_meta`].
//!
//! # Key layout
//!
//! An object's stored key is its partition id in big-endian followed by the user key
//! ([`object_key`], [`split_object_key`]). Big-endian order equals numeric order, so each
//! partition is one contiguous key range ([`partition_bounds`]); the objects space
//! accepts only such keys (a write of a shorter key fails with
//! [`StorageError::NotAnObjectKey`]), so the ranges hold nothing else. Anti-entropy, hinted
//! handoff and partition transfer stream a partition page by page
//! ([`Storage::scan_partition`]) and drop it in one call ([`Storage::delete_partition`]).
//! Keys are at most [`MAX_KEY_BYTES`] (prefix included), values at most
//! [`MAX_VALUE_BYTES`], batches at most [`MAX_BATCH_BYTES`].
//!
//! # Format version
//!
//! Every store records the version of its on-disk layout, [`FORMAT_VERSION`], when it is
//! created: RocksDB's `default` column family holds `shoal.format_version` = the version
//! as 4 big-endian bytes (outside the `meta` space, which holds only what callers put
//! there). Opening checks it: another version is refused with
//! [`StorageError::FormatVersion`], and a directory that is not a Shoal store (other
//! files, or another program's RocksDB database) is refused with
//! [`StorageError::NotAStore`] without being modified. A future format change bumps the
//! version and ships a migration from the previous one.
//!
//! # Durability
//!
//! Every acknowledged write is in the write-ahead log; [`Durability`] says how far:
//!
//! - `buffered` (the default): the WAL is written to the OS page cache before the write
//!   returns. A killed or crashed process loses nothing (the kernel still writes the page
//!   cache out). A power cut of a machine loses the end of its WAL that was not written
//!   out yet; since each key lives on N replicas, the cluster keeps every acknowledged
//!   write as long as fewer than W replicas of a write lose power before it reached
//!   their disks (a restarted node mints under a new actor: see `shoal-executor`). A
//!   power cut of W or more replicas at once can lose the last writes acknowledged
//!   before it.
//! - `sync`: the WAL is also fsynced before the write returns, which survives any power
//!   loss at the cost of a disk flush per write. Operators who need that set `sync`.
//!
//! # Concurrency
//!
//! Engines are shared behind an `Arc` and every method takes `&self`. A single write is
//! atomic; for read-modify-write of one object (get, merge, put) callers take that key's
//! stripe of [`KeyLocks`] around the three steps.
//!
//! # Metrics
//!
//! Both engines record `shoal_storage_ops_total{op,space}`,
//! `shoal_storage_op_duration_seconds{op}`, `shoal_storage_errors_total{op}` and
//! `shoal_storage_write_batch_bytes` (names in [`crate::metrics`]) through the `metrics` facade;
//! the node exports [`Storage::stats`] as gauges.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod batch;
pub mod conformance;
mod error;
mod keys;
mod locks;
mod mem;
pub mod metrics;
#[cfg(feature = "rocksdb")]
mod rocks;
mod storage;

pub use crate::batch::{
    BatchOp, Durability, Space, StorageStats, WriteBatch, MAX_BATCH_BYTES, MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
};
pub use crate::error::StorageError;
pub use crate::keys::{object_key, partition_bounds, split_object_key, PARTITION_PREFIX_BYTES};
pub use crate::locks::{KeyLockGuard, KeyLocks, DEFAULT_LOCK_STRIPES};
pub use crate::mem::{MemStorage, MAX_UNSYNCED_BATCHES};
#[cfg(feature = "rocksdb")]
pub use crate::rocks::{
    BackgroundPriority, Compression, DiskStatus, RocksOptions, RocksStorage,
    DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_MIN_FREE_BYTES, DEFAULT_OBJECT_CACHE_BYTES,
    DEFAULT_SPARE_SPACE_BYTES, DEFAULT_WRITE_BUFFER_BYTES, SPARE_SPACE_FILE,
};
pub use crate::storage::{Rows, Storage};

/// The partition id that prefixes object keys, re-exported from `shoal-ring`.
pub use shoal_ring::PartitionId;

/// Version of the on-disk layout this build reads and writes (see the crate docs).
pub const FORMAT_VERSION: u32 = 1;
