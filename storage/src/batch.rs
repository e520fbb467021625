//! Spaces, durability modes and atomic write batches: the vocabulary shared by every engine.

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::keys::PARTITION_PREFIX_BYTES;

/// The largest key (as stored in its space, partition prefix included) a write accepts.
///
/// Keys are bounded so that one request cannot make the engine hold an arbitrarily large
/// key in its index blocks; the node enforces its own, smaller, client-facing limit.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// The largest value a write accepts. An encoded object with all its siblings must fit.
pub const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// The largest [`WriteBatch`] (by [`WriteBatch::size_bytes`]) a write accepts, so one
/// batch cannot balloon the memtable or the WAL record.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// A keyspace of the store; each is a RocksDB column family and an independent sorted map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// Encoded objects, keyed by [`crate::object_key`] (big-endian partition id prefix).
    Objects,
    /// Hinted-handoff records kept for unreachable replicas (layout owned by the hint store).
    Hints,
    /// Small node metadata (node id, ring, membership), keyed by name.
    Meta,
}

impl Space {
    /// Every space, in a fixed order.
    pub const ALL: [Space; 3] = [Space::Objects, Space::Hints, Space::Meta];

    /// The space's name: its RocksDB column family and its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Space::Objects => "objects",
            Space::Hints => "hints",
            Space::Meta => "meta",
        }
    }

    /// Position in [`Space::ALL`], for per-space arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Space::Objects => 0,
            Space::Hints => 1,
            Space::Meta => 2,
        }
    }
}

/// How durable a write is when the engine acknowledges it.
///
/// `Buffered` is the default: the write-ahead log reaches the OS page cache before the
/// write returns, so a killed or crashed process loses nothing. A power cut (or a kernel
/// crash) loses the end of the log not yet written out, on that node: the cluster keeps
/// every acknowledged write as long as fewer than W of a write's replicas lose power
/// before it reached their disks (the executor gives a restarted node a new actor, so it
/// never covers what it lost). `Sync` also fsyncs the WAL before returning, for
/// operators who need each node to survive power loss alone and accept the latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync the WAL before the write returns: survives power loss.
    Sync,
    /// Write the WAL to the OS page cache before returning: survives a killed process;
    /// a power cut loses the node's unsynced tail (kept by the other replicas).
    #[default]
    Buffered,
}

impl Durability {
    /// The configuration spelling: `"sync"` or `"buffered"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
        }
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value` in `space`.
    Put {
        /// The target space.
        space: Space,
        /// The key, as stored in the space.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` from `space` (no error if absent).
    Delete {
        /// The target space.
        space: Space,
        /// The key, as stored in the space.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// Bytes of key and value this operation carries.
    pub fn size_bytes(&self) -> usize {
        match self {
            BatchOp::Put { key, value, .. } => key.len() + value.len(),
            BatchOp::Delete { key, .. } => key.len(),
        }
    }

    /// The space this operation targets.
    pub fn space(&self) -> Space {
        match self {
            BatchOp::Put { space, .. } | BatchOp::Delete { space, .. } => *space,
        }
    }
}

/// Operations applied atomically and in order by [`crate::Storage::write`]: all land or
/// none, and when several touch one key the last one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    size_bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `ops` operations.
    pub fn with_capacity(ops: usize) -> Self {
        Self {
            ops: Vec::with_capacity(ops),
            size_bytes: 0,
        }
    }

    /// Whether every operation is in [`Space::Meta`] (the node's own bookkeeping, which
    /// the free-space reserve does not refuse; see `RocksOptions::min_free_bytes`). An
    /// empty batch is not.
    pub fn only_meta(&self) -> bool {
        !self.ops.is_empty() && self.ops.iter().all(|op| op.space() == Space::Meta)
    }

    /// Adds a put of `key` = `value` in `space`.
    pub fn put(
        &mut self,
        space: Space,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.push(BatchOp::Put {
            space,
            key: key.into(),
            value: value.into(),
        })
    }

    /// Adds a delete of `key` in `space`.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) -> &mut Self {
        self.push(BatchOp::Delete {
            space,
            key: key.into(),
        })
    }

    /// Adds one operation.
    pub fn push(&mut self, op: BatchOp) -> &mut Self {
        self.size_bytes += op.size_bytes();
        self.ops.push(op);
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Total bytes of keys and values carried (what the engine will write, before its own
    /// framing).
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Takes the operations out, in order.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// Checks the batch against [`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`] and
    /// [`MAX_BATCH_BYTES`]; engines call this before applying anything.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.size_bytes > MAX_BATCH_BYTES {
            return Err(StorageError::BatchTooLarge {
                bytes: self.size_bytes,
                max: MAX_BATCH_BYTES,
            });
        }
        for op in &self.ops {
            match op {
                BatchOp::Put { space, key, value } => {
                    check_key(key)?;
                    check_object_key(*space, key)?;
                    if value.len() > MAX_VALUE_BYTES {
                        return Err(StorageError::ValueTooLarge {
                            len: value.len(),
                            max: MAX_VALUE_BYTES,
                        });
                    }
                }
                BatchOp::Delete { space, key } => {
                    check_key(key)?;
                    check_object_key(*space, key)?;
                }
            }
        }
        Ok(())
    }
}

impl FromIterator<BatchOp> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = BatchOp>>(iter: I) -> Self {
        let mut batch = WriteBatch::new();
        for op in iter {
            batch.push(op);
        }
        batch
    }
}

