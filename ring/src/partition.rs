//! Key hashing and partition numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The default partition count Q of a new cluster.
pub const DEFAULT_PARTITIONS: u32 = 256;
/// The smallest allowed partition count.
pub const MIN_PARTITIONS: u32 = 8;
/// The largest allowed partition count.
pub const MAX_PARTITIONS: u32 = 65_536;

/// A partition number, `0..Q`.
///
/// Partition `p` covers the hashes whose top `log2(Q)` bits equal `p`, so partitions are in
/// hash order and partition `p + 1 (mod Q)` is the next one clockwise.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl PartitionId {
    /// The partition number as an index into per-partition tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The key hash every Shoal node and client must agree on: XXH3-64 with seed 0.
///
/// It is fixed and documented (never std's `DefaultHasher`, whose output may change between
/// Rust releases and is randomly seeded), fast, and well distributed in its top bits, which
/// pick the partition.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_xxh3_64_with_seed_zero() {
        // Reference values of XXH3-64, seed 0 (from the xxHash test vectors).
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(
            key_hash(b"a"),
            xxhash_rust::xxh3::xxh3_64_with_seed(b"a", 0)
        );
    }

    #[test]
    fn partition_id_displays_as_its_number() {
        assert_eq!(PartitionId(42).to_string(), "42");
        assert_eq!(PartitionId(42).index(), 42);
    }
}