impl Extend<BatchOp> for WriteBatch {
    fn extend<I: IntoIterator<Item = BatchOp>>(&mut self, iter: I) {
        for op in iter {
            self.push(op);
        }
    }
}

impl IntoIterator for WriteBatch {
    type Item = BatchOp;
    type IntoIter = std::vec::IntoIter<BatchOp>;

    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

/// Rejects keys longer than [`MAX_KEY_BYTES`].
pub(crate) fn check_key(key: &[u8]) -> Result<(), StorageError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// Rejects keys of the objects space that are too short to carry a partition prefix:
/// such a key would sort inside some partition's range without belonging to it.
fn check_object_key(space: Space, key: &[u8]) -> Result<(), StorageError> {
    if space == Space::Objects && key.len() < PARTITION_PREFIX_BYTES {
        return Err(StorageError::NotAnObjectKey {
            len: key.len(),
            prefix: PARTITION_PREFIX_BYTES,
        });
    }
    Ok(())
}

/// Engine statistics, exported as gauges by the node.
///
/// Estimates, not exact counts: RocksDB derives them from file metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes of live data (RocksDB: `estimate-live-data-size` summed over column
    /// families; the in-memory engine: bytes of keys and values held).
    pub live_data_bytes: u64,
    /// Bytes compaction still has to rewrite (`estimate-pending-compaction-bytes`); 0 in
    /// memory.
    pub pending_compaction_bytes: u64,
    /// Bytes held by the shared block cache (`block-cache-usage`); 0 in memory.
    pub block_cache_usage_bytes: u64,
    /// Bytes held by memtables not yet flushed (`cur-size-all-mem-tables`); 0 in memory.
    pub memtable_bytes: u64,
    /// Estimated number of keys over all spaces (`estimate-num-keys`; exact in memory).
    pub estimated_keys: u64,
    /// Bytes held by the RocksDB engine's cache of recently written and read objects; 0 in memory.
    pub object_cache_bytes: u64,
    /// Object reads that cache answered, since the store opened.
    pub object_cache_hits: u64,
    /// Object reads that cache could not answer (read from RocksDB), since the store
    /// opened.
    pub object_cache_misses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counts_ops_and_bytes() {
        let mut batch = WriteBatch::new();
        batch.put(Space::Objects, b"ab".to_vec(), b"cde".to_vec());
        batch.delete(Space::Hints, &b"xyz"[..]);
        assert_eq!(batch.len(), 2);
        assert!(!batch.is_empty());
        assert_eq!(batch.size_bytes(), 8);
        assert!(WriteBatch::new().is_empty());
    }

    #[test]
    fn validate_rejects_oversized_keys_and_values() {
        let mut batch = WriteBatch::new();
        batch.put(Space::Meta, vec![0; MAX_KEY_BYTES + 1], b"v".to_vec());
        assert!(matches!(
            batch.validate(),
            Err(StorageError::KeyTooLarge { len, max }) if len == MAX_KEY_BYTES + 1 && max == MAX_KEY_BYTES
        ));
        let mut batch = WriteBatch::new();
        batch.delete(Space::Meta, vec![0; MAX_KEY_BYTES + 1]);
        assert!(matches!(
            batch.validate(),
            Err(StorageError::KeyTooLarge { .. })
        ));
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            vec![0; MAX_KEY_BYTES],
            vec![0; MAX_VALUE_BYTES + 1],
        );
        assert!(matches!(
            batch.validate(),
            Err(StorageError::ValueTooLarge { .. })
        ));
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            vec![0; MAX_KEY_BYTES],
            vec![0; MAX_VALUE_BYTES],
        );
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn validate_rejects_short_keys_in_the_objects_space_only() {
        for key in [&b""[..], b"abc"] {
            let mut batch = WriteBatch::new();
            batch.put(Space::Objects, key, &b"v"[..]);
            assert!(matches!(
                batch.validate(),
                Err(StorageError::NotAnObjectKey { len, prefix: 4 }) if len == key.len()
            ));
            let mut batch = WriteBatch::new();
            batch.delete(Space::Objects, key);
            assert!(matches!(
                batch.validate(),
                Err(StorageError::NotAnObjectKey { .. })
            ));
            let mut batch = WriteBatch::new();
            batch
                .put(Space::Hints, key, &b"v"[..])
                .put(Space::Meta, key, &b"v"[..]);
            assert!(batch.validate().is_ok());
        }
        let mut batch = WriteBatch::new();
        batch.put(Space::Objects, &b"abcd"[..], &b"v"[..]);
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn durability_is_lowercase_in_config_and_defaults_to_buffered() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        assert_eq!(Durability::default(), Durability::Buffered);
        let parse = |text: &str| {
            let de: StrDeserializer<'_, Error> = text.into_deserializer();
            Durability::deserialize(de)
        };
        assert_eq!(parse("sync").unwrap(), Durability::Sync);
        assert_eq!(parse("buffered").unwrap(), Durability::Buffered);
        assert!(parse("Sync").is_err());
        assert_eq!(Durability::Sync.as_str(), "sync");
        assert_eq!(Durability::Buffered.as_str(), "buffered");
    }

    #[test]
    fn space_names_match_column_families() {
        let names: Vec<_> = Space::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["objects", "hints", "meta"]);
        for (i, space) in Space::ALL.iter().enumerate() {
            assert_eq!(space.index(), i);
        }
    }
}
